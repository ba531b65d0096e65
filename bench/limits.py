"""Rate limits under load: requests sent vs admitted per key and per organisation per window, with
two API processes sharing the counters; and what the limiter costs a call.

Setup (not timed): a temporary data folder and a scratch PostgreSQL database (127.0.0.1:5432, dropped
at the end); customer organisation A with two API keys (product.call), customer B with one, and a
customer user whose name the login load uses. The anomaly rules that block or throttle only alert
(as in bench.product_call: the bureau lifts them for an agreed load test).

Servers: two `uvicorn authops.app:create_app --factory` processes on two ports, with
AUTHOPS_RATE_LIMIT_URL pointing both at one Redis (127.0.0.1:6379 db 15, else the embedded broker
the first one starts), a --window-second window and low limits (--per-key, --per-org, --per-login),
so a short run crosses several windows.

Load: for --seconds, --threads client threads per key send product calls as fast as they are
answered, alternating between the two processes; a further thread tries logins of one account name.
The calls name a product nobody has an agreement for: each admitted call is refused by the product
checks after the limiter (403/404), each refused one is 429 rate_limited with a Retry-After. Reported
per aligned window: sent and admitted per key and per organisation beside the limit, the most admitted
in any sliding window of the same length, and the share of 429s carrying a Retry-After header.

Cost: Limiter.admit for one call (a key and an organisation bucket), in this process, on the
in-process store and on Redis, beside a call that does nothing (the baseline), medians of 5 runs.

Run: `.venv/bin/python -m bench.limits` (about a minute). Exit status 1 when a limit was exceeded
in an aligned window, or nothing was refused (the limiter is not wired into the routes).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.pg import scratch_database

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "Bench-password-42"
REDIS = ("127.0.0.1", 6379)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def setup(settings) -> dict:
    from sqlmodel import Session

    from authops.audit.anomaly.rules import ensure_default_rules
    from authops.core.db import get_engine
    from authops.core.identity import OrgKind, Principal
    from authops.platform.identity import service as identity
    from authops.policies.enforcer import Authorizer, sync_role_policies

    engine = get_engine(settings)
    with Session(engine) as s:
        sync_role_policies(s)
        s.commit()
        keys: dict[str, tuple[str, str]] = {}  # key name -> (org name, plaintext)
        for org_name, key_names in (("A", ("A1", "A2")), ("B", ("B1",))):
            org = identity.create_org(s, kind=OrgKind.CUSTOMER, code=f"bench-{org_name.lower()}",
                                      name_zh=f"压测客户{org_name}", name_en=f"Bench customer {org_name}")
            admin = identity.create_user(s, org=org, username=f"bench-{org_name.lower()}", display_name="压测",
                                         password=PASSWORD, roles=["customer_admin"])
            s.commit()
            authorizer = Authorizer(engine)  # reads the roles just granted
            principal = Principal(kind="user", id=admin.id, org_id=org.id, org_kind=OrgKind.CUSTOMER,
                                  name=admin.username, roles=frozenset({"customer_admin"}))
            for name in key_names:
                _, plain = identity.create_api_key(s, settings, authorizer, principal=principal, name=name,
                                                   scopes=["product.call"])
                keys[name] = (org_name, plain)
        for rule in ensure_default_rules(s):
            if rule.action in ("block", "throttle"):
                rule.action = "alert"
                s.add(rule)
        s.commit()
    return {"keys": keys, "login": "bench-a"}


def serve(port: int, env: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "uvicorn", "authops.app:create_app", "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        if _port_open("127.0.0.1", port):
            return proc
        if proc.poll() is not None:
            raise SystemExit(f"the API process on port {port} exited with {proc.returncode}")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the API process on port {port} did not start")


def load(ports: list[int], keys: dict[str, tuple[str, str]], login: str, seconds: float, threads: int):
    """Run the load; return [(t, kind, who, org, status, retry_after_header)]."""
    import httpx

    records: list[tuple] = []
    lock = threading.Lock()
    stop = time.time() + seconds
    body = {"subject": "110105194912310025", "purpose": "压测"}

    def calls(name: str, org: str, secret: str, offset: int) -> None:
        with httpx.Client(timeout=10) as client:
            n = offset
            while time.time() < stop:
                port = ports[n % len(ports)]
                n += 1
                r = client.post(f"http://127.0.0.1:{port}/api/v1/products/no_agreement/calls", json=body,
                                headers={"Authorization": f"Bearer {secret}"})
                with lock:
                    records.append((time.time(), "call", name, org, r.status_code, "retry-after" in r.headers))

    def logins() -> None:
        with httpx.Client(timeout=10) as client:
            n = 0
            while time.time() < stop:
                port = ports[n % len(ports)]
                n += 1
                r = client.post(f"http://127.0.0.1:{port}/api/v1/auth/login",
                                json={"username": login, "password": PASSWORD})
                with lock:
                    records.append((time.time(), "login", login, "A", r.status_code, "retry-after" in r.headers))
                time.sleep(0.02)

    workers = [threading.Thread(target=calls, args=(name, org, secret, i)) for name, (org, secret) in keys.items()
               for i in range(threads)]
    workers.append(threading.Thread(target=logins))
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return records


def windows(records, kind: str, group: int, window: int, start: float) -> dict[str, dict[int, list[int]]]:
    """{who: {window index: [sent, admitted]}}, group 2 = key/account, 3 = organisation."""
    out: dict[str, dict[int, list[int]]] = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0]))
    for rec in records:
        if rec[1] != kind:
            continue
        cell = out[rec[group]][int((rec[0] - start) // window)]
        cell[0] += 1
        cell[1] += rec[4] != 429
    return out


def max_sliding(records, kind: str, group: int, who: str, window: int) -> int:
    times = sorted(r[0] for r in records if r[1] == kind and r[group] == who and r[4] != 429)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def limiter_cost(settings, redis_url: str | None, n: int = 3000) -> dict[str, float]:
    """Microseconds per admitted call: nothing (baseline), in-process counters, Redis."""
    from authops.core.identity import OrgKind, Principal
    from authops.platform import limits

    principal = Principal(kind="key", id=1, org_id=1, org_kind=OrgKind.CUSTOMER, name="k")
    big = {"rate_limit_call_per_key": 10**9, "rate_limit_call_per_org": 10**9}

    def per_call(fn) -> float:
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            runs.append((time.perf_counter() - t0) / n * 1e6)
        return statistics.median(runs)

    out = {"baseline (no limiter)": per_call(lambda: None)}
    memory = settings.model_copy(update={**big, "rate_limit_url": "memory"})
    out["in-process counters"] = per_call(lambda: limits.admit_call(memory, principal))
    if redis_url:
        shared = settings.model_copy(update={**big, "rate_limit_url": redis_url})
        assert limits.limiter_for(shared).store == "redis"
        out["Redis (one round trip)"] = per_call(lambda: limits.admit_call(shared, principal))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=16.0)
    p.add_argument("--window-seconds", type=int, default=4)
    p.add_argument("--per-key", type=int, default=40)
    p.add_argument("--per-org", type=int, default=60)
    p.add_argument("--per-login", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="client threads per key")
    args = p.parse_args()

    from authops.core.settings import Settings

    with tempfile.TemporaryDirectory(prefix="authops-bench-limits-") as tmp, scratch_database(Path(tmp)) as db_url:
        settings = Settings(data_dir=Path(tmp), database_url=db_url)
        world = setup(settings)
        redis_url = f"redis://{REDIS[0]}:{REDIS[1]}/15" if _port_open(*REDIS) else ""
        env = {**os.environ, "AUTHOPS_DATA_DIR": tmp, "AUTHOPS_DATABASE_URL": db_url,
               "AUTHOPS_RATE_LIMIT_URL": redis_url, "AUTHOPS_RATE_LIMIT_WINDOW_SECONDS": str(args.window_seconds),
               "AUTHOPS_RATE_LIMIT_CALL_PER_KEY": str(args.per_key),
               "AUTHOPS_RATE_LIMIT_CALL_PER_ORG": str(args.per_org),
               "AUTHOPS_RATE_LIMIT_LOGIN_PER_USER": str(args.per_login)}
        if redis_url:  # no counts left over from an earlier run
            import redis

            client = redis.Redis.from_url(redis_url)
            for key in client.scan_iter("authops:rl:*"):
                client.delete(key)
        else:  # the embedded broker, started before the API processes so both find it
            from authops.core import broker

            broker.ensure_broker(settings)
        ports = [_free_port(), _free_port()]
        procs = [serve(port, env) for port in ports]
        try:
            # Align the load with the servers' windows (Redis time is this machine's clock here).
            time.sleep(args.window_seconds - time.time() % args.window_seconds)
            start = time.time()
            records = load(ports, world["keys"], world["login"], args.seconds, args.threads)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
            if not redis_url:
                from authops.core import broker

                broker.stop_broker(settings)
        cost = limiter_cost(settings, redis_url or None)

    w = args.window_seconds
    full = int(args.seconds // w)
    store = f"Redis {redis_url}" if redis_url else "the embedded broker (valkey)"
    print(f"\nrate limits: 2 API processes sharing counters in {store}; window {w} s; limits per key "
          f"{args.per_key}, per organisation {args.per_org}, logins per account {args.per_login}")
    print(f"{'bucket':<16}{'limit':>7}" + "".join(f"{'w' + str(i) + ' sent/adm':>15}" for i in range(full))
          + f"{'max any ' + str(w) + 's':>14}")
    failures, refused, with_header = [], 0, 0
    groups = [("call", 2, f"key {name}", name, args.per_key) for name in sorted(world["keys"])]
    groups += [("call", 3, f"org {org}", org, args.per_org) for org in sorted({o for o, _ in world["keys"].values()})]
    groups += [("login", 2, "login account", world["login"], args.per_login)]
    for kind, group, label, who, limit in groups:
        cells = windows(records, kind, group, w, start)[who]
        row = f"{label:<16}{limit:>7}"
        for i in range(full):
            sent, admitted = cells.get(i, [0, 0])
            row += f"{f'{sent}/{admitted}':>15}"
            if admitted > limit:
                failures.append(f"{label} window {i}: {admitted} admitted > {limit}")
        row += f"{max_sliding(records, kind, group, who, w):>14}"
        print(row)
    for rec in records:
        if rec[4] == 429:
            refused += 1
            with_header += rec[5]
    others = collections.Counter(r[4] for r in records if r[4] != 429)
    print(f"requests {len(records)}: 429 {refused} (Retry-After on {with_header}), admitted answered "
          f"{dict(sorted(others.items()))}")
    print("\nlimiter cost per call (median of 5 x 3000):")
    for name, us in cost.items():
        print(f"  {name:<26}{us:8.1f} us")
    print("  target: under 200 us a call")
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "limits.json").write_text(json.dumps({
        "window_seconds": w, "limits": {"key": args.per_key, "org": args.per_org, "login": args.per_login},
        "store": "redis" if redis_url else "embedded", "requests": len(records), "refused": refused,
        "retry_after_headers": with_header, "cost_us": cost, "failures": failures}, indent=2))
    if failures or not refused or with_header != refused:
        print("FAILED: " + ("; ".join(failures) if failures else
                            "no request was refused: is limits.admit_call / admit_login wired into the routes?"
                            if not refused else "429 without Retry-After"))
        sys.exit(1)
    print("limits held: no aligned window admitted more than its limit")


if __name__ == "__main__":
    main()
