"""Sandbox jobs end to end: submit (scope, preflight, budget), run (inputs, engine or jail), release.

submit_job (API side, one transaction):
    workspace active and the caller's → spec/manifest validated and planned → every input field
    and share mode inside the workspace's grants → what the gate would refuse whatever the data
    → ε of the aggregate outputs reserved on each resource they read → a `sandbox.run` job.
run_sandbox_job (worker side, the job handler):
    decrypt the inputs into a private folder on tmpfs → run the spec (polars, streaming) or the
    partner code (jail) → each output through the release gate → every release stored encrypted,
    the budget committed and the job finished in ONE transaction, so a release happens exactly
    once even when a worker dies (the job is re-run from the start; nothing was released).
Failures and cancellations give the reservation back (observer on the job's end).
What the partner sees of a failure is generic: a status, a fixed phrase, no values.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core import crypto
from authops.core.errors import AuthopsError, Conflict, InvalidInput, NotFound
from authops.core.jobs import registry
from authops.core.jobs import service as job_service
from authops.core.jobs.models import Job
from authops.core.jobs.registry import JobContext, job_handler
from authops.core.settings import Settings, get_settings
from authops.core.storage.store import get_object_store
from authops.platform.catalog import service as catalog
from authops.platform.catalog.models import Dataset
from authops.policies import budget
from authops.policies.budget_models import MICRO
from authops.platform.sandbox import workspace
from authops.sandbox import code_jobs, gate
from authops.sandbox.masking import tokens
from authops.sandbox.models import SandboxJob, SandboxRelease, Workspace
from authops.sandbox.spec import build_plan, check_scope, load_spec
from authops.sandbox.spec.errors import SpecError
from authops.sandbox.spec.execute import lazy_outputs
from authops.sandbox.spec.plan import PlannedInput, PlannedOutput
from authops.sandbox.spec.scope import POLICY_SHARE_MODES

_logger = logging.getLogger(__name__)

KIND = "sandbox.run"
PARTIAL_KIND = "sandbox.partial"
MAX_PARTITIONS = 16
RESULT_TYPE = "application/vnd.apache.parquet"
MAX_RESULT_ROWS_SHOWN = 10_000
MOCK_CONSOLE = 16_000  # characters of a mock run's stdout and stderr kept for the partner
GATE_SHARE = 0.25  # of a code job's time limit, allowed in constant time for the release gate and storing
# What a partner sees when its code fails on the real data, whatever went wrong (see
# _release_code_in_constant_time): an exception's type and line, a status or a refusal naming a
# column would each carry bits of the data out.
CODE_FAILED = ("partner code did not complete on the real data. Why is not shown, because an error, its "
               "line or the run time could carry data out: run the job on the mock data (target=mock) to see "
               "what went wrong")


class JobFailed(AuthopsError):
    """What a partner sees when a job fails: a status and a fixed phrase, never data."""

    status_code = 422
    code = "job_failed"


# --- planning, shared by submit and run ----------------------------------------------------------

class Planned:
    """A job's inputs and outputs as the gate sees them, for spec and code jobs alike."""

    def __init__(self, session: Session, kind: str, spec: dict[str, Any], code: str | None) -> None:
        self.kind = kind
        self.code = code
        if kind == "spec":
            self.spec = load_spec(spec)
            wanted = [(i.resource, i.version) for i in self.spec.inputs]
            self.plan = build_plan(self.spec, workspace.schemas(session, wanted))
            self.inputs: dict[str, PlannedInput] = dict(self.plan.inputs)
            self.outputs: dict[str, PlannedOutput] = dict(self.plan.outputs)
            self.name = self.spec.name
        elif kind == "code":
            self.manifest = code_jobs.load_manifest(spec)
            code_jobs.check_code(code or "")
            wanted = [(i.resource, i.version) for i in self.manifest.inputs]
            self.inputs = code_jobs.plan_inputs(self.manifest, workspace.schemas(session, wanted))
            self.outputs = code_jobs.plan_outputs(self.manifest, self.inputs)
            self.plan = None
            self.name = self.manifest.name
        else:
            raise InvalidInput("kind must be 'spec' or 'code'", details={"field": "kind"})
        self.fields = code_jobs.field_specs(self.inputs)

    def scope_problems(self, allowed: dict[str, list[str]], modes: dict[str, list[str]]) -> list[str]:
        if self.plan is not None:
            return check_scope(self.plan, allowed, modes)
        problems = []
        for alias, inp in self.inputs.items():
            if inp.resource not in allowed:
                problems.append(f"resource {inp.resource!r} (inputs[{alias}]) is outside the approved scope; "
                                f"remove it or have its use approved")
                continue
            for f in inp.fields:
                if f not in allowed[inp.resource]:
                    problems.append(f"field {inp.resource}.{f} is outside the approved scope: inputs[{alias}].fields "
                                    f"reads it, and partner code may put it in any output")
        for o in self.outputs.values():
            need = POLICY_SHARE_MODES[o.policy]
            for inp in self.inputs.values():
                have = set(modes.get(inp.resource, ()))
                if inp.resource in allowed and not have & {x.value for x in need}:
                    problems.append(f"outputs[{o.name}] is a {o.policy} output drawing on {inp.resource!r}, which is "
                                    f"approved for {' or '.join(sorted(have)) or 'nothing'}")
        return problems

    def charges(self) -> tuple[float, float, dict[str, tuple[float, float]]]:
        """(total ε, total δ, per resource (ε, δ)) that the aggregate outputs spend.

        Summed as decimals of what the spec says, so 15 outputs of ε 0.05 need ε 0.75 exactly (a
        float sum, 0.7500000000000001, would be charged 750,001 micro-ε by the ledger's rounding up)."""
        from decimal import Decimal

        def dec(x: float | None) -> Decimal:
            return Decimal(str(x or 0.0))

        per: dict[str, list[Decimal]] = {}
        eps = delta = Decimal(0)
        for o in self.outputs.values():
            if o.policy != "aggregate":
                continue
            r = o.release
            eps += dec(r.epsilon)
            delta += dec(r.delta)
            for resource in sorted({ref[0] for ref in o.influences | {s for c in o.columns for s in c.sources}}):
                got = per.setdefault(resource, [Decimal(0), Decimal(0)])
                got[0] += dec(r.epsilon)
                got[1] += dec(r.delta)
        return float(eps), float(delta), {k: (float(v[0]), float(v[1])) for k, v in per.items()}


def _plan(session: Session, sj: SandboxJob) -> Planned:
    return Planned(session, sj.kind, sj.spec, sj.code)


# --- submit --------------------------------------------------------------------------------------

def submit_job(session: Session, *, ws: Workspace, kind: str, spec: dict[str, Any] | str, code: str | None = None,
               params: dict[str, Any] | None = None, claims: dict[str, list] | None = None,
               partitions: int = 1, target: str = "real", actor: audit_log.Actor, created_by: int | None = None
               ) -> tuple[SandboxJob, Job]:
    """Check and queue a job; raises OutOfScope, SpecError, ReleaseRefused or BudgetExhausted.

    With partitions > 1 (aggregate-only spec jobs), the privacy units are split into that many
    disjoint partitions, each bounded and aggregated by its own `sandbox.partial` job on any
    worker; the main job merges the bounded partials and adds noise once. Dispatch job_ids(sj).

    target="mock" runs on the granted resources' mock datasets (synthetic, never real): nothing
    is charged, and the partner also gets what the gate was given (the pre-release rows) and,
    for code, its stdout, stderr and error, which a real run never shows.
    """
    if target not in ("real", "mock"):
        raise InvalidInput("target must be 'real' or 'mock'", details={"field": "target"})
    if ws.state != "active":
        raise Conflict(f"workspace {ws.id} is {ws.state}; jobs run only in an active workspace")
    document = spec if isinstance(spec, dict) else _parse(spec)
    planned = Planned(session, kind, document, code)
    allowed, modes = workspace.scope(session, ws)
    problems = planned.scope_problems(allowed, modes)
    if problems:
        audit_log.record(session, actor, "sandbox.refuse", outcome="denied", object_type="workspace",
                         object_id=ws.id, details={"reason": "out_of_scope", "job": planned.name,
                                                   "problems": len(problems)})
        raise workspace.OutOfScope(f"the job {planned.name!r} reaches outside workspace {ws.id}'s approved "
                                   f"scope: " + "; ".join(problems[:3])
                                   + (f"; and {len(problems) - 3} more" if len(problems) > 3 else ""),
                                   details={"problems": problems})
    if target == "real":
        from authops.platform.assessment import prefiling  # assessment builds on governance

        try:
            prefiling.require_prefiled(session, {i.resource for i in planned.inputs.values()})
        except prefiling.NotPrefiled as exc:
            audit_log.record(session, actor, "sandbox.refuse", outcome="denied", object_type="workspace",
                             object_id=ws.id, details={"reason": "prefiling_overdue", "job": planned.name,
                                                       "resource": exc.details["resource"]})
            raise
    tool = planned.manifest.tool if getattr(planned, "manifest", None) is not None else None
    if tool and target == "real":
        from authops.platform.governance import tools as gov_tools

        for resource in sorted({i.resource for i in planned.manifest.inputs}):
            try:
                gov_tools.require_tool_approved(session, ws.org_id, tool, resource=resource)
            except AuthopsError:
                audit_log.record(session, actor, "sandbox.refuse", outcome="denied", object_type="workspace",
                                 object_id=ws.id, details={"reason": "tool_not_approved", "tool": tool,
                                                           "resource": resource})
                raise
    params = dict(params or {})
    if planned.plan is not None:
        planned.plan.bind(params)  # unknown or mistyped parameters are refused now, not in the worker
    claims = dict(claims or {})
    unknown = sorted(set(claims) - set(planned.outputs))
    if unknown:
        raise InvalidInput(f"claims.{unknown[0]}: the job has no output of that name", details={"field": "claims"})
    for o in planned.outputs.values():
        try:
            gate.preflight(o, planned.fields, code=kind == "code", claims=claims.get(o.name))
        except gate.ReleaseRefused as exc:
            audit_log.record(session, actor, "sandbox.refuse", outcome="denied", object_type="workspace",
                             object_id=ws.id, details={"reason": "release_policy", "job": planned.name,
                                                       "output": o.name})
            raise exc
    if not isinstance(partitions, int) or isinstance(partitions, bool) or not 1 <= partitions <= MAX_PARTITIONS:
        raise InvalidInput(f"partitions must be a whole number from 1 to {MAX_PARTITIONS}",
                           details={"field": "partitions"})
    if partitions > 1 and (kind != "spec" or any(o.policy != "aggregate" for o in planned.outputs.values())):
        raise InvalidInput("only a spec job whose outputs are all aggregates can be split into partitions",
                           details={"field": "partitions"})
    eps, delta, per = planned.charges()
    if target == "mock":
        eps, delta, per = 0.0, 0.0, {}
        if partitions > 1:
            raise InvalidInput("a mock run is small: run it in one partition", details={"field": "partitions"})
    job = job_service.create_job(session, kind=KIND, params={}, org_id=ws.org_id, created_by=created_by,
                                 max_attempts=3)
    sj = SandboxJob(job_id=job.id, workspace_id=ws.id, org_id=ws.org_id, kind=kind, name=planned.name,
                    spec=document, code=code, params={"values": params, "claims": claims, "target": target},
                    readers=sorted({ws.org_id, *ws.readers}), epsilon=eps, created_by=actor.name[:64])
    session.add(sj)
    session.flush()
    job.params = {"sandbox_job_id": sj.id}
    session.add(job)
    if partitions > 1:
        children = {}
        for i in range(1, partitions):
            child = job_service.create_job(session, kind=PARTIAL_KIND, org_id=ws.org_id, created_by=created_by,
                                           params={"sandbox_job_id": sj.id, "partition": i, "of": partitions})
            children[str(i)] = child.id
        sj.params = {**sj.params, "partitions": partitions, "children": children}
        session.add(sj)
    if eps > 0 or delta > 0:
        budget.reserve(session, job_id=job.id, org_id=ws.org_id, resources=sorted(per), epsilon=eps, delta=delta)
    audit_log.record(session, actor, "sandbox.submit", object_type="job", object_id=job.id,
                     details={"workspace_id": ws.id, "kind": kind, "name": planned.name, "target": target,
                              "outputs": sorted(planned.outputs), "epsilon_micro": round(eps * MICRO),
                              "code_sha256": hashlib.sha256(code.encode()).hexdigest() if code else None})
    session.flush()
    return sj, job


def _parse(text: str) -> dict[str, Any]:
    from authops.sandbox.spec.models import parse_text

    doc = parse_text(text)
    if not isinstance(doc, dict):
        raise SpecError("the spec must be a mapping (JSON object or YAML mapping)")
    return doc


def job_ids(sj: SandboxJob) -> list[int]:
    """The job and its partition jobs: what to dispatch after the submission commits."""
    return [sj.job_id, *(int(v) for v in (sj.params.get("children") or {}).values())]


# --- run -----------------------------------------------------------------------------------------

def token_key(settings: Settings, org_id: int, workspace_id: int) -> bytes:
    """Tokens scoped to one partner (customer) and one workspace (product)."""
    master = crypto.derive_key(hashlib.sha256(settings.secret_key.get_secret_value().encode()).digest(),
                               "sandbox-token-master")
    return tokens.token_key(master, org_id, workspace_id)


def _private_base() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def sweep_private_folders(prefix: str = "authops-job-", grace_seconds: float = 300.0) -> list[Path]:
    """Remove private folders whose owner died (SIGKILL, power cut) without its `finally` running.

    Each live folder holds an flock on its `.owner` file for as long as its job runs; the kernel
    drops the lock with the process. A folder whose lock we can take, or one older than the
    grace period that never got an owner file, is plaintext nobody will ever clean: remove it.
    """
    base = Path(_private_base() or tempfile.gettempdir())
    removed: list[Path] = []
    for folder in base.glob(prefix + "*"):
        try:
            if not folder.is_dir() or folder.stat().st_uid != os.getuid():
                continue
            owner = folder / ".owner"
            if owner.exists():
                with open(owner, "a+") as fh:
                    try:
                        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live job
                    shutil.rmtree(folder, ignore_errors=True)
            elif time.time() - folder.stat().st_mtime > grace_seconds:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                continue
        except FileNotFoundError:
            continue  # its owner finished while we looked
        removed.append(folder)
    if removed:
        _logger.warning("removed %d private folder(s) left by a worker that died mid-job", len(removed))
    return removed


@contextlib.contextmanager
def private_folder(prefix: str = "authops-job-") -> Iterator[Path]:
    """A 0700 folder on tmpfs (RAM, never the disk) for plaintext inputs and outputs; always removed.

    If this process is killed the `finally` never runs; the folder's `.owner` lock dies with it
    and the next job on the host sweeps the folder (see sweep_private_folders).
    """
    sweep_private_folders(prefix)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=_private_base()))
    owner = open(folder / ".owner", "a+")  # noqa: SIM115 - closed below
    try:
        fcntl.flock(owner, fcntl.LOCK_EX)
        os.chmod(folder, 0o700)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        owner.close()


@contextlib.contextmanager
def jail_slot(slots: int = 64) -> Iterator[int]:
    """A jail slot no other job on this host holds (an flock per slot; released if we die)."""
    folder = Path("/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()) / "authops-jail-slots"
    folder.mkdir(mode=0o700, exist_ok=True)
    for slot in range(slots):
        fh = open(folder / f"{slot}.lock", "a+")  # noqa: SIM115 - closed below
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        try:
            # We hold the slot: anything still running under its uid was left by a worker that
            # died mid-job (the jail runs in its own process group). It is nobody's now.
            from authops.sandbox.jail import JailConfig, _kill_uid

            _kill_uid(JailConfig().base_uid + slot)
            yield slot
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
        return
    raise Conflict(f"all {slots} jail slots on this host are busy; the job will be retried")


def _dataset(session: Session, resource: str, version: int) -> Dataset:
    res = catalog.get_resource(session, resource)
    if res.dataset_id is not None:
        current = session.get(Dataset, res.dataset_id)
        if current is not None and current.schema_version == version:
            return current
    ds = session.exec(select(Dataset).where(Dataset.resource_id == res.id, Dataset.schema_version == version)
                      .order_by(Dataset.version.desc())).first()
    if ds is None:
        raise JobFailed(f"{resource} has no data loaded under schema version {version}")
    return ds


def _mock_key(session: Session, resource: str, version: int) -> str:
    res = catalog.get_resource(session, resource)
    if not res.mock_object_key:
        raise JobFailed(f"{resource} has no mock dataset yet; the providing department publishes it")
    if res.schema_version != version:
        raise JobFailed(f"the mock dataset of {resource} follows schema version {res.schema_version}, "
                        f"not {version}")
    return res.mock_object_key


def _decrypt_inputs(session: Session, settings: Settings, planned: Planned, folder: Path,
                    project: bool, mock: bool = False) -> dict[str, Path]:
    """Each input's dataset decrypted into the folder (0644 for the jail's uid); projected for code.

    With mock=True, each resource's mock dataset instead: the real one is not read at all."""
    store = get_object_store(settings)
    paths = {}
    for alias, inp in planned.inputs.items():
        key = (_mock_key(session, inp.resource, inp.version) if mock
               else _dataset(session, inp.resource, inp.version).object_key)
        path = folder / f"{alias}.parquet"
        if project:
            full = folder / f".{alias}.full.parquet"
            store.get_to_file(key, full)
            pf = pq.ParquetFile(full)
            with pq.ParquetWriter(path, pa.schema([pf.schema_arrow.field(f) for f in inp.fields])) as w:
                for batch in pf.iter_batches(columns=list(inp.fields), batch_size=256_000):
                    w.write_batch(batch)
            full.unlink()
        else:
            store.get_to_file(key, path)
        os.chmod(path, 0o644)
        paths[alias] = path
    return paths


def _run_spec(planned: Planned, inputs: dict[str, Path], params: dict[str, Any], folder: Path,
              ctx: JobContext) -> dict[str, Any]:
    """Each output's pre-release data: aggregates as lazy plans (they stream into the DP bounding),
    the others computed into Parquet files on the private tmpfs folder."""
    import polars as pl

    lazies = lazy_outputs(planned.plan, {a: str(p) for a, p in inputs.items()}, params)
    out: dict[str, Any] = {}
    for i, (name, lf) in enumerate(lazies.items()):
        if planned.outputs[name].policy == "aggregate":
            out[name] = lf
            continue
        ctx.progress(0.2 + 0.5 * i / max(len(lazies), 1), f"computing {name}")
        path = folder / f"out-{name}.parquet"
        try:
            lf.sink_parquet(str(path), engine="streaming", compression="lz4")
        except pl.exceptions.PolarsError as exc:
            raise _engine_failed(name, exc) from None
        out[name] = path
    return out


def _engine_failed(name: str, exc: BaseException) -> JobFailed:
    return JobFailed(f"the job failed while computing outputs[{name}] ({type(exc).__name__}); check that "
                     f"it runs on the mock data")


def jail_config(planned: Planned):
    """The jail's limits for a code job: its manifest's time_limit, if it declares one, as the wall time."""
    import dataclasses

    from authops.sandbox.jail import JailConfig

    base = JailConfig()
    limit = getattr(getattr(planned, "manifest", None), "time_limit", None)
    if limit is None:
        return base
    return dataclasses.replace(base, wall_seconds=float(limit), cpu_seconds=min(base.cpu_seconds, int(limit)))


def _code_runs(planned: Planned) -> int:
    """How many times a code job's code runs: twice when it reads identity fields (sandbox.invariance)."""
    from authops.sandbox import invariance

    return 2 if any(invariance.identity_fields(_input_fields(planned)).values()) else 1


def _input_fields(planned: Planned) -> dict[str, dict[str, Any]]:
    return {alias: {f: inp.schema.field(f) for f in inp.fields} for alias, inp in planned.inputs.items()}


def _jail(code: str, inputs: dict[str, Path], params: dict[str, Any], config, out: Path):
    from authops.sandbox.jail import run_partner_code

    with jail_slot() as slot:  # outputs land in the private folder (tmpfs), removed with it
        return run_partner_code(code, inputs, params, config=config, slot=slot, output_dir=out)


def _run_code(planned: Planned, sj: SandboxJob, inputs: dict[str, Path], folder: Path, ctx: JobContext,
              console: dict[str, str] | None = None, clock: dict[str, float] | None = None) -> dict[str, Path]:
    """Run the partner's code in the jail. `console` (mock runs only) receives its stdout and stderr.

    Code that reads identity fields runs a second time on the inputs with the subjects renamed,
    and must return the same (sandbox.invariance); a model output's keys must be input subjects."""
    from authops.sandbox import invariance
    from authops.sandbox.jail import JailStatus

    config = jail_config(planned)
    params = sj.params.get("values", {})
    ctx.progress(0.2, "running partner code in the jail")
    if clock is not None:
        clock["started"] = time.monotonic()  # the constant-time clock starts with the code
    result = _jail(sj.code or "", inputs, params, config, folder / "out")
    if console is not None:
        console["stdout"] = result.operator_stdout.decode("utf-8", "replace")[-MOCK_CONSOLE:]
        console["stderr"] = result.operator_stderr.decode("utf-8", "replace")[-MOCK_CONSOLE:]
    if result.status != JailStatus.OK:
        tail = ""
        if console is not None and console["stderr"]:  # mock data: the partner may see its traceback
            tail = "\n--- stderr (mock run) ---\n" + console["stderr"][-1500:]
        raise JobFailed(f"partner code {result.status.value}: {result.summary}{tail}",
                        details={"jail": result.partner_view()})
    missing = [n for n in planned.outputs if n not in result.outputs]
    if missing:
        raise JobFailed(f"run() returned no output named {missing[0]!r}; the manifest lists "
                        f"{', '.join(planned.outputs)}")
    produced = {n: result.outputs[n] for n in planned.outputs}
    identity = invariance.identity_fields(_input_fields(planned))
    if any(identity.values()):
        renaming = invariance.renaming(inputs, identity)
        renamed = invariance.rename_inputs(inputs, identity, renaming, folder)
        again = _jail(sj.code or "", renamed, params, config, folder / "out-renamed")
        if again.status != JailStatus.OK or any(n not in again.outputs for n in planned.outputs):
            raise JobFailed(f"partner code {again.status.value} when run again on the inputs with the subjects "
                            f"renamed ({again.summary}); code may not depend on who the subjects are")
        for name, o in planned.outputs.items():
            differs = invariance.difference(pq.read_table(produced[name]), pq.read_table(again.outputs[name]),
                                            renaming)
            if differs:
                raise gate.ReleaseRefused(
                    f"outputs[{name}] ({o.policy}): what run() returns changes when the subjects' identifiers, "
                    f"names, phones and bank accounts are replaced by those of other subjects ({differs}): "
                    f"partner code may not carry who a subject is into a release. Compute scores from what "
                    f"the subjects did, and pass keys through unchanged",
                    details={"output": name, "policy": o.policy, "check": "invariance"})
    keyed = [(n, o.roles["key"][0]) for n, o in planned.outputs.items() if o.policy == "model" and o.roles.get("key")]
    if keyed:
        columns = {a: list(c) for a, c in identity.items() if c} or {
            alias: [f for f in inp.fields if inp.schema.field(f).dtype.value == "string"]
            for alias, inp in planned.inputs.items()}
        known = invariance.subjects(inputs, columns)
        for name, key in keyed:
            unknown = invariance.unknown_keys(pq.read_table(produced[name], columns=None), key, known)
            if unknown:
                raise gate.ReleaseRefused(
                    f"outputs[{name}] (model): {unknown} key value(s) are no subject of the inputs; a model "
                    f"output scores the subjects it read, so its keys are theirs, passed through unchanged",
                    details={"output": name, "policy": "model", "column": key})
    return produced


def _partials(settings: Settings, planned: Planned, sj: SandboxJob, inputs: dict[str, Path], folder: Path,
              i: int, n: int, ctx: JobContext) -> dict[str, Any]:
    """Bounded partial aggregates of partition i of n of every output (exact sums: never released)."""
    import polars as pl

    from authops.sandbox.dp import partial_aggregate, unit_partition
    from authops.sandbox.spec.outputs import aggregate_spec
    from authops.sandbox.spec.plan import UNIT_COLUMN

    lazies = lazy_outputs(planned.plan, {a: str(p) for a, p in inputs.items()}, sj.params.get("values", {}))
    out = {}
    for name, lf in lazies.items():
        ctx.progress(0.2 + 0.5 * len(out) / max(len(lazies), 1), f"partition {i + 1}/{n}: computing {name}")
        try:
            out[name] = partial_aggregate(lf.filter(unit_partition(UNIT_COLUMN, n) == i),
                                          aggregate_spec(planned.outputs[name]), partition=(i, n))
        except pl.exceptions.PolarsError as exc:
            raise _engine_failed(name, exc) from None
    return out


def _partial_key(job_id: int, output: str, i: int, n: int, part: str) -> str:
    return f"partials/{job_id}/{output}/{i}-of-{n}/{part}.parquet"


def _store_partials(settings: Settings, job_id: int, partials: dict[str, Any], i: int, n: int) -> None:
    """Each partial's frames, encrypted; the metadata rides in the cells file's schema."""
    import json

    store = get_object_store(settings)
    for output, p in partials.items():
        meta = {"fingerprint": p.fingerprint, "partition": list(p.partition), "rows_kept": p.rows_kept,
                "bins": sorted(p.bins)}
        cells = p.cells.to_arrow()
        cells = cells.replace_schema_metadata({b"authops.partial": json.dumps(meta).encode()})
        for part, table in [("cells", cells), *((f"bins-{k}", v.to_arrow()) for k, v in p.bins.items())]:
            buf = io.BytesIO()
            pq.write_table(table, buf, compression="zstd")
            store.put(_partial_key(job_id, output, i, n, part), buf.getvalue(), content_type=RESULT_TYPE)


def _load_partials(settings: Settings, job_id: int, output: str, i: int, n: int):
    import json

    import polars as pl

    from authops.sandbox.dp import Partial

    store = get_object_store(settings)
    cells = pq.read_table(io.BytesIO(store.get(_partial_key(job_id, output, i, n, "cells"))))
    meta = json.loads(cells.schema.metadata[b"authops.partial"])
    bins = {k: pl.from_arrow(pq.read_table(io.BytesIO(store.get(_partial_key(job_id, output, i, n, f"bins-{k}")))))
            for k in meta["bins"]}
    return Partial(meta["fingerprint"], tuple(meta["partition"]), pl.from_arrow(cells.replace_schema_metadata(None)),
                   bins, int(meta["rows_kept"]))


def _gather_partials(settings: Settings, sj: SandboxJob, job_id: int, own: dict[str, Any], n: int,
                     ctx: JobContext) -> dict[str, list]:
    """Wait for the partition jobs, running any still queued here (work stealing), then load them all."""
    import time

    from authops.core.db import session_scope
    from authops.core.jobs.models import JobState

    children = {int(i): int(j) for i, j in (sj.params.get("children") or {}).items()}
    while True:
        with session_scope(settings) as s:
            states = {i: s.get(Job, j, populate_existing=True).state for i, j in children.items()}
        bad = [i for i, st in states.items() if st in (JobState.FAILED.value, JobState.CANCELLED.value)]
        if bad:
            raise JobFailed(f"partition {bad[0] + 1} of {n} did not complete; nothing was released")
        done = sum(st == JobState.SUCCEEDED.value for st in states.values())
        ctx.progress(0.7 + 0.05 * done / max(len(children), 1), f"partitions done: {done + 1}/{n}")
        if done == len(children):
            break
        queued = [children[i] for i, st in states.items() if st == JobState.QUEUED.value]
        if queued:  # no worker has taken it yet: run it here (the claim is conditional, so no double run)
            job_service.run_job(settings, queued[0], worker=f"job-{job_id}-inline")
        else:
            time.sleep(0.3)
    return {name: [own[name], *(_load_partials(settings, job_id, name, i, n) for i in sorted(children))]
            for name in own}


@job_handler(PARTIAL_KIND)
def run_partial(session: Session, job: Job, ctx: JobContext) -> dict[str, Any]:
    """One partition of a partitioned aggregate job: bound and aggregate its units, store the partials."""
    settings = get_settings()
    sj = session.exec(select(SandboxJob).where(SandboxJob.id == int(job.params["sandbox_job_id"]))).one()
    i, n = int(job.params["partition"]), int(job.params["of"])
    planned = _plan(session, sj)
    with private_folder() as folder:
        ctx.progress(0.05, f"partition {i + 1}/{n}: decrypting inputs")
        inputs = _decrypt_inputs(session, settings, planned, folder, project=False)
        partials = _partials(settings, planned, sj, inputs, folder, i, n, ctx)
    _store_partials(settings, sj.job_id, partials, i, n)
    return {"partition": i, "of": n, "outputs": sorted(partials)}


def _store_release(settings: Settings, job_id: int, name: str, table: pa.Table, attempt: str) -> str:
    # One key per attempt: an attempt that lost its lease (a frozen or cut-off worker) and resumes after
    # another attempt committed writes beside the committed release, never over it.
    key = f"releases/{job_id}/{attempt}/{name}.parquet"
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    get_object_store(settings).put(key, buf.getvalue(), content_type=RESULT_TYPE)
    return key


def constant_time(settings: Settings) -> bool:
    """Whether real code jobs run in constant time: the setting, or by default in production mode only."""
    from authops.core.settings import Mode

    value = getattr(settings, "sandbox_code_constant_time", None)
    return settings.mode is Mode.PRODUCTION if value is None else bool(value)


def _pad(started: float, minimum: float, step: float) -> None:
    """Sleep until `started + minimum`, or if that has passed, the next whole `step` after `started`."""
    now = time.monotonic()
    target = started + minimum
    if now > target:
        target = started + step * math.ceil((now - started) / step)
    if target > now:
        time.sleep(target - now)


def _release_code_in_constant_time(settings: Settings, session: Session, planned: Planned, sj: SandboxJob, job: Job,
                                   ctx: JobContext, key: bytes, claims: dict[str, Any]
                                   ) -> tuple[list[gate.Released], dict[str, str]]:
    """A real code job: what the partner sees of it carries nothing of the data but success or failure.

    Failures of any kind (the jail's status, its exception and line, the release gate's refusals)
    show one fixed phrase; operators find the reason in the worker log. With constant_time, the
    job's stages are not reported once the code runs, and the job ends exactly `runs` times its
    time limit after the code started (a run that reaches the limit is stopped at it) plus
    GATE_SHARE of it for the release gate and storing, or if those take longer, at the next whole
    multiple of the limit: so the run time carries nothing (at most which multiple, when the gate
    is slow). The worker is held for that time: the price of constant time.
    """
    from authops.core.errors import ConfigurationError, Unavailable

    padded = constant_time(settings)
    step = jail_config(planned).wall_seconds
    span = _code_runs(planned) * step + GATE_SHARE * step
    clock = {"started": time.monotonic()}  # reset when the code starts
    quiet = (lambda fraction, message: None) if padded else ctx.progress
    try:
        out = _produce_and_release(settings, session, planned, sj, job, ctx, key, claims, None, quiet, clock)
    except (Conflict, Unavailable, ConfigurationError):
        raise  # the host's trouble (busy slots, no jail), not the data's: retried or fixed by operators
    except Exception as exc:
        if type(exc).__name__ == "SoftTimeLimitExceeded":
            raise
        reason = exc.message if isinstance(exc, AuthopsError) else type(exc).__name__
        _logger.warning("job %s: partner code failed on the real data (%s): %s", job.id,
                        getattr(exc, "code", type(exc).__name__), reason)
        if padded:
            _pad(clock["started"], span, step)
        raise JobFailed(CODE_FAILED) from None
    if padded:
        _pad(clock["started"], span, step)
    return out


def _produce_and_release(settings: Settings, session: Session, planned: Planned, sj: SandboxJob, job: Job,
                         ctx: JobContext, key: bytes, claims: dict[str, Any], console: dict[str, str] | None,
                         progress, clock: dict[str, float] | None = None
                         ) -> tuple[list[gate.Released], dict[str, str]]:
    """Decrypt, run (spec, partitions or code), release gate, store: every release's object key."""
    mock = sj.params.get("target") == "mock"
    pre_release: dict[str, str] = {}
    with private_folder() as folder:
        ctx.progress(0.05, "decrypting mock inputs" if mock else "decrypting inputs")
        inputs = _decrypt_inputs(session, settings, planned, folder, project=sj.kind == "code", mock=mock)
        n = int(sj.params.get("partitions") or 1)
        if n > 1:
            own = _partials(settings, planned, sj, inputs, folder, 0, n, ctx)
            _store_partials(settings, job.id, own, 0, n)
            produced = _gather_partials(settings, sj, job.id, own, n, ctx)
        elif sj.kind == "spec":
            produced = _run_spec(planned, inputs, sj.params.get("values", {}), folder, ctx)
        else:
            produced = _run_code(planned, sj, inputs, folder, ctx, console, clock)
        if mock:  # synthetic rows: what the gate is given may be shown, to debug the job
            for name, data in produced.items():
                if isinstance(data, list):
                    continue
                table = (data if isinstance(data, pa.Table) else
                         data.limit(MAX_RESULT_ROWS_SHOWN).collect().to_arrow() if hasattr(data, "collect")
                         else pq.read_table(data))
                pre_release[name] = _store_release(settings, job.id, f"{name}.pre-release",
                                                   table.slice(0, MAX_RESULT_ROWS_SHOWN), ctx.lease_token[:16])
        progress(0.75, "release gate")
        released: list[gate.Released] = []
        import polars as pl

        for name, o in planned.outputs.items():
            try:
                released.append(gate.release(o, produced[name], token_key=key, fields=planned.fields,
                                             claims=claims.get(name), code=sj.kind == "code"))
            except pl.exceptions.PolarsError as exc:  # the lazy plan runs inside the gate's bounding
                raise _engine_failed(name, exc) from None
    progress(0.9, "storing releases")
    keys = {r.output: _store_release(settings, job.id, r.output, r.table, ctx.lease_token[:16]) for r in released}
    for r in released:
        if mock:
            r.summary = {**r.summary, "mock": True, "pre_release_key": pre_release.get(r.output)}
    return released, keys


@job_handler(KIND)
def run_sandbox_job(session: Session, job: Job, ctx: JobContext) -> dict[str, Any]:
    settings = get_settings()
    sj = session.exec(select(SandboxJob).where(SandboxJob.id == int(job.params["sandbox_job_id"]))).one()
    ws = session.get(Workspace, sj.workspace_id)
    if ws is None or ws.state != "active":
        raise JobFailed(f"workspace {sj.workspace_id} is no longer active")
    ctx.progress(0.02, "planning")
    planned = _plan(session, sj)
    allowed, modes = workspace.scope(session, ws)
    if planned.scope_problems(allowed, modes):  # the grants may have changed since submission
        raise workspace.OutOfScope("the workspace's approved scope no longer covers this job")
    key = token_key(settings, ws.org_id, ws.id)
    claims = sj.params.get("claims", {})
    # Everything slow happens before this job's transaction writes (SQLite: heartbeats must get through).
    mock = sj.params.get("target") == "mock"
    console: dict[str, str] | None = {} if mock else None
    if sj.kind == "code" and not mock:
        released, keys = _release_code_in_constant_time(settings, session, planned, sj, job, ctx, key, claims)
    else:
        released, keys = _produce_and_release(settings, session, planned, sj, job, ctx, key, claims, console,
                                              ctx.progress)
    # --- one transaction from here: releases, budget, audit and the job's success commit together
    actor = audit_log.Actor(kind="system", name=f"job {job.id}", org_id=sj.org_id)
    spent: dict[str, tuple[float, float]] = {}
    for r in released:
        o = planned.outputs[r.output]
        session.add(SandboxRelease(job_id=job.id, sandbox_job_id=sj.id, output=r.output, policy=r.policy,
                                   rows=r.table.num_rows, columns=r.table.column_names, object_key=keys[r.output],
                                   readers=list(sj.readers), summary=_jsonable(r.summary)))
        if r.policy == "aggregate" and not mock:
            for resource in sorted({ref[0] for ref in o.influences | {s for c in o.columns for s in c.sources}}):
                e, d = spent.get(resource, (0.0, 0.0))
                spent[resource] = (e + r.epsilon, d + r.delta)
        audit_log.record(session, actor, "sandbox.release", object_type="job", object_id=job.id,
                         details={"output": r.output, "policy": r.policy, "rows": r.table.num_rows,
                                  "epsilon_micro": round(r.epsilon * MICRO)})
    if not mock:
        budget.commit(session, job.id, spent=_capped(session, job.id, spent))
    session.flush()
    result: dict[str, Any] = {"target": "mock" if mock else "real",
                              "outputs": {r.output: {"policy": r.policy, "rows": r.table.num_rows,
                                                     "epsilon": r.epsilon, "delta": r.delta} for r in released}}
    if console is not None:
        result["console"] = console
    return result


def _capped(session: Session, job_id: int, spent: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """What was spent, never above what was reserved (float sums may differ in the last digit)."""
    from authops.policies.budget_models import PICO, BudgetReservation

    held = {r.resource_code: r for r in session.exec(select(BudgetReservation).where(
        BudgetReservation.job_id == job_id, BudgetReservation.state == "reserved"))}
    out = {}
    for resource, (e, d) in spent.items():
        r = held.get(resource)
        if r is None:
            continue
        out[resource] = (min(e, r.epsilon / MICRO), min(d, r.delta / PICO))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _on_job_end(session: Session, job_id: int, outcome: str) -> None:
    """A sandbox job that failed or was cancelled gives its reservation back, in the same transaction."""
    if outcome in ("failed", "cancelled"):
        budget.give_back(session, job_id)
        sj = session.exec(select(SandboxJob).where(SandboxJob.job_id == job_id)).first()
        for child in (sj.params.get("children") or {}).values() if sj else ():
            with contextlib.suppress(Conflict, NotFound):  # already over: nothing to stop
                job_service.cancel_job(session, int(child))


registry.observe(_on_job_end)


# --- reading -------------------------------------------------------------------------------------

def get_sandbox_job(session: Session, job_id: int, *, org_id: int | None = None) -> tuple[SandboxJob, Job]:
    sj = session.exec(select(SandboxJob).where(SandboxJob.job_id == job_id)).first()
    if sj is None or (org_id is not None and sj.org_id != org_id):
        raise NotFound(f"sandbox job {job_id} not found")
    return sj, job_service.get_job(session, job_id)


def releases(session: Session, job_id: int) -> list[SandboxRelease]:
    return list(session.exec(select(SandboxRelease).where(SandboxRelease.job_id == job_id)
                             .order_by(SandboxRelease.output)))


def read_release(session: Session, settings: Settings, job_id: int, output: str, *, reader_org: int,
                 limit: int = MAX_RESULT_ROWS_SHOWN) -> tuple[SandboxRelease, pa.Table]:
    """A released table, for an organisation the job names as a reader (else NotFound)."""
    rel = session.exec(select(SandboxRelease).where(SandboxRelease.job_id == job_id,
                                                    SandboxRelease.output == output)).first()
    if rel is None or reader_org not in rel.readers:
        raise NotFound(f"job {job_id} has released no output {output!r} to you")
    table = pq.read_table(io.BytesIO(get_object_store(settings).get(rel.object_key)))
    return rel, table.slice(0, limit)


def read_pre_release(settings: Settings, rel: SandboxRelease, *, limit: int = MAX_RESULT_ROWS_SHOWN) -> pa.Table | None:
    """For a mock run only: the rows the gate was given (synthetic), to debug the job."""
    key = rel.summary.get("pre_release_key") if rel.summary.get("mock") else None
    if not key:
        return None
    return pq.read_table(io.BytesIO(get_object_store(settings).get(key))).slice(0, limit)
