"""Partner code looking for another tenant's scratch space and decrypted inputs while both run.

Tenant A's real code job writes what it read into its scratch space (/tmp in its jail) and keeps
running; meanwhile tenant B's code, in its own jail, searches every place another job's files could
be reached from: /tmp, /dev/shm (where the worker decrypts inputs), other processes' roots and
working directories through /proc, /run, /var/tmp and the whole file tree. The control runs the
same search as an ordinary process on the host (as the worker's user), where it finds both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from authops.sandbox.jail import JailStatus, run_partner_code
from tests.attacks.kit import JAILED_PROBE, PROBE, SCORE, WRITER, manifest
from tests.attacks.world import figures, lab, load, residents, run, submit
from tests.sandbox.test_jail import SLOT, _jail_missing
from tests.support.services import services_required

if (_why := _jail_missing()) and services_required():
    pytest.fail(_why + " and AUTHOPS_REQUIRE_SERVICES=1", pytrace=False)
pytestmark = [pytest.mark.skipif(_why is not None, reason=_why or ""),
              pytest.mark.parametrize("db_settings", ["sqlite"], indirect=True)]


def _a_is_writing(marker: str, timeout: float = 60.0) -> bool:
    """Wait until A's jail holds its scratch file (seen from the host, as root can)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and list(proc.glob(f"root/tmp/scratch-{marker}.csv")):
                return True
        time.sleep(0.2)
    return False


def test_code_cannot_reach_another_tenants_scratch_or_decrypted_inputs(session, db_settings, tmp_path):
    code, rows = load(session, db_settings, residents(60, seed=41))
    tenant_a = lab(session, code, rows)
    marker = uuid.uuid4().hex[:12]
    spec = manifest(code, ["income"], {"s": SCORE}, time_limit=40)
    job_id = submit(session, tenant_a, kind="code", spec=spec, code=WRITER, params={"marker": marker, "hold": 8})
    outcome: dict = {}
    a = threading.Thread(target=lambda: outcome.update(job=run(db_settings, job_id)))
    a.start()
    try:
        assert _a_is_writing(marker), "tenant A's job never started writing its scratch"
        # Control: the search as a host process (no jail) finds A's scratch and decrypted inputs.
        host = subprocess.run([sys.executable, "-c", PROBE + f"\nimport json\nprint(json.dumps(probe({marker!r})))"],
                              capture_output=True, text=True, timeout=120)
        control = json.loads(host.stdout)
        # Tenant B's code, in its own jail, at the same moment.
        own = tmp_path / "b.parquet"
        tmp_path.chmod(0o755)
        pd.DataFrame({"x": [1]}).to_parquet(own)
        own.chmod(0o644)
        jailed = run_partner_code(JAILED_PROBE, {"people": own}, {"marker": marker}, slot=SLOT,
                                  output_dir=tmp_path / "out")
    finally:
        a.join(timeout=120)
    assert jailed.status is JailStatus.OK, (jailed.summary, jailed.operator_stderr.decode()[-1500:])
    found = pd.read_parquet(jailed.outputs["result"])
    found = [tuple(r) for r in found.itertuples(index=False) if r[0] != "none"]
    figures("other tenants' scratch", control_found=sorted({w for w, _ in control}), control_paths=len(control),
            platform_found=sorted({w for w, _ in found}), platform_paths=len(found))
    assert {"other process", "decrypted input"} <= {w for w, _ in control}
    assert found == []
    assert outcome["job"].state == "succeeded", outcome["job"].error_message
