"""service.toml: parsing, errors that name the file and key, and `synister serve init`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from serve_support import run_cli, site_bundle

from synister.config import ConfigError
from synister.serve.config import EXAMPLE, load_service_config, render_config
from synister.serve.store import open_store


def test_example_parses_and_paths_are_relative_to_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SYNISTER_DB", raising=False)
    path = tmp_path / "conf" / "service.toml"
    path.parent.mkdir()
    path.write_text(EXAMPLE)
    config = load_service_config(path)
    assert config.database_url == f"sqlite:///{tmp_path / 'conf' / 'service.db'}"
    assert config.results_dir == tmp_path / "conf" / "service_results"
    assert config.bundles["demo"].path == tmp_path / "conf" / "bundles" / "demo"
    assert config.volumes["demo"].url == str(tmp_path / "conf" / "volumes" / "demo.zarr")
    assert config.limits.queued_jobs_per_user == 5 and config.service.heartbeat == 15.0


def test_urls_and_postgresql_stay_as_given(tmp_path):
    path = tmp_path / "service.toml"
    path.write_text(
        '[service]\ndatabase = "postgresql://u@db.lab/jobs"\n'
        '[volumes.fafb]\nurl = "precomputed://gs://bucket/fafb"\n'
    )
    config = load_service_config(path)
    assert config.database_url == "postgresql://u@db.lab/jobs"
    assert config.volumes["fafb"].url == "precomputed://gs://bucket/fafb"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("[service]\nport = 'x'\n", "service.port"),
        ("[service]\nworkers = -1\n", "service.workers"),
        ("[limits]\nupload_bytes = 0\n", "limits.upload_bytes"),
        ("[limits]\nfile_types = ['xlsx']\n", "limits.file_types"),
        ("[service]\nprot = 80\n", "service.prot"),
        ("[bundles.'../x']\npath = 'b'\n", "'../x'"),
        ("[volumes.v]\ndataset = 'raw'\n", "volumes.v.url"),
        ("[service\n", "not valid TOML"),
        ("[service]\numask = '0o27'\n", "service.umask"),
        ("[service]\numask = '177'\n", "leaves the owner every permission"),
        ("[service]\numask = 27\n", "service.umask"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, expected):
    path = tmp_path / "service.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_service_config(path)
    assert str(path) in str(error.value) and expected in str(error.value)


def test_the_umask_sets_the_modes_of_what_the_service_writes(tmp_path):
    from synister.serve.server import file_modes

    (tmp_path / "service.toml").write_text('[service]\numask = "027"\n')
    config = load_service_config(tmp_path / "service.toml")
    before = os.umask(0o022)
    try:
        (tmp_path / "service_results").mkdir()  # made before the service started: 0755, 0644
        (tmp_path / "service.db").touch()
        file_modes(config)
        (tmp_path / "service_results" / "jobs").mkdir()
        (tmp_path / "service_results" / "jobs" / "result.csv").touch()
    finally:
        os.umask(before)
    made = [tmp_path / "service.db", tmp_path / "service_results"]
    made += (tmp_path / "service_results").rglob("*")
    modes = {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in made}
    assert modes == {
        "service.db": "0o640", "service_results": "0o750", "jobs": "0o750", "result.csv": "0o640"
    }  # fmt: skip
    (tmp_path / "service.toml").write_text("")
    assert load_service_config(tmp_path / "service.toml").service.umask_bits == 0o077


def test_missing_config_says_how_to_get_one(tmp_path):
    with pytest.raises(ConfigError, match="example-config"):
        load_service_config(tmp_path / "nope.toml")


def test_render_config_round_trips(tmp_path):
    path = tmp_path / "service.toml"
    path.write_text(render_config({"v1.2": Path('/x/b"q')}, {"v": "https://h/v"}, port=9001))
    config = load_service_config(path)
    assert config.service.port == 9001 and config.bundles["v1.2"].path == Path('/x/b"q')
    assert config.volumes["v"].url == "https://h/v"


def _init(*args, cwd):
    return run_cli(["serve", "init", *args], cwd=cwd)


def test_init_writes_a_service_and_prints_an_admin_token(tmp_path, random_bundle):
    (tmp_path / "bundle").symlink_to(site_bundle(random_bundle, "tiny"))
    (tmp_path / "vol.zarr").mkdir()
    done = _init("svc", "--bundle", "demo=bundle", "--volume", "demo=vol.zarr", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config = load_service_config(tmp_path / "svc" / "service.toml")
    assert config.bundles["demo"].path == tmp_path / "bundle"
    assert config.volumes["demo"].url == str(tmp_path / "vol.zarr")
    with open_store(config.database_url) as store:
        principal = store.authenticate(done.stdout.strip())
    assert (principal.user, principal.admin) == ("admin", True)
    assert "synister serve --config" in done.stderr and done.stdout.strip() not in done.stderr

    again = _init("svc", "--bundle", "demo=bundle", "--volume", "demo=vol.zarr", cwd=tmp_path)
    assert again.returncode == 1 and "exists" in again.stderr
    missing = _init("svc2", "--bundle", "x=nothing", "--volume", "demo=vol.zarr", cwd=tmp_path)
    assert missing.returncode == 1 and "bundles.x.path" in missing.stderr
    assert not (tmp_path / "svc2" / "service.toml").exists()
