"""The prediction writer process: grouped commits, back-pressure, errors handed back, no
password on its command line, and what happens when its parent is killed. Nothing here waits
a fixed time: grouping runs on an injected clock, back-pressure on a held database lock."""

from __future__ import annotations

import queue
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from warm import running

from synister.db import DatabaseError, open_database
from synister.db import writer as writer_module
from synister.db.writer import _END, BatchWriter, _take

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


def batch(first: int, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(first, first + n), np.full((n, 3), 1 / 3)


class Clock:
    """Advances by ``step`` seconds each time it is read."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def queued(*items) -> queue.Queue:
    q: queue.Queue = queue.Queue()
    for item in items:
        q.put(item)
    return q


def test_a_group_takes_what_is_queued_within_the_window_up_to_the_row_limit():
    batches = queued(*[batch(i * 10) for i in range(20)], _END)
    # all queued at once and read instantly: one group of all 20
    group = _take(batches, seconds=0.2, rows=4096, clock=Clock(0.0))
    assert [len(ids) for ids, _ in group] == [10] * 20
    assert _take(batches) == [] and batches.get_nowait() is _END  # the end mark stays

    # each batch read 0.05 s after the one before: a 0.2 s window holds 4 of them
    batches = queued(*[batch(i * 10) for i in range(10)], _END)
    sizes = []
    while group := _take(batches, seconds=0.2, rows=4096, clock=Clock(0.05)):
        sizes.append(len(group))
    assert sizes == [4, 4, 2]

    batches = queued(*[batch(i * 10) for i in range(10)], _END)
    assert len(_take(batches, seconds=10, rows=35, clock=Clock(0.0))) == 4  # 40 >= 35 rows


def test_batches_queued_behind_a_busy_writer_are_all_stored(url):
    written = []
    probabilities = np.random.default_rng(0).dirichlet(np.ones(3), 200)
    with open_database(url) as db, db._transaction(write=True):  # hold the write lock ...
        writer = BatchWriter(url, "r", written.append)
        for first in range(0, 200, 10):  # ... while 20 batches queue up
            writer.put(np.arange(first, first + 10), probabilities[first : first + 10])
    writer.close()
    assert sum(written) == 200 and writer.pending_rows == 0
    got = stored(url)
    np.testing.assert_array_equal(got.synapse_id, np.arange(200))
    np.testing.assert_allclose(got[[f"prob_{c}" for c in CLASSES]].to_numpy(), probabilities)


def test_a_slow_database_holds_the_network_back(url):
    """put() blocks once max_pending_rows synapses wait for the database; nothing is lost."""
    with open_database(url) as db, db._transaction(write=True):  # the database is stuck
        writer = BatchWriter(url, "r", max_pending_rows=30)
        for first in (0, 10, 20):
            writer.put(*batch(first))
        assert writer.pending_rows == 30
        with pytest.raises(TimeoutError, match="holds 30 synapses not yet stored"):
            writer.put(*batch(30), timeout=0)
    writer.put(*batch(30))  # the lock is gone: room comes as groups are committed
    writer.close()
    np.testing.assert_array_equal(stored(url).synapse_id, np.arange(40))
    assert writer_module.MAX_PENDING_ROWS >= 2 * writer_module.GROUP_ROWS  # commits overlap


def test_a_write_error_is_raised_in_the_caller_and_nothing_is_stored(url):
    writer = BatchWriter(url, "r")
    writer.put(np.arange(2), np.full((2, 4), 0.25))  # 4 probabilities for 3 classes
    with pytest.raises(DatabaseError, match=r"must have shape \(2, 3\)"):
        writer.close()
    assert len(stored(url)) == 0


def test_an_unknown_run_is_named(url):
    writer = BatchWriter(url, "nope")
    with pytest.raises(Exception, match="nope"):  # at the put if the error is back, else close
        writer.put(*batch(0))
        writer.close()


def test_the_database_password_never_reaches_the_command_line(scratch_postgres_url):
    """``ps`` shows every user a process's arguments: the URL goes through the pipe."""
    password = parse_qs(urlsplit(scratch_postgres_url).query)["password"][0]
    assert password
    with open_database(scratch_postgres_url) as db:
        db.create_prediction_run("r", CLASSES, {})
    writer = BatchWriter(scratch_postgres_url, "r")
    try:
        with open(f"/proc/{writer._process.pid}/cmdline", "rb") as cmdline:
            arguments = cmdline.read().decode()
        assert "synister.db.writer" in arguments
        assert password not in arguments and "postgresql" not in arguments
        writer.put(*batch(0))
    finally:
        writer.close()
    with open_database(scratch_postgres_url) as db:
        np.testing.assert_array_equal(db.predicted_synapse_ids("r"), np.arange(10))
    with pytest.raises(Exception) as error:  # a wrong password: the message hides it
        broken = BatchWriter(scratch_postgres_url.replace(password, "wrong" + password), "r")
        broken.put(*batch(0))
        broken.close()
    assert password not in str(error.value)


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
    deadline = time.monotonic() + 50  # waits for the child to end, not for a fixed time
    while running(child):
        assert time.monotonic() < deadline, f"writer process {child} still runs after 50 s"
        time.sleep(0.05)
    np.testing.assert_array_equal(stored(url).synapse_id, np.arange(300))
