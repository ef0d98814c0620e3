"""synister.config: the seed's ini files parse as written, round-trip, and errors name the key."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from synister.config import (
    ConfigError,
    ConfigWarning,
    PredictConfig,
    TrainConfig,
    WorkerConfig,
    load_predict_setup,
    load_train_setup,
    mongo_url_from_credentials,
    read_ini,
    submit_command,
)

# The three example configs of the original README (/work/shared/seed), verbatim.
SEED_TRAIN = """\
[Training]
synapse_types = gaba, acetylcholine, glutamate, serotonin, octopamine, dopamine
input_shape = 16, 160, 160
fmaps = 12
batch_size = 8
db_credentials = synister_data/credentials/db_credentials.ini
db_name_data = synister_v3
split_name = skeleton
voxel_size = 40, 4, 4
raw_container = /nrs/saalfeld/FAFB00/v14_align_tps_20170818_dmg.n5
raw_dataset = volumes/raw/s0
downsample_factors = (1,2,2), (1,2,2), (1,2,2), (2,2,2)
network = VGG
fmap_inc = 2, 2, 2, 2
n_convolutions = 2, 2, 2, 2
network_appendix = None
"""

SEED_WORKER = """\
[Worker]
singularity_container = synister/singularity/synister.img
num_cpus = 5
num_block_workers = 1
num_cache_workers = 5
queue = gpu_any
mount_dirs = /nrs, /scratch, /groups, /misc
"""

SEED_PREDICT = """\
[Predict]
train_checkpoint = <experiment_name>/02_train/setup_t<train_id>/model_checkpoint_<iter_k>
experiment = <experiment_name>
train_number = 0
predict_number = 0
synapse_types = gaba, acetylcholine, glutamate, serotonin, octopamine, dopamine
input_shape = 16, 160, 160
fmaps = 12
batch_size = 8
db_credentials = synister_data/credentials/db_credentials.ini
db_name_data = synister_v3
split_name = skeleton
voxel_size = 40, 4, 4
raw_container = /nrs/saalfeld/FAFB00/v14_align_tps_20170818_dmg.n5
raw_dataset = volumes/raw/s0
downsample_factors = (1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)
split_part = validation
overwrite = False
network = VGG
fmap_inc = 2, 2, 2, 2
n_convolutions = 2, 2, 2, 2
network_appendix = None
"""

FAFB_FACTORS = [(1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_seed_train_config_parses_as_written(tmp_path):
    cfg = TrainConfig.read(_write(tmp_path, "train_config.ini", SEED_TRAIN))
    assert cfg.synapse_types == [
        "gaba", "acetylcholine", "glutamate", "serotonin", "octopamine", "dopamine"
    ]  # fmt: skip
    assert cfg.input_shape == (16, 160, 160)
    assert cfg.voxel_size == (40, 4, 4)
    assert cfg.downsample_factors == FAFB_FACTORS
    assert cfg.fmap_inc == (2, 2, 2, 2) and cfg.n_convolutions == (2, 2, 2, 2)
    assert cfg.network_appendix is None and cfg.db_url is None
    assert cfg.db_credentials == "synister_data/credentials/db_credentials.ini"
    assert cfg.classes == cfg.synapse_types


def test_seed_worker_and_predict_configs_parse(tmp_path):
    worker = WorkerConfig.read(_write(tmp_path, "worker_config.ini", SEED_WORKER))
    assert worker.mount_dirs == ("/nrs", "/scratch", "/groups", "/misc")
    assert worker.queue == "gpu_any" and worker.num_cache_workers == 5
    predict = PredictConfig.read(_write(tmp_path, "predict_config.ini", SEED_PREDICT))
    assert predict.downsample_factors == FAFB_FACTORS
    assert predict.split_part == "validation" and predict.overwrite is False
    assert predict.run_name == "skeleton_<experiment_name>_t0_p0"
    assert predict.iteration is None  # the README's placeholder <iter_k> is no number
    # the seed's worker settings are honoured: --submit runs the original's bsub + singularity
    assert worker.submit_template() == (
        "bsub -q {queue} -n {num_cpus} -gpu num=1 singularity exec --nv -B {mount_dirs} "
        "{singularity_container} {command}"
    )
    text = SEED_PREDICT.replace("<experiment_name>", "fafb").replace("<iter_k>", "200000")
    predict = PredictConfig.read(_write(tmp_path, "p.ini", text))
    assert predict.iteration == 200000 and predict.run_name == "skeleton_fafb_t0_p0"


def test_round_trip_keeps_every_value_and_the_seed_formats(tmp_path):
    cfg = TrainConfig.read(_write(tmp_path, "in.ini", SEED_TRAIN))
    changed = cfg.model_copy(update={"neither_class": True, "db_url": "sqlite:///x.db"})
    changed.write(tmp_path / "out.ini")
    text = (tmp_path / "out.ini").read_text()
    assert "input_shape = 16, 160, 160\n" in text
    assert "downsample_factors = (1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)\n" in text
    assert "network_appendix = None\n" in text and "neither_class = True\n" in text
    assert "# network input patch in voxels, z, y, x\n" in text  # keys are explained
    again = TrainConfig.read(tmp_path / "out.ini")
    assert again == changed
    assert again.classes[-1] == "neither"
    worker = WorkerConfig.read(_write(tmp_path, "w.ini", SEED_WORKER))
    worker.write(tmp_path / "w2.ini")
    assert WorkerConfig.read(tmp_path / "w2.ini") == worker


def test_abbreviations_and_spacing_variants_are_accepted(tmp_path):
    text = SEED_TRAIN.replace(
        "gaba, acetylcholine, glutamate, serotonin, octopamine, dopamine", "GABA,ACh, 5-HT"
    ).replace("(1,2,2), (1,2,2), (1,2,2), (2,2,2)", "(1, 2, 2),(1,2,2) , (1,2, 2),( 2,2,2 )")
    cfg = TrainConfig.read(_write(tmp_path, "t.ini", text))
    assert cfg.synapse_types == ["gaba", "acetylcholine", "serotonin"]
    assert cfg.downsample_factors == FAFB_FACTORS


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("input_shape = 16, 160", "[Training] input_shape: expected three integers, got '16, 160'"),
        ("fmaps = many", "[Training] fmaps: expected an integer, got 'many'"),
        ("synapse_types = gaba, histamine", "[Training] synapse_types: unknown transmitter"),
        ("fmap_inc = 2, 2", "[Training] fmap_inc: expected one value per level"),
        ("input_shape = 16, 160, 161", "[Training] input_shape: 16, 160, 161 cannot be max-pooled"),
        ("network = UNet", "[Training] network:"),
        ("downsample_factors = 1, 2, 2", "[Training] downsample_factors: expected triples"),
        ("split_name = None", "[Training] split_name: must be set, got 'None'"),
    ],
)
def test_bad_value_names_file_section_and_key(tmp_path, line, expected):
    key = line.split(" =")[0]
    lines = [line if row.startswith(f"{key} =") else row for row in SEED_TRAIN.splitlines()]
    path = _write(tmp_path, "train_config.ini", "\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as info:
        TrainConfig.read(path)
    assert f"{path} {expected}" in str(info.value)


def test_missing_key_is_named_and_unknown_key_warns(tmp_path):
    path = _write(tmp_path, "t.ini", SEED_TRAIN.replace("split_name = skeleton\n", ""))
    with pytest.raises(ConfigError, match=r"\[Training\] split_name: missing"):
        TrainConfig.read(path)
    path = _write(tmp_path, "t2.ini", SEED_TRAIN + "num_levels = 4\n")
    with pytest.warns(ConfigWarning, match=r"\[Training\] num_levels: unknown key"):
        cfg = TrainConfig.read(path)
    assert cfg.fmaps == 12
    with pytest.raises(ConfigError, match=r"no \[Predict\] section"):
        read_ini(path, PredictConfig)


def test_db_credentials_become_a_mongodb_url_and_db_url_wins(tmp_path):
    credentials = _write(
        tmp_path,
        "db_credentials.ini",
        "[Credentials]\nuser = nils\npassword = p@ss:word\n"
        "host = mongo.example.org\nport = 27017\n",
    )
    cfg = TrainConfig.read(
        _write(tmp_path, "t.ini", SEED_TRAIN.replace("synister_data/credentials/", ""))
    )
    with pytest.raises(ConfigError, match="db_credentials file not found"):
        cfg.database_url()  # relative path: resolved only by load_train_setup
    cfg = cfg.model_copy(update={"db_credentials": str(credentials)})
    assert cfg.database_url() == "mongodb://nils:p%40ss%3Aword@mongo.example.org:27017/synister_v3"
    url = "sqlite:///synister_v3.db"  # a URL wins; its database must be db_name_data's
    assert cfg.model_copy(update={"db_url": url}).database_url() == url
    srv = _write(
        tmp_path,
        "srv.ini",
        "[Credentials]\nuser = u\npassword = p\nhost = cluster.example.net\nport = number\n"
        "[Connection]\nis_srv = True\noptions = retryWrites=true&w=majority\n",
    )
    assert (
        mongo_url_from_credentials(srv, "db")
        == "mongodb+srv://u:p@cluster.example.net/db?retryWrites=true&w=majority"
    )
    broken = _write(tmp_path, "broken.ini", "[Credentials]\nuser = u\nhost = h\nport = 1\n")
    with pytest.raises(ConfigError, match=r"\[Credentials\] password: missing"):
        mongo_url_from_credentials(broken)


def test_setup_loaders_resolve_relative_paths_against_base(tmp_path):
    setup = tmp_path / "exp" / "02_train" / "setup_t0"
    setup.mkdir(parents=True)
    text = SEED_TRAIN.replace("/nrs/saalfeld/FAFB00/v14_align_tps_20170818_dmg.n5", "raw.zarr")
    (setup / "train_config.ini").write_text(text + "db_url = sqlite:///synister.db\n")
    (setup / "worker_config.ini").write_text(SEED_WORKER)
    train, worker = load_train_setup(setup)
    assert train.raw_container == str(tmp_path.resolve() / "raw.zarr")
    assert train.db_url == f"sqlite:///{tmp_path.resolve() / 'synister.db'}"
    assert train.db_credentials == str(
        tmp_path.resolve() / "synister_data/credentials/db_credentials.ini"
    )
    assert worker.num_cpus == 5
    predict_dir = tmp_path / "exp" / "03_predict" / "setup_t0_p0"
    predict_dir.mkdir(parents=True)
    text = SEED_PREDICT.replace("<experiment_name>", "exp").replace("<train_id>", "0")
    (predict_dir / "predict_config.ini").write_text(text.replace("<iter_k>", "10"))
    (predict_dir / "worker_config.ini").write_text(SEED_WORKER)
    predict, _ = load_predict_setup(predict_dir)
    assert predict.train_checkpoint == str(setup.resolve() / "model_checkpoint_10")
    assert predict.raw_container.startswith("/nrs/")  # absolute paths stay as they are


def test_python_construction_validates_too():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = TrainConfig(
            synapse_types=["ach", "gaba"],
            input_shape=(8, 32, 32),
            db_name_data="d",
            split_name="s",
            voxel_size=(40, 4, 4),
            raw_container="r",
            raw_dataset="raw",
            downsample_factors=[(1, 2, 2), (2, 2, 2)],
        )
    assert cfg.synapse_types == ["acetylcholine", "gaba"]
    assert cfg.fmap_inc == (2, 2) and cfg.n_convolutions == (2, 2)  # one per level by default
    with pytest.raises(ValueError, match="input_shape"):
        cfg.input_shape = (8, 32, 33)


# ---- settings that must not be accepted and ignored ----------------------------------------------


@pytest.mark.parametrize(
    ("db_url", "db_name", "expected"),
    [
        ("mongodb://host:27017/", "synister_v3", "mongodb://host:27017/synister_v3"),
        ("mongodb://h1,h2/?replicaSet=r", "v3", "mongodb://h1,h2/v3?replicaSet=r"),
        ("postgresql://me:pw@host/", "v3", "postgresql://me:pw@host/v3"),
        ("postgresql://me:pw@host/v3", "v3", "postgresql://me:pw@host/v3"),
        ("postgresql://me:pw@host/v3", None, "postgresql://me:pw@host/v3"),
        ("sqlite:////data/fafb.db", "fafb", "sqlite:////data/fafb.db"),
        ("sqlite:////data/fafb.db", None, "sqlite:////data/fafb.db"),
    ],
)
def test_db_name_data_names_the_database_where_the_url_does_not(
    tmp_path, db_url, db_name, expected
):
    cfg = TrainConfig.read(_write_seed(tmp_path, db_url, db_name))
    assert cfg.database_url() == expected


@pytest.mark.parametrize(
    ("db_url", "expected"),
    [
        ("mongodb://u:secret@host/other", "'synister_v3' disagrees with the database 'other'"),
        ("postgresql://u:secret@host/other", "'synister_v3' disagrees with the database 'other'"),
        ("sqlite:////data/fafb.db", "'synister_v3' disagrees with the SQLite file /data/fafb.db"),
    ],
)
def test_db_name_data_that_disagrees_with_the_url_is_refused(tmp_path, db_url, expected):
    cfg = TrainConfig.read(_write_seed(tmp_path, db_url, "synister_v3"))
    with pytest.raises(ConfigError) as error:
        cfg.database_url()
    assert f"[Training] db_name_data: {expected}" in str(error.value)
    assert "secret" not in str(error.value)


def _write_seed(folder: Path, db_url: str, db_name: str | None) -> Path:
    text = SEED_TRAIN.replace("db_name_data = synister_v3", f"db_name_data = {db_name}")
    return _write(folder, "train_config.ini", text + f"db_url = {db_url}\n")


def _worker(**values) -> WorkerConfig:
    return WorkerConfig(**values)


def test_submit_command_fills_the_template():
    worker = _worker(
        queue="gpu_any",
        num_cpus=4,
        singularity_container="/img/synister.sif",
        mount_dirs=("/nrs", "/groups"),
        submit_command="sbatch -p {queue} -c {num_cpus} -J {job_name} --wrap 'singularity exec "
        "-B {mount_dirs} {singularity_container} {command}'",
    )
    argv = ["python", "-m", "synister", "train", "10", "--setup", "/a b/setup_t0"]
    assert submit_command(worker, argv, "train-setup_t0") == [
        "sbatch",
        "-p",
        "gpu_any",
        "-c",
        "4",
        "-J",
        "train-setup_t0",
        "--wrap",
        "singularity exec -B /nrs,/groups /img/synister.sif python -m synister train 10 "
        "--setup '/a b/setup_t0'",
    ]
    plain = _worker(submit_command="bsub -n {num_cpus} {command}")
    assert submit_command(plain, argv) == ["bsub", "-n", "5", *argv]  # one word per argument


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"submit_command": "bsub {command} {colour}"}, "unknown placeholder {colour}"),
        ({"submit_command": "bsub -q {queue}"}, "must contain {command}"),
        ({"submit_command": "bsub -q {queue} {command}"}, "uses {queue} but queue is not set"),
        ({"submit_command": "bsub {command", "queue": "q"}, "submit_command: "),
        (
            {"submit_command": "bsub {command}", "queue": "gpu"},
            "queue: set to 'gpu' but submit_command does not use {queue}",
        ),
        (
            {"mount_dirs": ("/nrs",)},
            "mount_dirs: set to '/nrs' but no submit_command is set, and the default one",
        ),
    ],
)
def test_worker_settings_that_would_be_ignored_are_refused(tmp_path, values, expected):
    with pytest.raises(ValueError, match=re.escape(expected)):
        _worker(**values)
    lines = "".join(
        f"{k} = {', '.join(v) if isinstance(v, tuple) else v}\n" for k, v in values.items()
    )
    with pytest.raises(ConfigError, match=r"worker_config.ini \[Worker\]"):
        WorkerConfig.read(_write(tmp_path, "worker_config.ini", "[Worker]\n" + lines))


def test_without_a_template_there_is_nothing_to_submit_with():
    with pytest.raises(ConfigError, match="submit_command: not set, nor queue"):
        submit_command(WorkerConfig(), ["synister"])
    assert WorkerConfig(queue="short").submit_template() == (
        "bsub -q {queue} -n {num_cpus} -gpu num=1 {command}"
    )
