"""Warm Python processes for the tests' subprocesses.

Every ``python -c 'from synister.cli import main; main()' ...``, daisy worker or ``synister``
command a test starts imports torch, pandas and tensorstore again: ~3 s of CPU each, dozens of
times a session. Here a server imports them once and forks a child per command; the child
becomes the command: its arguments, working folder, environment, standard streams, a session
of its own, and ``sys.executable`` pointing back here, so that the processes it starts (the
service's workers, daisy's workers, cluster jobs) start warm too.

The process a test starts is a small client (Python without site-packages: milliseconds) that
stands for the command: it forwards SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 to the child
and ends as the child ended (its exit status, or killed by the same signal). When the client
is killed (kill -9 of it or of its process group), the server kills the child's whole session
with SIGKILL. Each command is its own process that starts from the state right after the
imports; only the start-up is shared.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

#: the command line of ``synister`` run as a module of this Python
CLI_CODE = "from synister.cli import main; main()"
#: imported once by the server: what the commands spend their start-up on
PRELOAD = ("synister.cli", "synister.predict.blockwise.worker", "daisy.v2", "multiprocessing.spawn")
#: signals the client passes on to the command
FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2")

CLIENT = """#!{real} -IS
import json, os, signal, socket, struct, sys
REAL, SOCKET, AS_SYNISTER = {real!r}, {socket!r}, {as_synister!r}
args = sys.argv[1:]
env = dict(os.environ)
if AS_SYNISTER:
    args = ["-c", {cli!r}, *args]
elif args[:1] == ["-u"]:  # as torchrun starts its workers
    args, env["PYTHONUNBUFFERED"] = args[1:], "1"
if len(args) < 2 or args[0] not in ("-c", "-m"):
    os.execv(REAL, [REAL, *sys.argv[1:]])  # any other use: the real interpreter
conn = socket.socket(socket.AF_UNIX)
try:
    conn.connect(SOCKET)
except OSError:  # no server (any more): a cold start
    os.execv(REAL, [REAL, *sys.argv[1:]])
request = {{"args": args, "cwd": os.getcwd(), "env": env, "ppid": os.getppid(),
           "pid": os.getpid()}}
message = json.dumps(request).encode()
socket.send_fds(conn, [struct.pack("!I", len(message)) + message], [0, 1, 2])
def receive():
    data = b""
    while len(data) < 4:
        chunk = conn.recv(4 - len(data))
        if not chunk:
            sys.exit("warm python: the server went away")
        data += chunk
    return struct.unpack("!i", data)[0]
child = receive()
def forward(signum, frame):
    try:
        os.kill(child, signum)
    except ProcessLookupError:
        pass
for name in {forwarded!r}:
    signal.signal(getattr(signal, name), forward)
status = receive()
if status < 0:  # ended by a signal: so does the client
    if -status != signal.SIGKILL:
        signal.signal(-status, signal.SIG_DFL)
    os.kill(os.getpid(), -status)
    status = 128 - status
sys.exit(status)
"""


def _receive_request(conn: socket.socket) -> tuple[dict, list[int]]:
    import json

    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    if len(data) < 4:
        raise ConnectionError("no request")
    size = struct.unpack("!I", data[:4])[0]
    data = data[4:]
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("request cut short")
        data += chunk
    return json.loads(data), fds


def _streams() -> None:
    """New ``sys.stdin/stdout/stderr`` on fds 0-2, buffered as a new interpreter's would be."""
    import io

    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))

    def writer(fd: int, line: bool):
        raw = io.open(fd, "wb", buffering=0 if unbuffered else -1, closefd=False)  # noqa: UP020
        return io.TextIOWrapper(
            raw, encoding="utf-8", errors="backslashreplace" if fd == 2 else "strict",
            line_buffering=line, write_through=unbuffered,
        )  # fmt: skip

    sys.stdin = sys.__stdin__ = io.open(0, "r", encoding="utf-8", closefd=False)  # noqa: UP020
    sys.stdout = sys.__stdout__ = writer(1, os.isatty(1))
    sys.stderr = sys.__stderr__ = writer(2, True)


def _run(args: list[str]) -> None:
    """``python -c CODE ...`` or ``python -m MODULE ...`` in this process."""
    import runpy
    import types

    option, target, rest = args[0], args[1], args[2:]
    if option == "-m":
        sys.argv = [target, *rest]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
        return
    sys.argv = ["-c", *rest]
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    exec(compile(target, "<string>", "exec"), main.__dict__)


def _finish(status: int) -> None:
    """Leave as an interpreter would: non-daemon threads joined, atexit functions run,
    streams flushed."""
    import atexit
    import threading

    try:
        threading._shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001,S110 - nothing left to report it to
                pass
    os._exit(status)


def _become(request: dict, fds: list[int], client: str) -> None:
    """In the forked child: become the requested command; never returns."""
    import signal
    import traceback

    status = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _streams()
        sys.executable = client  # processes it starts come back here
        parent = request["ppid"]
        os.getppid = lambda: parent  # the client's parent: the process that started it
        import numpy

        numpy.random.seed()  # a fresh interpreter's global generator
        try:
            _run(request["args"])
            status = 0
        except SystemExit as done:
            code = done.code
            status = code if isinstance(code, int) else 0 if code is None else 1
            if not isinstance(code, int | None):
                print(code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # noqa: BLE001 - reported as an uncaught exception would be
        traceback.print_exc()
    _finish(status)


def serve(path: str, client: str, registry: str) -> None:
    """The server: import :data:`PRELOAD`, then fork a child per request; report each child's
    end to its client, and kill the child's session when its client is gone. While a child
    runs, the file ``registry/CLIENT_PID`` holds its pid (see :meth:`WarmPython.settle`)."""
    import importlib
    import selectors
    import signal

    if sys.path[0] == str(Path(__file__).parent):  # put there to import this module
        del sys.path[0]
    for name in PRELOAD:
        importlib.import_module(name)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    clients: dict[int, Path] = {}  # child pid -> its registry file
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                conn, _ = listener.accept()
                try:
                    request, fds = _receive_request(conn)
                except (OSError, ValueError):
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    for fd in (wake_read, wake_write):
                        os.close(fd)
                    for other in (listener, conn, *children.values()):
                        other.close()
                    selector.close()
                    _become(request, fds, client)
                for fd in fds:
                    os.close(fd)
                children[pid] = conn
                clients[pid] = Path(registry) / str(request["pid"])
                clients[pid].with_suffix(".tmp").write_text(str(pid))
                clients[pid].with_suffix(".tmp").replace(clients[pid])
                try:
                    conn.sendall(struct.pack("!i", pid))
                    selector.register(conn, selectors.EVENT_READ, pid)
                except OSError:
                    _kill_session(pid)
            elif key.fileobj == wake_read:
                os.read(wake_read, 512)
                _reap(children, clients, selector)
            else:  # a client's connection: readable only when the client is gone
                selector.unregister(key.fileobj)
                _kill_session(key.data)


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _kill_session(pid: int) -> None:
    import signal

    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _reap(children: dict, clients: dict, selector) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        registered = clients.pop(pid, None)
        if registered is not None:
            registered.unlink(missing_ok=True)
        conn = children.pop(pid, None)
        if conn is None:
            continue
        try:
            selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        try:
            conn.sendall(struct.pack("!i", os.waitstatus_to_exitcode(status)))
        except OSError:
            pass
        conn.close()


class WarmPython:
    """A warm-process server and its clients: :attr:`python` stands for ``sys.executable``
    in ``-c``/``-m`` command lines, ``bin/synister`` for the ``synister`` command. Started on
    first use; ``SYNISTER_TEST_WARM=0`` in the environment gives cold processes instead."""

    def __init__(self):
        self.server: subprocess.Popen | None = None
        self.folder: Path | None = None
        self.enabled = os.environ.get("SYNISTER_TEST_WARM", "1") != "0"

    def _start(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="synister-warm-"))
        path = str(self.folder / "server.sock")
        for name, as_synister in (("python", False), ("synister", True)):
            client = self.folder / "bin" / name
            client.parent.mkdir(exist_ok=True)
            client.write_text(
                CLIENT.format(
                    real=sys.executable,
                    socket=path,
                    as_synister=as_synister,
                    cli=CLI_CODE,
                    forwarded=FORWARDED,
                )
            )
            client.chmod(0o755)
        (self.folder / "clients").mkdir()
        code = (
            f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import warm; "
            f"warm.serve({path!r}, {str(self.folder / 'bin' / 'python')!r}, "
            f"{str(self.folder / 'clients')!r})"
        )
        self.server = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        if self.server.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError("the warm Python server did not start")

    @property
    def python(self) -> str:
        if not self.enabled:
            return sys.executable
        if self.server is None:
            self._start()
        return str(self.folder / "bin" / "python")

    @property
    def bin(self) -> Path:
        """The folder of ``python`` and ``synister``, to put first on a script's PATH."""
        return Path(self.python).parent

    def cli(self) -> list[str]:
        """``synister`` as a command line of the warm Python."""
        return [self.python, "-c", CLI_CODE]

    def _commands(self) -> list[tuple[int, int]]:
        """(client pid, command pid) of the commands that run."""
        found = []
        for entry in (self.folder / "clients").glob("[0-9]*"):
            try:
                found.append((int(entry.name), int(entry.read_text())))
            except (OSError, ValueError):  # ended meanwhile
                pass
        return found

    def settle(self, timeout: float = 60) -> None:
        """SIGKILL every command whose client is gone, and the commands these started, and
        wait until they are gone: after a kill -9 of clients nothing of theirs runs on, as
        when cold processes are killed."""
        import time

        if self.server is None:
            return
        deadline = time.monotonic() + timeout
        while orphans := [c for p, c in self._commands() if not running(p) and running(c)]:
            for command in orphans:
                _kill_session(command)
            if time.monotonic() > deadline:
                raise TimeoutError(f"warm commands {orphans} still run after SIGKILL")
            time.sleep(0.01)

    def stop(self) -> None:
        import shutil

        if self.server is not None:
            for _, command in self._commands():
                _kill_session(command)
            self.server.kill()
            self.server.wait()
            self.server.stdout.close()
            self.server = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


#: the session's warm Python (the conftest stops it at the end)
WARM = WarmPython()
