"""Checkpoints, proofs, witnesses, export and offline verification against tampering."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from authops.audit import checkpoints, merkle
from authops.audit import log as audit_log
from authops.audit.export import export
from authops.audit.signing import load_signing_keys, rotate_signing_key
from authops.audit.verify import load_keys, verify_file
from authops.audit.witness import FolderWitness
from authops.core.db import session_scope
from authops.core.errors import Conflict
from tests.support.tamper import KINDS, tamper


def _events(settings, n: int, batch: int = 200) -> None:
    done = 0
    while done < n:
        with session_scope(settings) as s:
            for i in range(min(batch, n - done)):
                audit_log.record(s, audit_log.Actor(kind="key", id=7, name="bank", org_id=3, ip="10.1.2.3",
                                                    region="intranet"), "product.call", object_type="product",
                                 object_id="bank_credit_assessment", rows=1, subjects=1,
                                 details={"n": done + i})
        done += min(batch, n - done)


def _keys(settings):
    return load_keys([k.public_pem for k in load_signing_keys(settings)])


@pytest.fixture
def exported(db_settings, tmp_path) -> Path:
    _events(db_settings, 150)
    checkpoints.checkpoint_now(db_settings)
    _events(db_settings, 120)
    checkpoints.checkpoint_now(db_settings)
    _events(db_settings, 30)
    path = tmp_path / "audit.jsonl"
    result = export(db_settings, path)
    assert result["checkpoints"] == 3
    return path


def test_untouched_export_verifies(db_settings, exported):
    report = verify_file(exported, _keys(db_settings))
    assert report.ok, report.summary()
    # 300 events + the three checkpoints' own events, all covered by the last signature.
    assert report.events >= 300 and report.checkpoints == 3 and report.proofs == 2


@pytest.mark.parametrize("kind", KINDS)
def test_each_tampering_is_detected_and_located(db_settings, exported, kind, tmp_path):
    rng = random.Random(kind)
    lines = exported.read_bytes().splitlines(keepends=True)
    for attempt in range(5):
        bad = tmp_path / f"bad-{attempt}.jsonl"
        bad.write_bytes(b"".join(tamper(lines, kind, rng)))
        report = verify_file(bad, _keys(db_settings))
        assert not report.ok, f"{kind} went undetected"
        assert report.problem and "TAMPERED" in report.summary()
        if kind in ("edit", "edit_rehash", "delete", "insert", "swap"):
            assert report.seq is not None  # the first broken event is named


def test_a_rewritten_history_does_not_extend_the_auditors_checkpoint(db_settings, tmp_path):
    _events(db_settings, 50)
    kept = checkpoints.checkpoint_document(checkpoints.checkpoint_now(db_settings))
    (tmp_path / "kept.json").write_bytes(kept)
    _events(db_settings, 50)
    path = tmp_path / "a.jsonl"
    export(db_settings, path)
    trusted = json.loads(kept)
    assert verify_file(path, _keys(db_settings), trusted).ok
    # An insider with the signing key rebuilds and re-signs a different history…
    other = tmp_path / "other"
    from authops.core.settings import Settings
    forged = Settings(data_dir=other, database_url=f"sqlite:///{other / 'db.sqlite3'}",
                      audit_signing_keys=db_settings.audit_signing_keys)
    import shutil
    other.mkdir()
    shutil.copytree(db_settings.data_path / "keys", other / "keys")
    from authops.core import db
    db.upgrade(forged)
    _events(forged, 100)
    forged_path = tmp_path / "forged.jsonl"
    export(forged, forged_path)
    assert verify_file(forged_path, _keys(db_settings)).ok  # self-consistent and signed…
    report = verify_file(forged_path, _keys(db_settings), trusted)  # …but not the history the auditor saw
    assert not report.ok and "trusted checkpoint" in report.problem


def test_signing_key_rotation_needs_both_keys(db_settings, tmp_path):
    _events(db_settings, 20)
    checkpoints.checkpoint_now(db_settings)
    old = load_signing_keys(db_settings)[0]
    rotate_signing_key(db_settings)
    _events(db_settings, 20)
    path = tmp_path / "r.jsonl"
    export(db_settings, path)
    assert verify_file(path, _keys(db_settings)).ok
    only_new = load_keys([load_signing_keys(db_settings)[0].public_pem])
    report = verify_file(path, only_new)
    assert not report.ok and old.key_id in report.problem


def test_proofs_from_the_database_verify(db_settings, session):
    _events(db_settings, 40)
    first = checkpoints.checkpoint_now(db_settings)
    _events(db_settings, 25)
    second = checkpoints.checkpoint_now(db_settings)
    p = checkpoints.inclusion(session, 17)
    assert p.tree_size == second.tree_size
    assert merkle.verify_inclusion(bytes.fromhex(p.leaf_hash), 16, p.tree_size,
                                   [bytes.fromhex(h) for h in p.proof], bytes.fromhex(p.root))
    proof = checkpoints.consistency(session, first.tree_size, second.tree_size)
    assert merkle.verify_consistency(first.tree_size, second.tree_size, bytes.fromhex(first.root_hash),
                                     bytes.fromhex(second.root_hash), [bytes.fromhex(h) for h in proof])


def test_checkpoints_reach_the_witness_and_object_store(db_settings, session):
    _events(db_settings, 10)
    cp = checkpoints.checkpoint_now(db_settings)
    witness = FolderWitness(db_settings.data_path / "witness")
    assert witness.get(f"checkpoint-{cp.tree_size:012d}.json") == checkpoints.checkpoint_document(cp)
    with pytest.raises(Conflict):
        witness.put(f"checkpoint-{cp.tree_size:012d}.json", b"{}")
    from authops.core.storage import get_object_store
    assert get_object_store(db_settings).exists(f"audit/checkpoints/checkpoint-{cp.tree_size:012d}.json")
    assert checkpoints.checkpoint_now(db_settings) is not None  # its own event is new
    assert checkpoints.checkpoint_now(db_settings).tree_size > cp.tree_size


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(max_size=400), cut=st.integers(min_value=0, max_value=4000))
def test_malformed_files_are_reported_not_crashed(db_settings, exported, tmp_path, junk, cut):
    data = exported.read_bytes()
    bad = tmp_path / "junk.jsonl"
    bad.write_bytes(data[:cut] + junk + data[cut + len(junk):])
    report = verify_file(bad, _keys(db_settings))
    if report.ok:  # only the header's informational fields (e.g. exported_at) may differ
        old, new = data.splitlines(), bad.read_bytes().splitlines()
        assert old[1:] == new[1:]
        assert json.loads(old[0])["events"] == json.loads(new[0])["events"]
