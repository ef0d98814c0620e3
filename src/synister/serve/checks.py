"""Uploaded tables are checked in processes of their own, a bounded number at once.

The web app's process never decodes a table: a check (:func:`~synister.serve.engine.check_table`,
the reading of ``predict-positions`` within the service's row and bytes-per-row limits) runs in
a checker process that may allocate at most ``[limits] check_memory_bytes`` beyond what it held
when it started (``RLIMIT_DATA``; Arrow allocates through ``malloc`` there, so the bound covers
it), and is killed after ``check_seconds``. A table that needs more is refused, a reader that
crashes on a malformed file takes only its checker with it, and the event loop never waits for
a parser. At most ``checks`` run at once, ``checks_per_user`` of them for one user; the others
wait their turn.

A checker reads one JSON request per line on stdin and answers one JSON line on stdout, so it
starts as any command does (``sys.executable -c ...``) and is reused until its memory stays
high after a check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from dataclasses import asdict

from .config import LimitsSection

log = logging.getLogger("synister.serve.checks")

CHECKER_CODE = "from synister.serve.checks import main; main()"
#: a checker that holds this much more than at its start after a check is replaced
RECYCLE_BYTES = 64 * 2**20
#: an answer line is at most this long (an error message)
_LINE_BYTES = 1 << 20


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM starts again from the current RSS


def _bound_memory(extra_bytes: int) -> None:
    """Arrow through malloc, one thread each, and ``RLIMIT_DATA`` at what this process holds
    now plus ``extra_bytes``."""
    import resource

    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    limit = _status_bytes("VmData") + extra_bytes
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def _trim() -> None:
    """Give freed memory back to the system (glibc keeps it otherwise)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _answer(request: dict, memory_bytes: int) -> dict:
    from pathlib import Path

    import pyarrow as pa

    from synister.tables import TableError, TableLimits

    from .engine import check_table

    path = request["path"]
    try:
        rows = check_table(Path(path), request["options"], TableLimits(**request["limits"]))
        return {"rows": rows}
    except TableError as error:
        return {"error": str(error), "columns": error.columns}
    except (MemoryError, pa.ArrowMemoryError):
        return {
            "error": f"{path}: reading the table needs more than the {memory_bytes} bytes "
            "of memory a check may take"
        }
    except Exception as error:  # noqa: BLE001 - a reader's failure on a malformed file
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        log.warning(
            "table check failed", extra={"event": "check", "error": f"{type(error).__name__}"}
        )
        return {"error": f"{path}: not a readable table ({first})"}


def main() -> None:
    """A checker process: ``sys.argv[-1]`` is the memory a check may take (bytes)."""
    from .logs import configure_logging

    memory_bytes = int(sys.argv[-1])
    answers = os.fdopen(os.dup(1), "w")  # the protocol's stdout; prints go to stderr
    os.dup2(2, 1)
    configure_logging()
    from . import engine  # noqa: F401 - the reader, imported before the bound

    start_rss = _status_bytes("VmRSS")
    _bound_memory(memory_bytes)
    for line in sys.stdin:
        if not line.strip():
            continue
        before = _status_bytes("VmRSS")
        _reset_peak()
        answer = _answer(json.loads(line), memory_bytes)
        answer |= {"rss_bytes": before, "peak_rss_bytes": _status_bytes("VmHWM")}
        _trim()
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
        if _status_bytes("VmRSS") > start_rss + RECYCLE_BYTES:
            break  # the pool starts a fresh checker for the next table


class CheckFailed(Exception):  # noqa: N818 - the checker, not the table, failed
    """The checker died or took too long; the message says which."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


class _Checker:
    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process

    @classmethod
    async def start(cls, memory_bytes: int) -> _Checker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHECKER_CODE,
            str(memory_bytes),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=_LINE_BYTES,
            # before Arrow loads: its default allocators reserve a gigabyte of address space
            env={**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system"},
        )
        return cls(process)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def ask(self, request: dict, seconds: float) -> dict:
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            await self.process.stdin.drain()
            line = await asyncio.wait_for(self.process.stdout.readline(), seconds)
        except TimeoutError:
            self.kill()
            raise CheckFailed(f"the check took longer than {seconds:g} s", True) from None
        except (ConnectionError, ValueError, asyncio.LimitOverrunError) as error:
            self.kill()
            raise CheckFailed(f"the checker failed ({type(error).__name__})") from None
        if not line:
            self.kill()
            raise CheckFailed("the checker stopped (the reader crashed on the file)")
        return json.loads(line)

    def kill(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()


class CheckPool:
    """At most ``limits.checks`` checks at once, ``limits.checks_per_user`` per user, each in
    a checker process; checkers are started when needed and reused."""

    def __init__(self, limits: LimitsSection):
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.checks)
        self._users: dict[str, asyncio.Semaphore] = {}
        self._idle: list[_Checker] = []

    async def check(self, user: str, path, options: dict, table_limits) -> dict:
        """The checker's answer: ``rows``, or ``error`` (and ``columns``); with the checker's
        ``rss_bytes`` before and ``peak_rss_bytes`` during the check. Raises
        :class:`CheckFailed` when a checker died on the table twice or took too long."""
        turn = self._users.setdefault(user, asyncio.Semaphore(self.limits.checks_per_user))
        request = {"path": str(path), "options": options, "limits": asdict(table_limits)}
        seconds = self.limits.check_seconds
        async with turn, self._slots:
            checker = self._reuse()
            if checker is not None:
                try:
                    return self._keep(checker, await checker.ask(request, seconds))
                except CheckFailed as error:
                    if error.timed_out:
                        raise
                    # it may have ended after its last check (see main): try a fresh one
            checker = await _Checker.start(self.limits.check_memory_bytes)
            return self._keep(checker, await checker.ask(request, seconds))

    def _reuse(self) -> _Checker | None:
        while self._idle:
            checker = self._idle.pop()
            if checker.alive:
                return checker
        return None

    def _keep(self, checker: _Checker, answer: dict) -> dict:
        if checker.alive:
            self._idle.append(checker)
        return answer

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for checker in idle:
            if checker.process.stdin is not None:
                checker.process.stdin.close()
        for checker in idle:
            try:
                await asyncio.wait_for(checker.process.wait(), 5)
            except TimeoutError:
                checker.kill()
