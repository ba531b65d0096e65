"""Audit log throughput: appends per second on PostgreSQL (one event per transaction, and
batched), beside a plain INSERT of the same rows in the same run; and the time to verify an
export of N events beside SHA-256 hashing the same canonical bytes.

    python -m bench.audit [--pg URL] [--verify-events 1000000]
Writes bench/results/audit.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from authops.audit import log as audit_log
from authops.audit.checkpoints import checkpoint_now
from authops.audit.export import export
from authops.audit.signing import load_signing_keys
from authops.audit.verify import load_keys, verify_file
from authops.core import db
from authops.core.settings import Settings

ACTOR = audit_log.Actor(kind="key", id=42, name="core-banking", org_id=7, ip="10.0.0.8", region="intranet")


def _event(i: int) -> audit_log.PendingEvent:
    return audit_log.PendingEvent(actor=ACTOR, action="product.call", object_type="product",
                                  object_id="bank_credit_assessment", rows=1, subjects=1, details={"i": i})


def _append(settings: Settings, n: int, per_tx: int) -> float:
    from sqlmodel import Session

    engine = db.get_engine(settings)
    t = time.perf_counter()
    done = 0
    while done < n:
        with Session(engine) as s:
            for i in range(min(per_tx, n - done)):
                audit_log.record(s, ACTOR, "product.call", object_type="product", object_id="x",
                                 rows=1, subjects=1, details={"i": done + i})
            s.commit()
        done += per_tx
    return n / (time.perf_counter() - t)


def _plain(url: str, n: int, per_tx: int) -> float:
    engine = db.make_engine(url)
    with engine.begin() as c:
        c.execute(text("CREATE TABLE IF NOT EXISTS bench_plain (seq bigint primary key, ts timestamp, actor_kind "
                       "varchar(16), actor_id int, actor_name varchar(200), org_id int, action varchar(64), "
                       "object_type varchar(64), object_id varchar(128), outcome varchar(16), ip varchar(64), "
                       "region varchar(64), rows int, nbytes bigint, subjects int, prev_hash varchar(64), "
                       "hash varchar(64), canonical bytea)"))
        c.execute(text("TRUNCATE bench_plain"))
    row = {"ts": "2026-11-22 01:00:00", "ak": "key", "aid": 42, "an": "core-banking", "org": 7,
           "act": "product.call", "ot": "product", "oid": "x", "out": "ok", "ip": "10.0.0.8",
           "rg": "intranet", "r": 1, "b": None, "s": 1, "p": "0" * 64, "h": "1" * 64, "c": b"x" * 400}
    stmt = text("INSERT INTO bench_plain VALUES (:seq, :ts, :ak, :aid, :an, :org, :act, :ot, :oid, :out, :ip, "
                ":rg, :r, :b, :s, :p, :h, :c)")
    t = time.perf_counter()
    seq = 0
    while seq < n:
        with engine.begin() as c:
            batch = [{**row, "seq": seq + i + 1} for i in range(min(per_tx, n - seq))]
            c.execute(stmt, batch)
        seq += len(batch)
    rate = n / (time.perf_counter() - t)
    with engine.begin() as c:
        c.execute(text("DROP TABLE bench_plain"))
    engine.dispose()
    return rate


def bench_appends(pg_admin: str, n_single: int, n_batched: int, per_tx: int) -> dict:
    name = f"authops_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_admin.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = pg_admin.rsplit("/", 1)[0] + f"/{name}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(data_dir=Path(tmp), database_url=url)
            db.upgrade(settings)
            result = {
                "audit append, 1 event per transaction (events/s)": round(_append(settings, n_single, 1)),
                f"plain INSERT, 1 row per transaction (rows/s)": round(_plain(url, n_single, 1)),
                f"audit append, {per_tx} events per transaction (events/s)": round(_append(settings, n_batched, per_tx)),
                f"plain INSERT, {per_tx} rows per transaction (rows/s)": round(_plain(url, n_batched, per_tx)),
            }
            db.dispose_engines()
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return result


def bench_verify(n: int) -> dict:
    from sqlmodel import Session

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        db.upgrade(settings)
        engine = db.get_engine(settings)
        t = time.perf_counter()
        done = 0
        while done < n:
            with Session(engine) as s:
                audit_log.append(s, [_event(done + i) for i in range(min(20_000, n - done))])
                s.commit()
            done += 20_000
        build_s = time.perf_counter() - t
        path = Path(tmp) / "audit.jsonl"
        t = time.perf_counter()
        export(settings, path)
        export_s = time.perf_counter() - t
        keys = load_keys([k.public_pem for k in load_signing_keys(settings)])
        t = time.perf_counter()
        report = verify_file(path, keys)
        verify_s = time.perf_counter() - t
        assert report.ok, report.summary()
        # Baseline: SHA-256 over the same canonical bytes, read from the same file.
        import base64
        blobs = [base64.b64decode(json.loads(line)["canonical"]) for line in path.open("rb")
                 if b'"type":"event"' in line]
        t = time.perf_counter()
        for b in blobs:
            hashlib.sha256(b).digest()
        sha_s = time.perf_counter() - t
        size_mb = path.stat().st_size / 1e6
        db.dispose_engines()
    return {"events": report.events, "export_file_mb": round(size_mb, 1), "build_log_s": round(build_s, 1),
            "export_s": round(export_s, 1), "verify_s": round(verify_s, 2),
            "baseline_sha256_same_bytes_s": round(sha_s, 2),
            "verify_events_per_s": round(report.events / verify_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--single", type=int, default=2_000)
    parser.add_argument("--batched", type=int, default=50_000)
    parser.add_argument("--per-tx", type=int, default=100)
    parser.add_argument("--verify-events", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/audit.json"))
    args = parser.parse_args()
    result = {"appends_postgresql": bench_appends(args.pg, args.single, args.batched, args.per_tx),
              "verify": bench_verify(args.verify_events)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
