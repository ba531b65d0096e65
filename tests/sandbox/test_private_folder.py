"""Plaintext folders on tmpfs: removed when the job ends, and swept when the worker died mid-job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

from authops.platform.sandbox.jobs import private_folder, sweep_private_folders

CHILD = """
import sys, time
from authops.platform.sandbox.jobs import private_folder
with private_folder(sys.argv[1]) as folder:
    (folder / "inputs.parquet").write_bytes(b"decrypted rows")
    print(folder, flush=True)
    time.sleep(120)
"""


def test_a_folder_is_private_and_gone_after_the_job():
    prefix = f"authops-test-{uuid.uuid4().hex[:8]}-"
    with private_folder(prefix) as folder:
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
        (folder / "x").write_text("plaintext")
    assert not folder.exists()


def test_a_killed_owners_folder_is_swept_and_a_live_one_is_kept():
    prefix = f"authops-test-{uuid.uuid4().hex[:8]}-"
    child = subprocess.Popen([sys.executable, "-c", CHILD, prefix], stdout=subprocess.PIPE, text=True)
    try:
        from pathlib import Path

        dead = Path(child.stdout.readline().strip())
        assert (dead / "inputs.parquet").exists()
        with private_folder(prefix) as live:
            # The child is alive: its folder is somebody's job and must stay.
            assert sweep_private_folders(prefix) == [] and dead.exists()
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
            # Dead without running its `finally`: the plaintext is still there until a sweep.
            assert (dead / "inputs.parquet").exists()
            assert sweep_private_folders(prefix) == [dead]
            assert not dead.exists() and live.exists()
    finally:
        child.kill()
        child.wait(timeout=10)
