"""The jail partner code runs in: bubblewrap, a per-slot unprivileged uid, rlimits, seccomp.

The trusted worker (root) starts, for each job:
    choom -n 1000 (under memory pressure the kernel's OOM killer picks the job, not the worker)
    -> bwrap (mount/pid/net/ipc/uts/cgroup namespaces, read-only /usr and Python, one read-only
              bind per input file, size-limited tmpfs at /tmp and /out, seccomp deny list)
    -> prlimit (CPU, address space, processes, open files, file size, no core)
    -> setpriv (uid/gid 61000+slot, no groups, no capabilities, no_new_privs)
    -> python -I -S -B /job/runner.py /job/job.json             (authops.sandbox.jail_runner)
The worker enforces wall time and the jail's total memory (PSS) by polling the jail's /proc.
No user namespace: bwrap started by root would map only uid 0 into one, and a job running as
(kernel) uid 0 ignores RLIMIT_NPROC. So the jail drops to a real, dedicated uid per slot, and
seccomp stops it from creating user namespaces of its own.

Outputs come back over a pipe (see jail_runner), are checked here and written by this process
into the output folder: the jail has no writable host path at all. The partner sees only
`JailResult.partner_view()`; captured stdout/stderr are for operators.
"""

from __future__ import annotations

import builtins
import dataclasses
import enum
import functools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

from authops.core.errors import ConfigurationError, Conflict, InvalidInput, Unavailable
from authops.sandbox import jail_runner, seccomp

NAME = jail_runner.NAME
SETPRIV, PRLIMIT, CHOOM = "/usr/bin/setpriv", "/usr/bin/prlimit", "/usr/bin/choom"
_BUILTIN_EXCEPTIONS = frozenset(n for n, v in vars(builtins).items()
                                if isinstance(v, type) and issubclass(v, BaseException))
_MB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class JailConfig:
    """Limits for one job. memory_mb is RLIMIT_AS per process and the jail's total PSS."""

    cpu_seconds: int = 60
    wall_seconds: float = 120.0
    memory_mb: int = 1024
    nproc: int = 64          # processes + threads of the slot's uid
    nofile: int = 256
    scratch_mb: int = 256    # /tmp tmpfs
    output_mb: int = 256     # /out tmpfs, and the most the worker accepts back
    max_outputs: int = 16
    capture_bytes: int = 64 * 1024  # of stdout and of stderr, kept for operators
    base_uid: int = 61000
    bwrap: str = "bwrap"


class JailStatus(enum.StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    KILLED = "killed"
    OUTPUT_INVALID = "output_invalid"


@dataclasses.dataclass
class JailResult:
    status: JailStatus
    summary: str  # redacted: built from fixed phrases, checked names and numbers only
    duration_s: float
    peak_memory_mb: float | None
    outputs: dict[str, Path]  # names are partner-chosen: data for the release gate, not labels
    cpu_seconds: float = 0.0
    exit_code: int | None = None
    operator_stdout: bytes = dataclasses.field(default=b"", repr=False)
    operator_stderr: bytes = dataclasses.field(default=b"", repr=False)

    def partner_view(self) -> dict[str, Any]:
        """What may be shown to the partner: coarse figures, no names, no captured text."""
        return {"status": self.status.value, "summary": self.summary,
                "duration_s": round(self.duration_s),
                "peak_memory_mb": None if self.peak_memory_mb is None
                else 16 * round(self.peak_memory_mb / 16),
                "output_count": len(self.outputs)}


# --- host checks -------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _check_host(bwrap: str) -> str:
    """bwrap's path once the host can run a jail; a clear error naming what is missing."""
    path = shutil.which(bwrap)
    if not path:
        raise ConfigurationError(f"bubblewrap is not installed ({bwrap!r} not on PATH): "
                                 "apt-get install bubblewrap")
    for tool in (SETPRIV, PRLIMIT, CHOOM):
        if not os.access(tool, os.X_OK):
            raise ConfigurationError(f"{tool} is missing: apt-get install util-linux")
    if os.geteuid() != 0:
        raise ConfigurationError(
            "the jail must be started by root: it drops each job to a dedicated uid (base_uid + "
            "slot) so that RLIMIT_NPROC applies; run the sandbox worker as root")
    probe = subprocess.run(
        [path, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
         "--unshare-cgroup", "--ro-bind", "/", "/", "--", "/usr/bin/true"],
        capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    if probe.returncode != 0:
        raise Unavailable(
            "the kernel refused bubblewrap's namespaces (mount, pid, net, ipc, uts, cgroup): "
            f"{probe.stderr.strip()[:300]}. In a container, the worker needs CAP_SYS_ADMIN and a "
            "seccomp/AppArmor profile that allows mount() and unshare()")
    seccomp.build_filter_bpf()  # fails early with a ConfigurationError if libseccomp is missing
    return path


@functools.lru_cache(maxsize=1)
def _python_layout() -> tuple[list[str], str, dict[str, str], list[str]]:
    """(bwrap binds, python path inside, extra env, site dirs inside) for this interpreter."""
    binds, env, sites = [], {}, []
    exe, base = Path(sys.executable).resolve(), Path(sys.base_prefix).resolve()
    inside_exe = str(exe)
    if base.parts[1:2] != ("usr",):  # e.g. pyenv under /root: bind the installation alone
        binds += ["--ro-bind", str(base), "/opt/python"]
        inside_exe = str(Path("/opt/python") / exe.relative_to(base))
        env["LD_LIBRARY_PATH"] = "/opt/python/lib"  # its RUNPATH names the host path
    paths = sysconfig.get_paths()
    for i, site in enumerate(dict.fromkeys(paths[k] for k in ("purelib", "platlib"))):
        real = Path(site).resolve()
        inside = str(real) if real.parts[1:2] == ("usr",) else f"/opt/site-packages-{i}"
        if inside != str(real):
            binds += ["--ro-bind", str(real), inside]
        sites.append(inside)
    return binds, inside_exe, env, sites


# --- processes of a slot's uid ---------------------------------------------------------------

def _proc_uids(pid: int | str) -> set[int]:
    """Real, effective, saved and fs uid of a process (empty if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            return {int(x) for x in next(ln for ln in f if ln.startswith(b"Uid:")).split()[1:]}
    except (OSError, StopIteration, ValueError):
        return set()


def _uid_pids(uid: int) -> list[int]:
    """Every process running as the slot's uid: all of them belong to its job."""
    return [int(e.name) for e in os.scandir("/proc")
            if e.name.isdigit() and uid in _proc_uids(e.name)]


_TICK = os.sysconf("SC_CLK_TCK")


def _sample(ns_proc: str, cpu: dict[str, float], uid: int) -> tuple[float, float]:
    """(total PSS, largest peak RSS) in MB over the jail's processes; records their CPU seconds.

    `ns_proc` is the jail's own procfs seen from here (/proc/<its pid 1>/root/proc): it lists
    exactly the jail's pid namespace, so the cost follows the job, not the host. Only processes
    running as the slot's uid count: until bwrap has mounted the jail's procfs, that path still
    shows the host's. Sampled, because bwrap's reaper does not pass rusage on."""
    pss_kb = hwm_kb = 0
    try:
        entries = [e for e in os.scandir(ns_proc) if e.name.isdigit()]
    except OSError:  # the jail has just ended
        entries = []
    for entry in entries:
        try:
            with open(f"{entry.path}/status", "rb") as f:
                status = f.read().splitlines()
            real_uid = next(int(ln.split()[1]) for ln in status if ln.startswith(b"Uid:"))
            if real_uid != uid:
                continue
            with open(f"{entry.path}/smaps_rollup", "rb") as f:
                pss_kb += next((int(ln.split()[1]) for ln in f if ln.startswith(b"Pss:")), 0)
            hwm_kb = max(hwm_kb, next((int(ln.split()[1]) for ln in status if ln.startswith(b"VmHWM:")), 0))
            with open(f"{entry.path}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            cpu[entry.name] = (int(fields[11]) + int(fields[12])) / _TICK
        except (OSError, ValueError, IndexError, StopIteration):
            continue
    return pss_kb / 1024, hwm_kb / 1024


def _kill_uid(uid: int, *, wait_s: float = 5.0) -> None:
    """SIGKILL every process of the slot's uid and wait until none is left."""
    deadline = time.monotonic() + wait_s
    while (pids := _uid_pids(uid)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue
            try:  # the pidfd pins the process: re-check it is still ours, then signal that one
                if uid in _proc_uids(pid):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except OSError:
                pass
            finally:
                os.close(pidfd)
        time.sleep(0.02)


# --- the job --------------------------------------------------------------------------------

def _data_fd(data: bytes) -> int:
    fd = os.memfd_create("authops-jail")
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _check_inputs(inputs: dict[str, Path], uid: int) -> dict[str, Path]:
    checked = {}
    for name, path in inputs.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise InvalidInput(f"input name {name!r} must be an identifier (letters, digits, _)")
        path = Path(path)
        if not path.is_file():
            raise InvalidInput(f"input {name!r} is not a file: {path}")
        st = path.stat()
        if not (st.st_mode & 0o004 or (st.st_uid == uid and st.st_mode & 0o400)
                or (st.st_gid == uid and st.st_mode & 0o040)):
            raise ConfigurationError(
                f"input {name!r} ({path}) is not readable by the jail's uid {uid}: write "
                "decrypted inputs with mode 0644 inside a private 0700 folder")
        checked[name] = path
    return checked


def _command(config: JailConfig, bwrap: str, uid: int, inputs: dict[str, Path],
             fds: dict[str, int]) -> list[str]:
    py_binds, python, py_env, _ = _python_layout()
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "ARROW_IO_THREADS": "1", **py_env}
    cmd = [CHOOM, "-n", "1000", "--",  # under memory pressure the kernel kills the job first
           bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
           "--unshare-cgroup", "--die-with-parent", "--new-session", "--hostname", "jail",
           "--clearenv", *[a for k, v in env.items() for a in ("--setenv", k, v)],
           "--cap-drop", "ALL",  # what setpriv needs to drop to the slot's uid, nothing more
           *[a for c in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP") for a in ("--cap-add", c)],
           "--ro-bind", "/usr", "/usr"]
    for top in (Path("/") / t for t in ("bin", "sbin", "lib", "lib64", "lib32", "libx32")):
        if top.is_symlink():
            cmd += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            cmd += ["--ro-bind", str(top), str(top)]
    cmd += ["--info-fd", str(fds["info"]),  # its pid 1, whose procfs the watchdog reads
            "--perms", "0755", "--dir", "/etc", "--ro-bind-try", "/etc/ld.so.cache",
            "/etc/ld.so.cache", "--ro-bind-try", "/etc/localtime", "/etc/localtime",
            "--perms", "0755", "--dir", "/opt", *py_binds, "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", str(config.scratch_mb * _MB), "--tmpfs", "/tmp",
            "--perms", "1777", "--size", str(config.output_mb * _MB), "--tmpfs", "/out",
            "--perms", "0755", "--dir", "/in",
            *[a for n, p in inputs.items() for a in ("--ro-bind", str(p), f"/in/{n}.parquet")],
            "--perms", "0755", "--dir", "/job"]
    for fd_name, dest in (("runner", "runner.py"), ("code", "partner.py"), ("job", "job.json")):
        cmd += ["--perms", "0444", "--ro-bind-data", str(fds[fd_name]), f"/job/{dest}"]
    fsize = max(config.scratch_mb, config.output_mb) * _MB
    return cmd + [
        "--chdir", "/tmp", "--remount-ro", "/", "--seccomp", str(fds["seccomp"]), "--",
        PRLIMIT, f"--cpu={config.cpu_seconds}:{config.cpu_seconds + 1}",
        f"--as={config.memory_mb * _MB}", f"--nproc={config.nproc}", f"--nofile={config.nofile}",
        f"--fsize={fsize}", "--core=0", "--",
        SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
        "--bounding-set=-all", "--no-new-privs", "--",
        python, "-I", "-S", "-B", "/job/runner.py", "/job/job.json"]


def run_partner_code(code: str, inputs: dict[str, Path], params: dict, *,
                     config: JailConfig | None = None, slot: int = 0,
                     output_dir: Path | None = None) -> JailResult:
    """Run the partner's `run(inputs, params)` in a jail; outputs land in output_dir (or a new
    private temporary folder the caller removes).

    Each concurrent job on a host needs its own slot (uid base_uid + slot): RLIMIT_NPROC counts
    every process of that uid, and the end of a job kills them all.
    Inputs are bound one file each, read-only; they must be readable by that uid."""
    config = config or JailConfig()
    bwrap = _check_host(config.bwrap)
    if not 0 <= slot < 4096:
        raise InvalidInput("slot must be between 0 and 4095")
    uid = config.base_uid + slot
    inputs = _check_inputs(inputs, uid)
    try:
        params_json = json.loads(json.dumps(params))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"params must be JSON-serialisable: {exc}") from exc
    if _uid_pids(uid):
        raise Conflict(f"jail slot {slot} (uid {uid}) is still in use")
    (chan_r, chan_w), (info_r, info_w) = os.pipe(), os.pipe()
    _, _, _, sites = _python_layout()
    job = {"channel_fd": chan_w, "site": sites, "params": params_json,
           "max_outputs": config.max_outputs,
           "inputs": {n: f"/in/{n}.parquet" for n in inputs}}
    fds = {"seccomp": seccomp.filter_fd(), "info": info_w,
           "runner": _data_fd(Path(jail_runner.__file__).read_bytes()),
           "code": _data_fd(code.encode()), "job": _data_fd(json.dumps(job).encode())}
    started = time.monotonic()
    try:  # bwrap gets a minimal environment too: its /proc/<pid>/environ holds nothing
        proc = subprocess.Popen(
            _command(config, bwrap, uid, inputs, fds), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(chan_w, *fds.values()),
            env={"PATH": "/usr/bin:/bin"}, process_group=0)
    except BaseException:
        os.close(chan_r)
        os.close(info_r)
        raise
    finally:
        for fd in (chan_w, *fds.values()):
            os.close(fd)
    try:
        watch = _watch(proc, {"channel": chan_r, "info": info_r}, config, uid, started)
    finally:
        os.close(chan_r)
        os.close(info_r)
        if proc.returncode is None:  # _watch failed: take bwrap and its namespace down
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _kill_uid(uid)  # nothing of the job may outlive it
    watch["duration"] = time.monotonic() - started
    return _result(watch, code, config, output_dir)


def _watch(proc: subprocess.Popen, reads: dict[str, int], config: JailConfig, uid: int,
           started: float) -> dict[str, Any]:
    """Drain the pipes (bounded), enforce wall time and the jail's total memory, reap bwrap."""
    limits = {"stdout": config.capture_bytes, "stderr": config.capture_bytes,
              "channel": config.output_mb * _MB + 65536, "info": 4096}
    bufs = {k: bytearray() for k in limits}
    sel = selectors.DefaultSelector()
    for name, fd in (("stdout", proc.stdout.fileno()), ("stderr", proc.stderr.fileno()),
                     *reads.items()):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ, name)
    deadline = started + config.wall_seconds
    reason, status, peak, next_sample, exited_at, ns_proc = None, None, 0.0, 0.0, None, None
    cpu: dict[str, float] = {}
    while sel.get_map() or status is None:
        now = time.monotonic()
        if reason is None and now >= deadline:
            reason = "wall"
        elif reason is None and now >= next_sample and ns_proc and status is None:
            total, largest = _sample(ns_proc, cpu, uid)
            peak, next_sample = max(peak, total, largest), now + 0.1
            if total > config.memory_mb:
                reason = "memory"
        if reason and status is None:
            os.killpg(proc.pid, signal.SIGKILL)  # bwrap; --die-with-parent takes its pid 1 and
            _kill_uid(uid, wait_s=1.0)           # so the whole pid namespace with it
        if exited_at and now - exited_at > 2.0:  # pipes held open past the end: give up on them
            break
        for key, _ in sel.select(timeout=0.05):
            try:
                data = os.read(key.fd, 1 << 16)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(key.fd)
                if key.data == "info" and bufs["info"]:  # bwrap's --info-fd: {"child-pid": ...}
                    ns_proc = f"/proc/{int(json.loads(bufs['info'])['child-pid'])}/root/proc"
                continue
            buf, room = bufs[key.data], limits[key.data] - len(bufs[key.data])
            buf += data[:max(room, 0)]
            if len(data) > room and key.data == "channel" and reason is None:
                reason = "overflow"
        if status is None:
            pid, wstatus = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                status, exited_at = wstatus, time.monotonic()
    sel.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    proc.stderr.close()
    return {"reason": reason, "exit": proc.returncode, "peak": peak or None,
            "cpu": sum(cpu.values()), "cpu_max": max(cpu.values(), default=0.0),
            "stdout": bytes(bufs["stdout"]), "stderr": bytes(bufs["stderr"]),
            "channel": bufs["channel"]}


def _result(w: dict[str, Any], code: str, config: JailConfig,
            output_dir: Path | None) -> JailResult:
    """Classify the run. Everything the runner sent is untrusted: summaries use fixed phrases,
    the nearest built-in exception name and a line number within the partner's code only."""
    rc, outputs = w["exit"], {}

    def done(status: JailStatus, summary: str) -> JailResult:
        return JailResult(status, summary, w["duration"],
                          None if w["peak"] is None else round(w["peak"], 1), outputs,
                          cpu_seconds=round(w["cpu"], 2), exit_code=rc,
                          operator_stdout=w["stdout"], operator_stderr=w["stderr"])

    ended = "the job's process ended before run() returned"
    stopped = {
        "wall": (JailStatus.TIMEOUT, f"stopped at the wall-time limit of {config.wall_seconds:g}s"),
        "memory": (JailStatus.MEMORY, f"stopped at the memory limit of {config.memory_mb} MB"),
        "overflow": (JailStatus.OUTPUT_INVALID, f"outputs exceeded {config.output_mb} MB")}
    if w["reason"]:
        return done(*stopped[w["reason"]])
    if rc == 128 + signal.SIGXCPU or (rc == 128 + signal.SIGKILL  # SIGXCPU ignored: hard limit
                                      and w["cpu_max"] >= config.cpu_seconds):
        return done(JailStatus.TIMEOUT, f"stopped at the CPU-time limit of {config.cpu_seconds} s")
    try:
        frames, status = jail_runner.read_frames(w["channel"], config.max_outputs)
    except ValueError:
        if rc > 128:
            return done(JailStatus.KILLED, "the job's process was killed before it finished")
        return done(JailStatus.ERROR, ended) if rc else \
            done(JailStatus.OUTPUT_INVALID, "the job sent back something other than Parquet")
    kind, exc, line, at = (status.get(k) for k in ("status", "exc", "line", "stage"))
    if kind == "memory":
        return done(JailStatus.MEMORY, f"MemoryError: the memory limit is {config.memory_mb} MB")
    if kind == "error":
        where = (f" at line {line} of your code"
                 if type(line) is int and 1 <= line <= code.count("\n") + 1 else "")
        stage = {"load": " while loading inputs", "import": " while loading your code"}
        exc = exc if isinstance(exc, str) and exc in _BUILTIN_EXCEPTIONS else "Exception"
        at = stage.get(at, "") if isinstance(at, str) else ""
        return done(JailStatus.ERROR, exc + where + at)
    if kind == "output_invalid":
        return done(JailStatus.OUTPUT_INVALID, "run() must return a DataFrame or a dict of up to "
                    f"{config.max_outputs} DataFrames with identifier names, writable as Parquet "
                    f"within {config.output_mb} MB")
    if kind != "ok" or rc != 0 or not frames:
        return done(JailStatus.ERROR, ended)
    folder = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="authops-jail-"))
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in frames:
        path = folder / f"{name}.parquet"
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                               0o600), "wb") as f:
            f.write(body)
        outputs[name] = path
    return done(JailStatus.OK, f"run() returned {len(outputs)} output(s)")
