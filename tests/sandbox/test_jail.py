"""Escape probes against the partner-code jail (bubblewrap + per-slot uid + rlimits + seccomp).

Each probe is partner code. It reports what it managed to do by returning a DataFrame (which
the release gate would inspect; here the test reads it), and every probe checks three things:
the attempt was contained, the worker survives (nothing of the slot's uid is left running,
and the next job still runs), and no input value shows in what the partner is shown.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import textwrap
import threading
from pathlib import Path

import pandas as pd
import pytest

from authops.core.errors import ConfigurationError
from authops.sandbox import jail as jail_mod
from authops.sandbox.jail import JailConfig, JailResult, JailStatus, run_partner_code
from tests.support.services import services_required

ROWS = ["ZHANG-SAN-110101199001011234", "LI-SI-310101198502023456", "WANG-WU-440101197003034567"]
REPO = Path(__file__).resolve().parents[2]
SLOT = 1000 + os.getpid() % 3000  # a slot (uid) of its own: parallel test runs must not collide
LIMITS = JailConfig(cpu_seconds=3, wall_seconds=30, memory_mb=768, nproc=32, nofile=64,
                    scratch_mb=16, output_mb=8)


def _jail_missing() -> str | None:
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    if os.geteuid() != 0:
        return "the jail is started by root (it drops each job to a per-slot uid)"
    return None


if (_why := _jail_missing()) and services_required():
    pytest.fail(_why + " and AUTHOPS_REQUIRE_SERVICES=1", pytrace=False)
pytestmark = pytest.mark.skipif(_why is not None, reason=_why or "")


@pytest.fixture(scope="module")
def people(tmp_path_factory) -> Path:
    """Decrypted input as the worker writes it: 0644 file in a private 0700 folder."""
    folder = tmp_path_factory.mktemp("job-inputs")
    folder.chmod(0o700)
    path = folder / "people.parquet"
    frame = pd.DataFrame({"name": ROWS, "city": ["bj", "sh", "bj"], "amount": [10, 20, 30]})
    frame.to_parquet(path)
    path.chmod(0o644)
    return path


def jail(code: str, people: Path, *, config: JailConfig = LIMITS, params: dict | None = None,
         tmp_path: Path | None = None) -> JailResult:
    out = (tmp_path / "out") if tmp_path else None
    result = run_partner_code(textwrap.dedent(code), {"people": people}, params or {},
                              config=config, slot=SLOT, output_dir=out)
    uid = config.base_uid + SLOT
    assert jail_mod._uid_pids(uid) == [], "a process of the job outlived it"
    shown = json.dumps(result.partner_view())
    assert not any(row in shown for row in ROWS), shown
    assert not any(part in shown for row in ROWS for part in row.split("-")[:2])
    return result


def report(result: JailResult) -> dict[str, str]:
    """The probe's own findings: a frame of (probe, outcome) returned as its output."""
    assert result.status is JailStatus.OK, (result, result.operator_stderr.decode()[-2000:])
    frame = pd.read_parquet(result.outputs["result"])
    shutil.rmtree(result.outputs["result"].parent)
    return dict(zip(frame["probe"], frame["outcome"]))


def worker_still_runs_jobs(people: Path) -> None:
    result = jail("def run(inputs, params):\n    return inputs['people'][['city']]\n", people)
    assert result.status is JailStatus.OK
    shutil.rmtree(result.outputs["result"].parent)


PROBE_HELPERS = '''
import ctypes, errno, os, pandas as pd
found = []
def attempt(name, fn):
    try:
        out = fn()
        found.append((name, "done" if out is None else "done:" + str(out)[:400]))
    except OSError as exc:
        found.append((name, errno.errorcode.get(exc.errno, type(exc).__name__)))
    except Exception as exc:
        found.append((name, type(exc).__name__))
def frame():
    return pd.DataFrame(found, columns=["probe", "outcome"])
libc = ctypes.CDLL(None, use_errno=True)
def call(fn, *args):
    if fn(*args) == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return "returned"
'''


def test_happy_path_group_by(people, tmp_path):
    result = jail("""
        def run(inputs, params):
            df = inputs["people"]
            return df.groupby("city", as_index=False)["amount"].sum().sort_values("city")
    """, people, tmp_path=tmp_path)
    assert result.status is JailStatus.OK and result.summary == "run() returned 1 output(s)"
    assert result.outputs["result"].parent == tmp_path / "out"
    got = pd.read_parquet(result.outputs["result"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, pd.DataFrame({"city": ["bj", "sh"], "amount": [40, 20]}))
    assert 0 < result.duration_s < 30 and result.peak_memory_mb


def test_network_is_unreachable(people):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[object] = []
    listener.settimeout(0.2)

    def accept() -> None:
        for _ in range(60):
            try:
                accepted.append(listener.accept())
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    found = report(jail(PROBE_HELPERS + f"""
import socket
def run(inputs, params):
    attempt("tcp 127.0.0.1:5432", lambda: socket.create_connection(("127.0.0.1", 5432), 1))
    attempt("tcp host listener", lambda: socket.create_connection(("127.0.0.1", {port}), 1))
    attempt("tcp 1.1.1.1:443", lambda: socket.create_connection(("1.1.1.1", 443), 1))
    attempt("udp 8.8.8.8:53", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("8.8.8.8", 53)))
    attempt("tcp6 ::1", lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
    attempt("dns", lambda: socket.getaddrinfo("example.com", 443))
    attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
    attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
    attempt("interfaces", lambda: sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]))
    return frame()
""", people))
    listener.close()
    assert accepted == []
    for probe in ("tcp 127.0.0.1:5432", "tcp host listener", "tcp 1.1.1.1:443", "udp 8.8.8.8:53",
                  "tcp6 ::1", "netlink", "packet"):
        assert found[probe] == "EPERM", (probe, found[probe])  # seccomp
    assert found["dns"] in {"gaierror", "EPERM"}
    assert found["interfaces"] == "done:['lo']"  # and a network namespace with nothing in it


def test_paths_outside_the_inputs_are_invisible(people):
    found = report(jail(PROBE_HELPERS + f"""
import glob
PATHS = ["/etc/shadow", "/etc/passwd", "/root", "/home", "/var", "/work", "/sys", {str(REPO)!r},
         {str(people)!r}, {str(people.parent)!r}, "/proc/1/environ", "/proc/1/root/etc/shadow"]
def read(path):
    if os.path.isdir(path):
        return "listed:" + ",".join(sorted(os.listdir(path)))
    with open(path, "rb") as f:
        return "read:%d" % len(f.read())
def run(inputs, params):
    for path in PATHS:
        attempt(path, lambda: read(path))
    others = [p for p in glob.glob("/proc/[0-9]*/environ") if p.split("/")[2] != str(os.getpid())]
    for path in others:
        attempt("other " + path, lambda: read(path))
    attempt("/ listing", lambda: sorted(os.listdir("/")))
    attempt("/in listing", lambda: sorted(os.listdir("/in")))
    return frame()
""", people))
    for path in ("/etc/shadow", "/etc/passwd", "/root", "/home", "/var", "/work", "/sys",
                 str(REPO), str(people), str(people.parent)):
        assert found[path] == "ENOENT", (path, found[path])
    assert found["/proc/1/environ"] == "EACCES"  # the pid namespace's init: bwrap, root
    assert found["/proc/1/root/etc/shadow"] == "EACCES"
    assert all(v == "EACCES" for k, v in found.items() if k.startswith("other /proc/"))
    # / is bwrap's read-only tmpfs; /opt holds the Python installation and its site-packages
    assert set(found["/ listing"].removeprefix("done:").strip("[]").replace("'", "").split(", ")) \
        <= {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "opt", "dev", "proc",
            "tmp", "out", "in", "job"}
    assert found["/in listing"] == "done:['people.parquet']"


def test_environment_holds_no_secrets(people, monkeypatch):
    secrets = {"AUTHOPS_MASTER_KEY": "mk-0123456789abcdef", "AWS_SECRET_ACCESS_KEY": "aws-s3cr3t",
               "DB_PASSWORD": "pg-pa55word", "PARTNER_API_KEY": "api-k3y", "MINIO_SECRET": "m1n10"}
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    found = report(jail(PROBE_HELPERS + """
def run(inputs, params):
    attempt("names", lambda: ",".join(sorted(os.environ)))
    attempt("self environ", lambda: open("/proc/self/environ", "rb").read().decode())
    attempt("init environ", lambda: open("/proc/1/environ", "rb").read().decode())
    return frame()
""", people))
    names = found["names"].removeprefix("done:").split(",")
    assert not [n for n in names if n.startswith("AUTHOPS_")
                or n.endswith(("_KEY", "_SECRET", "_PASSWORD"))], names
    assert set(names) <= {"PATH", "PWD", "HOME", "TMPDIR", "LANG", "LD_LIBRARY_PATH",
                          "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                          "ARROW_IO_THREADS"}
    assert not any(v in found["self environ"] for v in secrets.values())
    assert found["init environ"] == "EACCES"


@pytest.mark.slow
def test_fork_bomb_is_held_by_the_process_limit(people):
    before = len(os.listdir("/proc"))
    result = jail("""
        import os
        def run(inputs, params):
            while True:
                os.fork()
    """, people)
    # RLIMIT_NPROC of the slot's own uid: fork fails (BlockingIOError), the job ends in an error.
    assert result.status is JailStatus.ERROR and result.summary.startswith("BlockingIOError")
    assert result.duration_s < LIMITS.wall_seconds
    assert len(os.listdir("/proc")) < before + 10
    worker_still_runs_jobs(people)


def test_memory_bomb_in_one_process(people):
    result = jail("""
        def run(inputs, params):
            hog = []
            while True:
                hog.append(bytearray(50 * 1024 * 1024))
    """, people)
    assert result.status is JailStatus.MEMORY, result
    assert "768 MB" in result.summary
    worker_still_runs_jobs(people)


@pytest.mark.slow
def test_memory_bomb_spread_over_processes(people):
    """Each child stays under RLIMIT_AS; their sum trips the worker's watchdog for the uid."""
    result = jail("""
        import os, time
        def run(inputs, params):
            for _ in range(12):
                if os.fork() == 0:
                    hog = bytearray(120 * 1024 * 1024)
                    for i in range(0, len(hog), 4096):
                        hog[i] = 1
                    time.sleep(60)
            time.sleep(60)
    """, people)
    assert result.status is JailStatus.MEMORY, result
    assert result.duration_s < 20
    worker_still_runs_jobs(people)


@pytest.mark.slow
def test_endless_loop_hits_the_cpu_limit(people):
    result = jail("""
        def run(inputs, params):
            while True:
                pass
    """, people, config=JailConfig(**{**LIMITS.__dict__, "cpu_seconds": 1}))
    assert result.status is JailStatus.TIMEOUT and "CPU" in result.summary, result
    assert result.duration_s < 10
    worker_still_runs_jobs(people)


@pytest.mark.slow
def test_cpu_limit_holds_when_sigxcpu_is_ignored(people):
    result = jail("""
        import signal
        def run(inputs, params):
            signal.signal(signal.SIGXCPU, signal.SIG_IGN)
            while True:
                pass
    """, people, config=JailConfig(**{**LIMITS.__dict__, "cpu_seconds": 1}))
    assert result.status is JailStatus.TIMEOUT and "CPU" in result.summary, result


@pytest.mark.slow
def test_sleeping_job_hits_the_wall_time_limit(people):
    result = jail("""
        import os, time
        def run(inputs, params):
            os.fork()  # two sleepers: the whole namespace goes, not just the first
            while True:
                time.sleep(0.1)
    """, people, config=JailConfig(**{**LIMITS.__dict__, "wall_seconds": 3}))
    assert result.status is JailStatus.TIMEOUT and "wall-time" in result.summary
    assert 3 <= result.duration_s < 6
    worker_still_runs_jobs(people)


def test_only_scratch_is_writable(people, tmp_path):
    marker = f"/tmp/authops-jail-escape-{os.getpid()}"
    found = report(jail(PROBE_HELPERS + f"""
def write(path):
    with open(path, "wb") as f:
        f.write(b"x")
def run(inputs, params):
    for path in [{marker!r}, "/tmp/scratch.bin", "/usr/escape", "/escape", "/etc/escape",
                 "/in/people.parquet", "/in/new.parquet", "/job/partner.py",
                 {str(people)!r}, {str(people.parent / "new.parquet")!r}]:
        attempt(path, lambda: write(path))
    return frame()
""", people))
    assert found[marker] == "done" and found["/tmp/scratch.bin"] == "done"  # the jail's tmpfs
    assert not Path(marker).exists()  # ... not the host's /tmp
    for path in ("/usr/escape", "/escape", "/etc/escape", "/in/people.parquet",
                 "/in/new.parquet", "/job/partner.py"):
        assert found[path] == "EROFS", (path, found[path])
    assert found[str(people)] == "ENOENT" and found[str(people.parent / "new.parquet")] == "ENOENT"
    assert pd.read_parquet(people)["name"].tolist() == ROWS


def test_printed_rows_and_exception_text_reach_operators_only(people):
    result = jail("""
        import sys
        def run(inputs, params):
            df = inputs["people"]
            print(df.to_string())
            print(df["name"].tolist(), file=sys.stderr)
            print("x" * 1_000_000)  # capture is bounded; the rest is drained and dropped
            raise ValueError("row leak: " + df["name"][0])
    """, people)
    assert result.status is JailStatus.ERROR
    assert result.summary == "ValueError at line 8 of your code"
    assert ROWS[0].encode() in result.operator_stdout and ROWS[1].encode() in result.operator_stderr
    assert len(result.operator_stdout) == LIMITS.capture_bytes
    assert ROWS[0] not in repr(result)  # captured text stays out of logs' repr too


def test_exception_class_named_after_a_row_is_not_shown(people):
    result = jail(f"""
        class {ROWS[0].replace("-", "_")}(Exception):
            __module__ = "builtins"
        def run(inputs, params):
            raise {ROWS[0].replace("-", "_")}()
    """, people)
    assert result.status is JailStatus.ERROR
    assert result.summary == "Exception at line 5 of your code"


def test_ptrace_mount_unshare_and_friends_are_refused(people):
    found = report(jail(PROBE_HELPERS + """
import threading
def run(inputs, params):
    attempt("uid", lambda: (os.getuid(), os.geteuid(), os.getgid(), os.getgroups()))
    status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
    attempt("caps", lambda: (status["CapEff"].strip(), status["CapBnd"].strip()))
    attempt("nnp seccomp", lambda: (status["NoNewPrivs"].strip(), status["Seccomp"].strip()))
    attempt("oom_score_adj", lambda: open("/proc/self/oom_score_adj").read().strip())
    attempt("ptrace", lambda: call(libc.ptrace, 16, 1, 0, 0))
    attempt("mount", lambda: call(libc.mount, b"none", b"/tmp", b"tmpfs", 0, None))
    attempt("umount2", lambda: call(libc.umount2, b"/proc", 2))
    attempt("unshare user", lambda: call(libc.unshare, 0x10000000))
    attempt("unshare net", lambda: call(libc.unshare, 0x40000000))
    attempt("setns", lambda: call(libc.setns, os.open("/proc/self/ns/net", os.O_RDONLY), 0))
    attempt("chroot", lambda: call(libc.chroot, b"/tmp"))
    attempt("bpf", lambda: call(libc.syscall, 321, 0, 0, 0))
    attempt("keyctl", lambda: call(libc.syscall, 250, 0, 0, 0))
    attempt("setuid 0", lambda: os.setuid(0))
    t = threading.Thread(target=lambda: None); t.start(); t.join()  # threads still work
    attempt("thread", lambda: None)
    return frame()
""", people))
    uid = LIMITS.base_uid + SLOT
    assert found["uid"] == f"done:({uid}, {uid}, {uid}, [])"  # a real, unprivileged kernel uid
    assert found["caps"] == "done:('0000000000000000', '0000000000000000')"
    assert found["nnp seccomp"] == "done:('1', '2')"
    assert found["oom_score_adj"] == "done:1000"
    for probe in ("ptrace", "mount", "umount2", "unshare user", "unshare net", "setns", "chroot",
                  "bpf", "keyctl", "setuid 0"):
        assert found[probe] == "EPERM", (probe, found[probe])
    assert found["thread"] == "done"


def test_setuid_binary_grants_nothing(people):
    found = report(jail(PROBE_HELPERS + """
import shutil, subprocess
def run(inputs, params):
    shutil.copy("/usr/bin/id", "/tmp/id")
    attempt("chmod u+s", lambda: os.chmod("/tmp/id", 0o4755))
    attempt("chown root", lambda: os.chown("/tmp/id", 0, 0))
    attempt("mode", lambda: oct(os.stat("/tmp/id").st_mode))
    attempt("run it", lambda: subprocess.run(["/tmp/id", "-u"], capture_output=True).stdout.decode().strip())
    attempt("nosuid", lambda: [l.split()[5] for l in open("/proc/self/mountinfo") if l.split()[4] == "/tmp"][0])
    return frame()
""", people))
    assert found["chmod u+s"] == "done" and found["chown root"] == "EPERM"
    assert found["run it"] == f"done:{LIMITS.base_uid + SLOT}"
    assert "nosuid" in found["nosuid"]


def test_huge_files_are_cut_off(people):
    found = report(jail(PROBE_HELPERS + """
def run(inputs, params):
    def big():
        with open("/tmp/huge.bin", "wb") as f:
            for _ in range(64):
                f.write(b"\\0" * (1024 * 1024))
    attempt("64 MB in scratch", big)
    return frame()
""", people))
    assert found["64 MB in scratch"] in {"EFBIG", "ENOSPC"}  # RLIMIT_FSIZE / tmpfs size (16 MB)
    result = jail("""
        import numpy as np, pandas as pd
        def run(inputs, params):
            return pd.DataFrame({"x": np.random.default_rng(0).random(3_000_000)})  # ~24 MB
    """, people)
    assert result.status is JailStatus.OUTPUT_INVALID and result.outputs == {}


@pytest.mark.parametrize("returned", ["42", "inputs['people']['amount']", "{}", "None",
                                      "{'bad name': inputs['people']}", "{'ok': [1, 2]}"])
def test_returning_anything_but_dataframes_is_output_invalid(people, returned):
    result = jail(f"def run(inputs, params):\n    return {returned}\n", people)
    assert result.status is JailStatus.OUTPUT_INVALID and result.outputs == {}


def test_forged_result_frames_are_refused(people):
    result = jail("""
        import json, os
        def run(inputs, params):
            job = json.load(open("/job/job.json"))
            os.write(job["channel_fd"], b"STATUS 2\\n{}OUT x 3\\nabc")
            return inputs["people"]
    """, people)
    assert result.status is JailStatus.OUTPUT_INVALID and result.outputs == {}


def test_forged_status_record_is_reduced_to_fixed_phrases(people):
    result = jail(f"""
        import json, os
        def run(inputs, params):
            job = json.load(open("/job/job.json"))
            body = json.dumps({{"status": "error", "exc": "{ROWS[0]}", "line": 10 ** 6,
                               "stage": ["{ROWS[1]}"]}}).encode()
            os.write(job["channel_fd"], b"STATUS %d\\n" % len(body) + body)
            os._exit(0)
    """, people)
    assert result.status is JailStatus.ERROR and result.summary == "Exception"


def test_broken_code_reports_type_and_line_only(people):
    result = jail("def run(inputs, params):\n    return (\n", people)
    assert result.status is JailStatus.ERROR
    assert result.summary.startswith("SyntaxError") and "while loading your code" in result.summary
    result = jail("x = 1\n", people)
    assert result.status is JailStatus.OUTPUT_INVALID


def test_missing_bubblewrap_is_a_clear_configuration_error(people):
    with pytest.raises(ConfigurationError, match="bubblewrap is not installed"):
        run_partner_code("def run(i, p):\n    return i['people']\n", {"people": people}, {},
                         config=JailConfig(bwrap="bwrap-not-installed"))
