"""Private services a fault-injection run may stop, kill and restart (never the machine's shared ones).

    PrivatePostgres  a cluster of our own: initdb into a temp folder, pg_ctl on a free port
                     (as the `postgres` user when we are root: initdb refuses root)
    PrivateRedis     redis-server on a free port (no persistence by default: a restart loses every
                     queued message, the worst case for the job outbox)
    MotoS3           moto's standalone S3 server on a free port
    FaultProxy       a TCP proxy in front of a service that can pass, refuse (unreachable) or cut
                     each connection after a few bytes (a transfer dying half-way)
    ApiServer        one `uvicorn authops.app:create_app` process
    WorkerSet        real `celery worker` processes (tests/support/workers.py) that may be SIGKILLed
                     at any moment and started again, as a supervisor would

Everything lives in one folder the caller owns and is stopped by `close()` / the context manager.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.workers import REPO_ROOT, pool_children, running_worker, tail

PG_BIN_ROOT = Path("/usr/lib/postgresql")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _wait(check, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not after {timeout:.0f} s" + (f":\n{tail(log)}" if log else ""))
        time.sleep(0.05)


def missing_tools() -> str | None:
    """Why the private services cannot run here, or None."""
    if not sorted(PG_BIN_ROOT.glob("*/bin/initdb")):
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed under /usr/lib/postgresql"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    return None


# --- PostgreSQL ------------------------------------------------------------------------------------

class PrivatePostgres:
    """A throwaway cluster: `start()`, `stop(mode)` ('fast' or 'immediate', a crash), `url(db)`."""

    def __init__(self, port: int | None = None) -> None:
        bins = sorted(PG_BIN_ROOT.glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
        if not bins:
            raise RuntimeError(missing_tools())
        self.bin = bins[-1].parent
        # Its own folder straight under /tmp: the postgres user must reach it (a caller's 0700
        # temp folder would stop it).
        self.folder = Path(tempfile.mkdtemp(prefix="authops-faults-pg-"))
        self.data = self.folder / "pgdata"
        self.log = self.folder / "postgres.log"
        self.port = port or free_port()
        self.user = "postgres" if os.geteuid() == 0 else None  # run as postgres when we are root

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin / cmd[0]), *cmd[1:]]
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, cwd="/", timeout=120)
        if check and done.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")
        return done

    def init(self) -> PrivatePostgres:
        if self.user:
            shutil.chown(self.folder, self.user)
            os.chmod(self.folder, 0o755)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            # fsync off: a stopped or crashed *process* loses nothing (the OS page cache survives),
            # and this folder dies with the run anyway.
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.folder}'\nfsync = off\nfull_page_writes = off\n"
                       "max_connections = 200\nshared_buffers = 64MB\n")
        return self

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        _wait(lambda: port_open(self.port), 30, f"PostgreSQL on port {self.port}", self.log)

    def stop(self, mode: str = "fast") -> None:
        """'fast': clean shutdown (clients are disconnected); 'immediate': as a crash (recovery on start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)
        _wait(lambda: not port_open(self.port), 30, f"PostgreSQL on port {self.port} stopped", self.log)

    @property
    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        from sqlalchemy import create_engine, text

        admin = create_engine(self.url().replace("postgresql://", "postgresql+psycopg://"),
                              isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)

    def close(self) -> None:
        if self.data.exists():
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


# --- Redis -----------------------------------------------------------------------------------------

class PrivateRedis:
    """redis-server on a port of our own; `kill()` is SIGKILL, `start()` brings it back on the same port."""

    def __init__(self, folder: Path, port: int | None = None, *, persistent: bool = False) -> None:
        self.folder = Path(folder)
        self.port = port or free_port()
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.folder / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
                       else ["--appendonly", "no"])
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir",
               str(self.folder), "--daemonize", "no", "--protected-mode", "yes", *persistence]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        _wait(lambda: port_open(self.port) or self.proc.poll() is not None, 30, f"redis on port {self.port}",
              self.log)
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{tail(self.log)}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        _wait(lambda: not port_open(self.port), 10, f"redis on port {self.port} gone")

    def close(self) -> None:
        self.kill()


# --- S3 and a proxy that breaks connections -------------------------------------------------------

class MotoS3:
    """moto's S3 server (in memory) on a free port."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = Path(folder)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.folder / "moto.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:  # moto logs every request: to a file, never to a pipe
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(self.port), "-H",
                                          "127.0.0.1"], stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited early:\n{tail(self.log)}")
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).close()
                return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False
        _wait(ready, 90, f"moto server on {self.url}", self.log)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class FaultProxy:
    """A TCP proxy on its own port in front of 127.0.0.1:`upstream`, in a thread of this process.

    mode "pass": bytes flow both ways. "down": the service is unreachable: open connections are
    reset and new ones refused (the listening socket is closed). "cut": each new connection is
    reset after a random few bytes (`cut_bytes`) of the request reached the service, or of the
    answer reached the client, so uploads and downloads die half-way; open ones are reset at once.

    `hold(pattern)`: the next request whose bytes contain `pattern` (e.g. b"PUT /bucket/key") is
    held, not forwarded, until `release()`; the returned event is set once it is held. One request
    only: every other passes.
    """

    def __init__(self, upstream: int, port: int | None = None, *, cut_bytes: tuple[int, int] = (64, 4096),
                 seed: int = 0) -> None:
        self.upstream = upstream
        self.port = port or free_port()
        self.cut_bytes = cut_bytes
        self.rng = random.Random(seed)
        self.mode = "pass"
        self.counts = {"connections": 0, "cut": 0, "reset": 0}
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._hold: bytes | None = None
        self.held = threading.Event()
        self._released = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._listen()
        return self

    def _listen(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), name="fault-proxy", daemon=True).start()

    def hold(self, pattern: bytes) -> threading.Event:
        with self._lock:
            self._hold = pattern
            self.held.clear()
            self._released.clear()
        return self.held

    def release(self) -> None:
        with self._lock:
            self._hold = None
        self._released.set()

    def set_mode(self, mode: str) -> None:
        if mode not in ("pass", "down", "cut"):
            raise ValueError(mode)
        with self._lock:
            previous, self.mode = self.mode, mode
        if mode in ("down", "cut"):
            self._reset_all()
        if mode == "down" and self._listener is not None:
            listener, self._listener = self._listener, None
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if mode != "down" and previous == "down" and self._listener is None:
            self._listen()

    def _reset_all(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            self._reset(conn)

    def _reset(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            # SO_LINGER 0: close sends RST, as a dead host or a dropped route would look to the peer.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            conn.close()
        with self._lock:
            if conn in self._conns:
                self._conns.discard(conn)
                self.counts["reset"] += 1

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: mode "down" or close()
            with self._lock:
                mode = self.mode
                self.counts["connections"] += 1
            if mode == "down":
                self._reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except OSError:
                self._reset(client)
                continue
            upstream.settimeout(None)
            up, down = ((self.rng.randint(*self.cut_bytes), self.rng.randint(*self.cut_bytes) * 4)
                        if mode == "cut" else (None, None))
            with self._lock:
                self._conns.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, up, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, down), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, budget: int | None, request: bool = False) -> None:
        try:
            while True:
                data = src.recv(65536)
                if request and self._hold is not None:
                    with self._lock:
                        hit = self._hold is not None and self._hold in data
                        if hit:
                            self._hold = None
                    if hit:
                        self.held.set()
                        self._released.wait()
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                if budget is not None and len(data) >= budget:
                    with contextlib.suppress(OSError):
                        dst.sendall(data[:budget])
                    with self._lock:
                        self.counts["cut"] += 1
                    self._reset(src)
                    self._reset(dst)
                    return
                if budget is not None:
                    budget -= len(data)
                dst.sendall(data)
        except OSError:
            self._reset(src)
            self._reset(dst)

    def close(self) -> None:
        self.release()
        self.set_mode("down")


# --- API and worker processes ----------------------------------------------------------------------

class ApiServer:
    """`uvicorn authops.app:create_app --factory` on a free port with `env`."""

    def __init__(self, env: dict[str, str], folder: Path, name: str = "api") -> None:
        self.env = env
        self.port = free_port()
        self.log = Path(folder) / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        cmd = [sys.executable, "-m", "uvicorn", "authops.app:create_app", "--factory", "--host", "127.0.0.1",
               "--port", str(self.port), "--no-access-log", "--log-level", "warning"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"API server exited with {self.proc.returncode}:\n{tail(self.log)}")
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1).close()
                return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False
        _wait(ready, timeout, f"API server on {self.url}", self.log)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class WorkerSet:
    """`count` celery workers (prefork, `concurrency` each) that may be SIGKILLed and started again."""

    def __init__(self, env: dict[str, str], count: int = 2, concurrency: int = 1, prefix: str = "fault") -> None:
        self.env, self.count, self.concurrency, self.prefix = env, count, concurrency, prefix
        self.stack = contextlib.ExitStack()
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.generation = 0
        self.all: list[subprocess.Popen[bytes]] = []

    def start(self) -> WorkerSet:
        threads = [threading.Thread(target=self.start_one, args=(f"{self.prefix}{i + 1}",))
                   for i in range(self.count) if f"{self.prefix}{i + 1}" not in self.workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        missing = [f"{self.prefix}{i + 1}" for i in range(self.count) if f"{self.prefix}{i + 1}" not in self.workers]
        if missing:
            raise RuntimeError(f"workers {missing} did not start; see {self.logs()}")
        return self

    def start_one(self, slot: str) -> subprocess.Popen[bytes]:
        self.generation += 1
        name = f"{slot}-g{self.generation}"
        proc = self.stack.enter_context(running_worker(self.env, concurrency=self.concurrency, name=name))
        self.workers[slot] = proc
        self.all.append(proc)
        return proc

    def kill(self, slot: str, *, whole: bool = True) -> list[int]:
        """SIGKILL the worker in `slot`: its main process and pool processes at once (whole), or one
        pool process (the main process forks a new one). Returns the pids killed."""
        proc = self.workers[slot]
        pool = pool_children(proc.pid)
        pids = [proc.pid, *pool] if whole else pool[:1]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if whole:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            del self.workers[slot]
        return pids

    def logs(self) -> str:
        return ", ".join(str(getattr(p, "log_path", "?")) for p in self.all)

    def log_tails(self, chars: int = 3000) -> str:
        paths = [p.log_path for p in self.all]  # type: ignore[attr-defined]
        return "\n".join(f"--- {path.name} ---\n{tail(path, chars)}" for path in paths)

    def close(self) -> None:
        # A throwaway world: no warm shutdown (it waits for tasks and the maintenance loop).
        for proc in self.workers.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.stack.close()

