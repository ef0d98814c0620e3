from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (real FAFB/male-VNC/ISBI files); skip if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


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
    included); dropped afterwards."""
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


def _kill_when(command: list[str], ready, what: str, timeout: float = 300) -> None:
    """Run ``command`` in its own process group and kill the whole group (SIGKILL) as soon as
    ``ready()`` holds; fails with the command's stderr if it ends first or ``what`` has not
    happened within ``timeout`` seconds (a deadline, not a fixed wait)."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, f"{what} not within {timeout} s"
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        process.stderr.close()


@pytest.fixture
def kill_when():
    """:func:`_kill_when`: kill -9 a command (and its children) once something happened."""
    return _kill_when
