"""The program the jail runs: load inputs, call the partner's `run(inputs, params)`, write outputs.

Runs inside bubblewrap as an unprivileged uid, started as `python -I -S -B runner.py job.json`:
isolated mode, no `site`, so the only import path besides the standard library is the
site-packages list in the job manifest. It imports nothing from `authops` (not mounted).

Reports to the trusted worker over an inherited pipe (the manifest names its fd), never over
stdout/stderr, which are the partner's and go to operators only. Frames:
    OUT <name> <size>\\n<size bytes of Parquet>
    STATUS <size>\\n<JSON: status, exc (nearest built-in exception name), line (in partner code)>
The partner's code shares this process and can write to the pipe too; the worker treats every
frame as untrusted (names and numbers are checked, Parquet is parsed, anything odd is refused).
Exception messages never go into a frame: they may quote rows.
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback

PARTNER_FILE = "/job/partner.py"
OUT_DIR = "/out"
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\Z")


class OutputInvalid(Exception):
    """run() returned something other than a DataFrame or a dict of named DataFrames."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _send(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _status(fd: int, status: str, *, exc: BaseException | None = None, stage: str = "",
            reason: str = "") -> None:
    record: dict[str, object] = {"status": status, "stage": stage, "reason": reason}
    if exc is not None:
        record["exc"] = next(c.__name__ for c in type(exc).__mro__ if c.__module__ == "builtins")
        record["line"] = _partner_line(exc)
    body = json.dumps(record).encode()
    _send(fd, b"STATUS %d\n" % len(body) + body)


def _partner_line(exc: BaseException) -> int | None:
    """The deepest line of the partner's own file in the traceback (or a SyntaxError's line)."""
    if isinstance(exc, SyntaxError) and exc.filename == PARTNER_FILE:
        return exc.lineno
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == PARTNER_FILE:
            line = frame.lineno
    return line


def _load_partner():
    import importlib.util

    spec = importlib.util.spec_from_file_location("partner_code", PARTNER_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["partner_code"] = module
    spec.loader.exec_module(module)
    run = getattr(module, "run", None)
    if not callable(run):
        raise OutputInvalid("the code must define a function run(inputs, params)")
    return run


def _normalise(result, pd, max_outputs: int) -> dict:
    if type(result) is pd.DataFrame:  # exactly: a subclass could override to_parquet
        return {"result": result}
    if not isinstance(result, dict) or not result:
        raise OutputInvalid("run() must return a DataFrame or a non-empty dict of DataFrames")
    if len(result) > max_outputs:
        raise OutputInvalid(f"run() returned more than {max_outputs} outputs")
    for name, frame in result.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise OutputInvalid("output names must be identifiers (letters, digits, _; up to 64)")
        if type(frame) is not pd.DataFrame:
            raise OutputInvalid("every value run() returns must be a pandas DataFrame")
    return dict(result)


def _write_outputs(fd: int, outputs: dict) -> None:
    paths = {}
    for name, frame in outputs.items():
        path = os.path.join(OUT_DIR, name + ".parquet")
        try:
            frame.to_parquet(path, index=False)
        except OSError as exc:  # EFBIG (RLIMIT_FSIZE) or ENOSPC (the output tmpfs is full)
            raise OutputInvalid("the outputs exceed the jail's output size limit") from exc
        except (ValueError, TypeError, ImportError) as exc:
            raise OutputInvalid("an output could not be written as Parquet "
                                "(use string column names and plain column types)") from exc
        except Exception as exc:  # pyarrow's own errors (ArrowInvalid, ArrowTypeError, ...)
            if type(exc).__module__.startswith("pyarrow"):
                raise OutputInvalid("an output could not be written as Parquet") from exc
            raise
        paths[name] = path
    for name, path in paths.items():
        size = os.path.getsize(path)
        _send(fd, b"OUT %s %d\n" % (name.encode(), size))
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                _send(fd, chunk)


def read_frames(data: bytes | bytearray,
                max_outputs: int) -> tuple[list[tuple[str, bytes]], dict]:
    """The worker's side: ([(name, Parquet bytes)], status record); ValueError on anything else.

    Runs in the trusted worker, never in the jail; kept here beside the writer of the frames."""
    outputs: list[tuple[str, bytes]] = []
    status, pos = None, 0
    while pos < len(data):
        end = data.index(b"\n", pos, pos + 100)
        head = bytes(data[pos:end]).decode("ascii").split(" ")
        size = int(head[-1])
        body = bytes(data[end + 1:end + 1 + size])
        if size < 0 or len(body) != size or status is not None:
            raise ValueError("negative size, truncated frame or a frame after the status")
        if head[0] == "OUT" and len(head) == 3 and NAME.match(head[1]):
            if head[1] in dict(outputs) or len(outputs) >= max_outputs:
                raise ValueError("duplicate or too many outputs")
            outputs.append((head[1], body))
        elif head[0] == "STATUS" and len(head) == 2:
            status = json.loads(body)
        else:
            raise ValueError("unknown frame")
        pos = end + 1 + size
    if not isinstance(status, dict):
        raise ValueError("no status record")
    if not all(_is_parquet(body) for _, body in outputs):
        raise ValueError("an output is not a Parquet file")
    return outputs, status


def _is_parquet(body: bytes) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(body) < 12 or body[:4] != b"PAR1" or body[-4:] != b"PAR1":
        return False
    try:
        pq.ParquetFile(pa.BufferReader(body)).schema_arrow  # noqa: B018 - parses the footer
    except Exception:  # noqa: BLE001 - any parse failure: not the runner's Parquet
        return False
    return True


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as f:
        job = json.load(f)
    fd = int(job["channel_fd"])
    if os.getuid() == 0 or os.geteuid() == 0:  # the jail must have dropped root; refuse to run
        print("jail_runner: refusing to run as uid 0", file=sys.stderr)
        return 3
    sys.path.extend(job["site"])
    me = os.getpid()
    stage = "load"
    try:
        import pandas as pd

        inputs = {name: pd.read_parquet(path) for name, path in job["inputs"].items()}
        stage = "import"
        run = _load_partner()
        stage = "run"
        result = run(inputs, job["params"])
        if os.getpid() != me:  # a fork of the partner's code returned: it has no say here
            os._exit(0)
        stage = "output"
        _write_outputs(fd, _normalise(result, pd, int(job["max_outputs"])))
    except OutputInvalid as exc:
        if os.getpid() != me:
            os._exit(0)
        traceback.print_exc()
        _status(fd, "output_invalid", stage=stage, reason=exc.reason)
        return 0
    except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt: the partner's too
        if os.getpid() != me:
            os._exit(0)
        traceback.print_exc()  # operators only: stderr never reaches the partner
        status = "memory" if isinstance(exc, MemoryError) else "error"
        _status(fd, status, exc=exc, stage=stage)
        return 0
    _status(fd, "ok", stage=stage)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
