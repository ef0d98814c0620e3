"""Fixtures shared by the test modules.

Expensive artefacts are built once per session and shared read-only (a test that changes one
copies it first): the synthetic dataset (:func:`easy_dataset`), a briefly trained setup on it
(:func:`trained_setup`) and random-weight model bundles (:func:`random_bundle`). PostgreSQL
databases come from :func:`scratch_postgres`. Subprocesses that run synister start warm
(``warm.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import pytest
from warm import WARM

# OpenMP threads that wait for work sleep rather than spin: with torch's two threads per
# process and more processes than cores (the tests' workers, other jobs), spinning made a tiny
# network's training step ten times slower in CPU and wall time (50 steps: 12 s instead of 1-2 s
# at a load of 7 on 2 cores). Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: the session's synthetic dataset: 75 synapses fit; ~0.1 s per section
EASY_SHAPE_VOX = (32, 448, 448)
EASY_SEED = 3
#: the six transmitters of the synthetic data, in the order the networks use
SIX_CLASSES = ["gaba", "acetylcholine", "glutamate", "serotonin", "octopamine", "dopamine"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (real FAFB/male-VNC/ISBI files); skip if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


# -- PostgreSQL ------------------------------------------------------------------------------


def postgres_admin_url() -> str:
    """``SYNISTER_TEST_POSTGRES_URL``; skips without it, fails in CI (which must run them)."""
    url = os.environ.get("SYNISTER_TEST_POSTGRES_URL")
    if url:
        return url
    message = "SYNISTER_TEST_POSTGRES_URL is not set (start a server with .ci/postgres.sh)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must run the PostgreSQL tests")
    pytest.skip(message)


@contextlib.contextmanager
def scratch_postgres(prefix: str = "synister_test"):
    """A fresh database on the test server, as one ``postgresql://?host=...`` URL (password
    included, usable by psycopg too); dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    from psycopg.conninfo import conninfo_to_dict

    admin = postgres_admin_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://?{urlencode({**conninfo_to_dict(admin), 'dbname': name})}"
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def scratch_postgres_url():
    """A fresh PostgreSQL database for the module's tests (see :func:`scratch_postgres`)."""
    with scratch_postgres() as url:
        yield url


# -- processes -------------------------------------------------------------------------------


def _kill_when(
    command: list[str], ready, what: str, timeout: float = 300, interval: float = 0.02
) -> None:
    """Run ``command`` in its own process group and kill the whole group (SIGKILL) as soon as
    ``ready()`` holds (asked every ``interval`` seconds); fails with the command's stderr if
    it ends first or ``what`` has not happened within ``timeout`` seconds (a deadline, not a
    fixed wait)."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, f"{what} not within {timeout} s"
            time.sleep(interval)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        WARM.settle()  # a warm command dies with its client (warm.py)
        process.stderr.close()


def pipe_in_place_of(path: Path) -> bytes:
    """Replace the file ``path`` by a named pipe that nobody writes to: whoever opens it to read
    waits until killed (a run that cannot finish before the test kills it, at any pace).
    Returns the file's bytes, to put it back."""
    content = path.read_bytes()
    path.unlink()
    os.mkfifo(path)
    return content


@pytest.fixture(scope="session", autouse=True)
def _stop_warm_python():
    """Stops the warm Python server (``warm.py``) at the end, if a test started it."""
    yield
    WARM.stop()


@pytest.fixture(scope="module")
def warm_executable():
    """``sys.executable`` is the warm Python (``warm.py``) for a module's tests: the processes
    the code under test starts with it (daisy's workers, cluster jobs) do not import torch
    again."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "executable", WARM.python)
        yield


@pytest.fixture
def kill_when():
    """:func:`_kill_when`: kill -9 a command (and its children) once something happened."""
    return _kill_when


# -- shared artefacts (read-only) ------------------------------------------------------------


@pytest.fixture(scope="session")
def easy_dataset(tmp_path_factory) -> Path:
    """The folder of one synthetic ``easy`` dataset (:data:`EASY_SHAPE_VOX`, seed
    :data:`EASY_SEED`, montages and image-level ceiling included), generated once."""
    from synister.synthetic import generate

    out = tmp_path_factory.mktemp("easy_dataset")
    generate(out, preset="easy", seed=EASY_SEED, shape_vox=EASY_SHAPE_VOX)
    return out


def import_dataset(dataset: Path, url: str):
    """Import a synthetic dataset's tables into the database at ``url``."""
    from synister.db import open_database
    from synister.db.imports import import_files

    with open_database(url) as db:
        import_files(
            db, [dataset / f for f in ("synapses.json", "skeletons.json", "hemi_lineages.json")]
        )


@dataclass
class TrainedSetup:
    base: Path
    url: str
    setup: Path  # the training setup (checkpoint 20)
    volume: Path  # the synthetic raw.zarr
    bundle: Path
    synapses: pd.DataFrame  # synapse_id, skeleton_id, z, y, x nm of the test part
    db_probabilities: pd.DataFrame  # synister predict's run, indexed by synapse_id


@pytest.fixture(scope="session")
def trained_setup(easy_dataset, tmp_path_factory) -> TrainedSetup:
    """:func:`easy_dataset` imported and split by skeleton (every other neuron of each
    transmitter to the test part), a tiny ResNet trained 20 iterations on it, its test part
    predicted through the database, the bundle exported."""
    from synister.db import open_database
    from synister.evaluate.provenance import export_model
    from synister.predict import predict_setup
    from synister.setup import prepare_prediction, prepare_training
    from synister.train import train

    base = tmp_path_factory.mktemp("trained_setup")
    url = f"sqlite:///{base / 'synister.db'}"
    import_dataset(easy_dataset, url)
    with open_database(url) as db:
        table = db.synapses()
        skeletons = db.skeletons().sort_values("skeleton_id")
        every_other = skeletons.groupby(skeletons["nt_known"].map(sorted).map(tuple)).cumcount()
        test_part = table["skeleton_id"].isin(skeletons["skeleton_id"][every_other % 2 == 1])
        parts = np.where(test_part, "test", "train")
        db.write_split("alternate", pd.DataFrame({"synapse_id": table.synapse_id, "part": parts}))
        test = db.synapses(split="alternate", part="test")[
            ["synapse_id", "skeleton_id", "z", "y", "x"]
        ]
    volume = easy_dataset / "raw.zarr"
    setup = prepare_training(
        base,
        "tiny",
        0,
        db_url=url,
        split_name="alternate",
        raw_container=str(volume),
        raw_dataset="raw",
        input_shape=(8, 32, 32),
        network="ResNet18",
        fmaps=2,
        downsample_factors=[(1, 2, 2), (2, 2, 2)],
        batch_size=4,
        checkpoint_every=20,
        snapshot_every=20,
        num_cache_workers=1,
    )
    train(setup, 20, progress=False)
    [predict] = prepare_prediction(base, "tiny", 0, [20], validation=False)
    run = predict_setup(predict, read_workers=0, progress=False)["run"]
    with open_database(url) as db:
        stored = db.predictions(run).set_index("synapse_id")
    bundle = export_model(setup, 20, base / "bundle")
    return TrainedSetup(base, url, setup, volume, bundle, test.reset_index(drop=True), stored)


@pytest.fixture(scope="session")
def random_bundle(tmp_path_factory):
    """``random_bundle(input_shape_vox, ...)``: the folder of a random-weight ResNet model
    bundle (``synister export-model`` of a fresh setup), made once per set of arguments."""
    return bundle_factory(lambda: tmp_path_factory.mktemp("bundle"))


def bundle_factory(new_folder: Callable[[], Path]):
    """The :func:`random_bundle` fixture's factory, each bundle in a ``new_folder()`` (the
    benchmarks use it without pytest)."""
    made: dict[tuple, Path] = {}

    def make(
        input_shape_vox: tuple[int, int, int],
        *,
        fmaps: int = 2,
        downsample_factors=((1, 2, 2), (1, 2, 2)),
        classes: tuple[str, ...] = tuple(SIX_CLASSES),
        voxel_size_nm: tuple[float, float, float] = (40, 4, 4),
        seed: int = 0,
    ) -> Path:
        key = (tuple(input_shape_vox), fmaps, tuple(map(tuple, downsample_factors)),
               tuple(classes), tuple(voxel_size_nm), seed)  # fmt: skip
        if key not in made:
            made[key] = _random_bundle(new_folder(), *key)
        return made[key]

    return make


def _random_bundle(base: Path, input_shape_vox, fmaps, downsample_factors, classes, voxel_size_nm,
                   seed) -> Path:  # fmt: skip
    import torch

    from synister.config import load_train_setup
    from synister.evaluate.provenance import export_model
    from synister.models import build_model, save_checkpoint
    from synister.setup import prepare_training

    setup = prepare_training(
        base, "e", 0, db_url=f"sqlite:///{base / 'none.db'}", check_volume=False,
        synapse_types=list(classes), input_shape=input_shape_vox, fmaps=fmaps,
        network="ResNet18", downsample_factors=list(downsample_factors),
        voxel_size=tuple(voxel_size_nm),
    )  # fmt: skip
    cfg, _ = load_train_setup(setup)
    torch.manual_seed(seed)
    save_checkpoint(setup / "model_checkpoint_1", build_model(cfg), None, 1)
    return export_model(setup, 1, base / "bundle")
