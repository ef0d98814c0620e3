"""The prediction writer process: grouped commits, errors handed back, and what happens when
its parent is killed."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from synister.db import DatabaseError, open_database
from synister.db.writer import BatchWriter

pytestmark = pytest.mark.timeout(60)

CLASSES = ["gaba", "acetylcholine", "glutamate"]


@pytest.fixture
def url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    with open_database(url) as db:
        db.create_prediction_run("r", CLASSES, {})
    return url


def stored(url: str):
    with open_database(url) as db:
        return db.predictions("r")


def test_batches_queued_behind_a_busy_writer_share_a_commit(url):
    written = []
    probabilities = np.random.default_rng(0).dirichlet(np.ones(3), 200)
    with open_database(url) as db, db._transaction(write=True):  # hold the write lock ...
        writer = BatchWriter(url, "r", written.append)
        for first in range(0, 200, 10):  # ... while 20 batches queue up
            writer.put(np.arange(first, first + 10), probabilities[first : first + 10])
        time.sleep(1.0)
    writer.close()
    assert sum(written) == 200 and len(written) < 20
    got = stored(url)
    np.testing.assert_array_equal(got.synapse_id, np.arange(200))
    np.testing.assert_allclose(got[[f"prob_{c}" for c in CLASSES]].to_numpy(), probabilities)


def test_batches_that_come_within_the_group_window_share_a_commit(url):
    """A writer that keeps up still commits what comes within GROUP_SECONDS together."""
    from synister.db import writer as writer_module

    written = []
    writer = BatchWriter(url, "r", written.append)
    time.sleep(1.5)  # the writer process has started and waits
    for first in range(0, 200, 10):  # 20 batches in 0.1 s, each well after the one before
        writer.put(np.arange(first, first + 10), np.full((10, 3), 1 / 3))
        time.sleep(0.005)
    writer.close()
    assert writer_module.GROUP_SECONDS >= 0.1
    assert sum(written) == 200 and len(written) <= 2


def test_a_write_error_is_raised_in_the_caller_and_nothing_is_stored(url):
    writer = BatchWriter(url, "r")
    writer.put(np.arange(2), np.full((2, 4), 0.25))  # 4 probabilities for 3 classes
    with pytest.raises(DatabaseError, match=r"must have shape \(2, 3\)"):
        writer.close()
    assert len(stored(url)) == 0


def test_an_unknown_run_is_named(url):
    writer = BatchWriter(url, "nope")
    with pytest.raises(Exception, match="nope"):
        for first in range(0, 1000, 10):  # raised at a put once the error is back, else at close
            writer.put(np.arange(first, first + 10), np.full((10, 3), 1 / 3))
            time.sleep(0.01)
        writer.close()


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_when_its_parent_is_killed_it_stores_what_was_queued_and_ends(url):
    script = f"""
import os, signal, numpy as np
from synister.db.writer import BatchWriter
writer = BatchWriter({url!r}, "r")
for first in range(0, 300, 10):
    writer.put(np.arange(first, first + 10), np.full((10, 3), 1 / 3))
print(writer._process.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert parent.returncode == -9, parent.stderr
    child = int(parent.stdout.split()[0])
    for _ in range(100):
        if not running(child):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"writer process {child} still runs 10 s after its parent was killed")
    np.testing.assert_array_equal(stored(url).synapse_id, np.arange(300))
