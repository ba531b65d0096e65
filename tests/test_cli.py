"""The `authops` command as a newcomer uses it: in a fresh data folder, as a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ENV_KEYS = ("AUTHOPS_DATABASE_URL", "AUTHOPS_BROKER_URL", "AUTHOPS_STORAGE_URL", "AUTHOPS_MASTER_KEYS",
            "AUTHOPS_MASTER_KEY_ID")


def authops(tmp_path: Path, *args: str, env: dict | None = None, check: bool = True):
    base = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    base.update({"AUTHOPS_DATA_DIR": str(tmp_path / "data"), **(env or {})})
    r = subprocess.run([sys.executable, "-m", "authops", *args], cwd=tmp_path, env=base,
                       capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_help_lists_every_command(tmp_path):
    out = authops(tmp_path, "--help").stdout
    for command in ("init", "serve", "worker", "db", "users", "keys", "demo"):
        assert command in out


def test_init_then_users_then_keys(tmp_path):
    authops(tmp_path, "init", "--admin-password", "Bureau-pass-2026")
    assert (tmp_path / "data" / "authops.sqlite3").exists()
    authops(tmp_path, "users", "create", "--org", "szdata", "--username", "reviewer",
            "--role", "bureau_reviewer", env={"AUTHOPS_NEW_USER_PASSWORD": "Review-pass-2026"})
    listed = authops(tmp_path, "users", "list").stdout
    assert "bureau-admin" in listed and "reviewer" in listed and "bureau_reviewer" in listed

    bad = authops(tmp_path, "users", "create", "--org", "szdata", "--username", "someone",
                  "--role", "partner_admin", env={"AUTHOPS_NEW_USER_PASSWORD": "Review-pass-2026"},
                  check=False)
    assert bad.returncode == 1 and "bureau_reviewer" in bad.stderr and "Traceback" not in bad.stderr

    key = authops(tmp_path, "keys", "api-create", "--org", "szdata", "--name", "monitoring",
                  "--scope", "system.read").stdout.strip()
    assert key.startswith("ak_")
    refused = authops(tmp_path, "keys", "api-create", "--org", "szdata", "--name", "x",
                      "--scope", "product.call", check=False)
    assert refused.returncode == 1 and "product.call" in refused.stderr


def test_db_upgrade_and_current(tmp_path):
    authops(tmp_path, "db", "upgrade")
    assert authops(tmp_path, "db", "current").stdout.strip() not in ("", "empty")


def test_keys_rotate_keeps_objects_readable(tmp_path):
    code = ("from authops.core.storage import get_object_store; "
            "s = get_object_store(); s.put('a/b.bin', b'plaintext-marker'); print('ok')")
    env = {**os.environ, "AUTHOPS_DATA_DIR": str(tmp_path / "data")}
    for k in ENV_KEYS:
        env.pop(k, None)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=tmp_path)
    out = authops(tmp_path, "keys", "rotate").stdout
    assert "rewrapped 1" in out
    read = ("from authops.core.storage import get_object_store; "
            "print(get_object_store().get('a/b.bin').decode())")
    r = subprocess.run([sys.executable, "-c", read], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.stdout.strip() == "plaintext-marker"


@pytest.mark.slow
def test_demo_tells_the_story(tmp_path):
    out = authops(tmp_path, "demo", "--data-dir", str(tmp_path / "demo")).stdout
    assert "bureau-admin sees all" in out
    assert "-> 403" in out and "-> 404" in out
    assert "gets 401" in out and "account locked" in out
    assert "ran on a Celery worker: succeeded" in out
    # the sandbox chapter: a DP release, then the three refusals with their reasons
    assert "released vat_by_industry (aggregate" in out and "budget left:" in out
    assert "403 out_of_scope" in out and "422 release_refused" in out and "409 budget_exhausted" in out
    # the governance chapter: publicity by working days, three-level review, registration, consent revoked
    assert "publicity: 7 working days by the Chinese calendar" in out and "409 publicity_running" in out
    assert "skipping two levels -> 409 illegal_transition" in out
    assert "-> returned (2 of 3 votes)" in out and "resubmits -> expert_review, round 2" in out
    assert re.search(r"bureau-reviewer files it -> registered, registration number SZDP-\d{4}-0001", out)
    assert "(no agreement) -> refused, no_active_agreement" in out
    assert re.search(r"next call-check about \S+ -> refused, no_consent: no valid consent: the subject's "
                     r"consent \d+ was revoked", out)
    # the products chapter: seven registered, built, called; the joint model; the supervision report
    assert len(set(re.findall(r"SZDP-\d{4}-000[2-8] ", out))) == 7 and "all answer sets built in" in out
    assert "(no agreement) -> 403 no_active_agreement" in out and "has not authorized it -> 403 no_consent" in out
    assert "sends a call body over 2 MiB -> 413 payload_too_large" in out
    assert "retries the upload with the same Idempotency-Key -> 202, then 200 the same batch, charged once" in out
    assert re.search(r"scb bank_credit_assessment \S+ -> found=True, score=[\d.]+, grade=[D-E]", out)
    assert re.search(r"holdout of \d+: AUC ([\d.]+)", out) and "the insurer scores with it -> 404" in out
    assert "flagged as anomalous billing: H32" in out and "(identical): no new budget spent" in out
    # the billing chapter: caps hold, trial prices filed, the ceiling refuses, the settlement adds up
    assert "-> 422 price_above_cap" in out and "-> 422 free_product" in out and "are trial prices" in out
    assert "warnings raised at 80%, 95%" in out and "the next paid call -> 403 revenue_ceiling_reached" in out
    assert "before it ends -> 409 year_not_ended" in out
    m = re.search(r"shares sum to ([\d,.]+) = revenue ([\d,.]+) yuan exactly", out)
    assert m and m.group(1) == m.group(2)
    # the supervision chapter: a signed qualified year, the unqualified path, the reports
    assert re.search(r"total [\d.]+ -> (qualified|excellent); signed by the bureau .*signature valid: True", out)
    assert re.search(r"scores [\d.]+ -> unqualified; .*rectification plan due", out)
    assert "before the plan is in -> 409 plan_pending" in out
    assert re.search(r"the re-assessment over the 12 months to now scores [\d.]+ -> (qualified|excellent)", out)
    assert re.search(r"\d+ report files \(assessment, audit, operating", out)


def test_audit_export_and_offline_verify(tmp_path):
    authops(tmp_path, "init", "--admin-password", "Bureau-pass-2026")
    authops(tmp_path, "audit", "checkpoint")
    out = tmp_path / "log.jsonl.gz"
    authops(tmp_path, "audit", "export", str(out))
    (tmp_path / "audit.pub").write_text(authops(tmp_path, "audit", "public-key").stdout)
    ok = authops(tmp_path, "audit", "verify", str(out), "--public-key", str(tmp_path / "audit.pub"))
    assert ok.stdout.startswith("OK:")
    import gzip
    lines = gzip.decompress(out.read_bytes()).splitlines(keepends=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(lines[:-1]))  # the last event cut off
    r = authops(tmp_path, "audit", "verify", str(bad), "--public-key", str(tmp_path / "audit.pub"), check=False)
    assert r.returncode == 2 and "TAMPERED" in r.stdout
