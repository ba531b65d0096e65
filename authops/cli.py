"""The `authops` command line: init, serve, worker, db, users, keys, demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from authops.cli_jobs import jobs_app
from authops.core.settings import get_settings

app = typer.Typer(help="authops: authorized operation of public data. Raw data never leaves the domain.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
users_app = typer.Typer(help="Organisations' users: create, list, unlock.", no_args_is_help=True)
keys_app = typer.Typer(help="Master keys (envelope encryption) and API keys.", no_args_is_help=True)
broker_app = typer.Typer(help="The embedded Redis-protocol broker (development default).",
                         no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
audit_app = typer.Typer(help="The tamper-evident audit log: checkpoints, export, offline verification.",
                        no_args_is_help=True)
app.add_typer(broker_app, name="broker")
app.add_typer(audit_app, name="audit")
catalog_app = typer.Typer(help="The data catalogue: register resources, load data, quality figures.",
                          no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
app.add_typer(jobs_app, name="jobs")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


def _run(fn):
    """Turn our errors into one clear line and exit code 1 (no tracebacks for users)."""
    from authops.core.errors import AuthopsError

    try:
        return fn()
    except AuthopsError as exc:
        _fail(exc.message)


# --- db -----------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision")) -> None:
    """Apply migrations (SQLite or PostgreSQL, from AUTHOPS_DATABASE_URL) and sync role policies."""
    from authops.platform import bootstrap

    settings = get_settings()
    bootstrap.upgrade_and_seed(settings, revision)
    typer.echo(f"database at revision {revision} ({_safe_url(settings.effective_database_url)})")


@db_app.command("current")
def db_current() -> None:
    """Show the schema revision."""
    from authops.core import db

    typer.echo(db.current_revision() or "empty (run `authops db upgrade`)")


@db_app.command("grant-app-role")
def db_grant_app_role(role: str = typer.Argument(..., help="The PostgreSQL role the application connects as")) -> None:
    """PostgreSQL: let the application's role use every table but only add to the audit log."""
    from authops.audit.grants import grant_app_role
    from authops.core import db

    for line in _run(lambda: grant_app_role(db.get_engine(get_settings()), role)):
        typer.echo(line)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# --- init / serve / worker ---------------------------------------------------------------
@app.command()
def init(
    admin_username: str = typer.Option("bureau-admin", help="Username of the bureau's first administrator"),
    admin_password: Optional[str] = typer.Option(None, envvar="AUTHOPS_INIT_PASSWORD",
                                                 help="Password (asked for when omitted)"),
) -> None:
    """Create the data folder and schema, register the bureau and its first administrator."""
    from authops.platform import bootstrap

    settings = get_settings()
    if admin_password is None:
        admin_password = typer.prompt("Password for the bureau administrator", hide_input=True,
                                      confirmation_prompt=True)
    org, user = _run(lambda: bootstrap.init(settings, admin_username=admin_username,
                                            admin_password=admin_password))
    typer.echo(f"data folder: {settings.data_path}")
    typer.echo(f"bureau: {org.name_zh} ({org.code}); administrator: {user.username}")
    typer.echo("next: `authops serve`, then log in at http://%s:%d/docs" % (settings.api_host, settings.api_port))


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="Bind address (default AUTHOPS_API_HOST)"),
    port: Optional[int] = typer.Option(None, help="Port (default AUTHOPS_API_PORT)"),
    workers: int = typer.Option(1, help="API processes"),
    with_worker: Optional[bool] = typer.Option(None, "--with-worker/--no-worker",
                                               help="Start a job worker beside the API (default: in embedded mode)"),
) -> None:
    """Run the API; in embedded mode also the private broker and a worker."""
    import uvicorn

    from authops.core import broker
    from authops.platform import bootstrap

    settings = get_settings()
    bootstrap.upgrade_and_seed(settings)
    if settings.embedded_broker:
        url = broker.ensure_broker(settings)
        typer.echo(f"embedded broker: {_safe_url(url)} (data in {settings.broker_dir})")
    worker_proc = None
    if with_worker if with_worker is not None else settings.embedded_broker:
        worker_proc = subprocess.Popen([sys.executable, "-m", "authops", "worker", "--concurrency", "2"],
                                       env=os.environ.copy())
        typer.echo(f"worker started (pid {worker_proc.pid})")
    try:
        uvicorn.run("authops.app:create_app", factory=True, host=host or settings.api_host,
                    port=port or settings.api_port, workers=workers, log_level=settings.log_level.lower())
    finally:
        if worker_proc is not None:
            worker_proc.send_signal(signal.SIGTERM)
            try:
                worker_proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker_proc.kill()


@app.command()
def worker(
    concurrency: int = typer.Option(2, help="Job processes in this worker"),
    loglevel: str = typer.Option("INFO", help="Log level"),
) -> None:
    """Run a job worker (Celery). Uses AUTHOPS_BROKER_URL, or the embedded broker when unset."""
    from authops.worker import run_worker

    run_worker(get_settings(), concurrency=concurrency, loglevel=loglevel)


# --- broker ---------------------------------------------------------------------------------
@broker_app.command("start")
def broker_start() -> None:
    """Start (or reuse) the embedded broker and print its URL."""
    from authops.core import broker

    typer.echo(_safe_url(broker.ensure_broker(get_settings())))


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the embedded broker (queued messages persist in its append-only file)."""
    from authops.core import broker

    broker.stop_broker(get_settings())
    typer.echo("stopped")


# --- users ----------------------------------------------------------------------------------
@users_app.command("create")
def users_create(
    org: str = typer.Option(..., help="Organisation code, e.g. szdata"),
    username: str = typer.Option(..., help="Login name (lowercase)"),
    role: list[str] = typer.Option(..., help="Role (repeat for several); see `authops users roles`"),
    display_name: Optional[str] = typer.Option(None, help="Name shown in the console"),
    password: Optional[str] = typer.Option(None, envvar="AUTHOPS_NEW_USER_PASSWORD",
                                           help="Password (asked for when omitted)"),
) -> None:
    """Create a user in an organisation with one or more roles."""
    from authops.platform import bootstrap

    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = _run(lambda: bootstrap.create_user_by_org_code(
        get_settings(), org_code=org, username=username, display_name=display_name or username,
        password=password, roles=role))
    typer.echo(f"created user {user.username} (id {user.id}) in {org} with roles {', '.join(role)}")


@users_app.command("list")
def users_list(org: Optional[str] = typer.Option(None, help="Only this organisation code")) -> None:
    """List users with their organisation and roles."""
    from authops.platform import bootstrap

    for row in bootstrap.user_rows(get_settings(), org_code=org):
        typer.echo("{username:24} {org:28} {roles}{locked}".format(**row))


@users_app.command("unlock")
def users_unlock(username: str) -> None:
    """Clear a login lockout."""
    from authops.platform import bootstrap

    _run(lambda: bootstrap.unlock(get_settings(), username))
    typer.echo(f"unlocked {username}")


@users_app.command("roles")
def users_roles() -> None:
    """Print the role × permission matrix."""
    from authops.policies import permissions

    typer.echo(permissions.render_markdown())


# --- keys -------------------------------------------------------------------------------------
@keys_app.command("rotate")
def keys_rotate(key_id: Optional[str] = typer.Option(
        None, help="With AUTHOPS_MASTER_KEYS: the id to rewrap under (default: AUTHOPS_MASTER_KEY_ID)")) -> None:
    """Rewrap every object's data key under a new master key; the data is not touched."""
    from authops.core.storage import rotate_master_key

    report = _run(lambda: rotate_master_key(get_settings(), key_id))
    typer.echo(f"active master key: {report['active_key_id']}; rewrapped {report['rewrapped']} "
               f"data keys, {report['already_current']} already current")


@keys_app.command("api-create")
def keys_api_create(
    org: str = typer.Option(..., help="Organisation code"),
    name: str = typer.Option(..., help="What uses this key"),
    scope: list[str] = typer.Option(..., help="Action the key may take (repeat)"),
    ttl_days: int = typer.Option(365, help="Days until it expires"),
) -> None:
    """Create an API key for an organisation (printed once; store it now)."""
    from authops.platform import bootstrap

    secret = _run(lambda: bootstrap.create_org_api_key(get_settings(), org_code=org, name=name,
                                                       scopes=scope, ttl_days=ttl_days))
    typer.echo(secret)


# --- audit -----------------------------------------------------------------------------------
@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign a Merkle checkpoint of the log now and push it to the witness."""
    from authops.audit.checkpoints import checkpoint_now

    cp = _run(lambda: checkpoint_now(get_settings()))
    typer.echo("nothing new since the last checkpoint" if cp is None else
               f"checkpoint: {cp.tree_size} events, root {cp.root_hash}, key {cp.key_id}")


@audit_app.command("export")
def audit_export(path: Path = typer.Argument(..., help="Output file (.jsonl, or .jsonl.gz)")) -> None:
    """Write the log and its signed checkpoints to a file an auditor can take away."""
    from authops.audit.export import export

    result = _run(lambda: export(get_settings(), path))
    typer.echo(f"exported {result['events']} events and {result['checkpoints']} checkpoints to {path}")


@audit_app.command("verify")
def audit_verify(
    path: Path = typer.Argument(..., help="An export written by `authops audit export`"),
    public_key: list[Path] = typer.Option(..., help="Trusted public key PEM file (repeat for rotated keys)"),
    trusted_checkpoint: Optional[Path] = typer.Option(
        None, help="A checkpoint you kept earlier: the log must extend it"),
) -> None:
    """Verify an export offline: chain, signatures, Merkle roots, proofs. Exit 2 when tampered."""
    import json

    from authops.audit.verify import load_keys, verify_file

    keys = _run(lambda: load_keys([p.read_bytes() for p in public_key]))
    trusted = json.loads(trusted_checkpoint.read_text()) if trusted_checkpoint else None
    report = verify_file(path, keys, trusted)
    typer.secho(report.summary(), fg="green" if report.ok else "red")
    raise typer.Exit(0 if report.ok else 2)


@audit_app.command("public-key")
def audit_public_key() -> None:
    """Print the public keys that verify checkpoints (active first)."""
    from authops.audit.signing import load_signing_keys

    for key in _run(lambda: load_signing_keys(get_settings())):
        typer.echo(key.public_pem, nl=False)


@audit_app.command("rotate-signing-key")
def audit_rotate_signing_key() -> None:
    """Start signing checkpoints with a new key (older keys keep verifying older checkpoints)."""
    from authops.audit.signing import rotate_signing_key

    key = _run(lambda: rotate_signing_key(get_settings()))
    typer.echo(f"new checkpoint signing key {key.key_id}; publish its public key to auditors")


# --- catalogue ---------------------------------------------------------------------------------
@catalog_app.command("load")
def catalog_load(folder: Path = typer.Argument(..., help="A catalogue folder (resources.csv, fields.csv)")) -> None:
    """Register every resource of a catalogue folder under its department (re-running is safe)."""
    from authops.core.db import session_scope
    from authops.platform.catalog import flows, service

    def go():
        with session_scope(get_settings()) as session:
            return service.load_catalog(session, folder, actor=flows.CLI)

    c = _run(go)
    typer.echo(f"{c['resources']} resources from {c['departments']} departments: {c['registered']} registered, "
               f"{c['schema_changes']} with a new schema version, {c['unchanged']} unchanged")


@catalog_app.command("list")
def catalog_list() -> None:
    """Every resource with its department, grade, rows and timeliness."""
    from authops.core.db import session_scope
    from authops.platform.catalog import service
    from authops.platform.identity.models import Organisation

    with session_scope(get_settings()) as session:
        for r in service.list_resources(session):
            q = service.quality(session, r)
            org = session.get(Organisation, r.org_id)
            typer.echo(f"{r.no or '-':>3} {r.code:<42} {r.grade} {q['rows']:>9} rows  "
                       f"{q['timeliness']['status']:<12} {org.name_zh}")


@catalog_app.command("ingest")
def catalog_ingest(code: str, path: Path,
                   mode: str = typer.Option("replace", help="replace (whole data) or upsert (by record key)")) -> None:
    """Load a file (.xlsx template, UTF-8 .csv or .parquet) into a resource, all or nothing."""
    from authops.platform.catalog import flows

    run = _run(lambda: flows.load_file(get_settings(), code, path, mode=mode))
    if run.state != "succeeded":
        for e in (run.report or {}).get("errors", [])[:20]:
            typer.echo(f"  row {e['row'] or '-'} {e['column'] or '-'} [{e['rule']}] {e['message']}", err=True)
        _fail(run.message or "rejected")
    typer.echo(run.message)


@catalog_app.command("load-synthetic")
def catalog_load_synthetic(scale: float = typer.Option(0.01, help="1 = about 1M persons, 100k enterprises"),
                           seed: int = typer.Option(0)) -> None:
    """Generate the linked synthetic data for every registered resource and load it in bulk."""
    from authops.platform.catalog import flows

    runs = _run(lambda: flows.load_synthetic(get_settings(), scale=scale, seed=seed))
    typer.echo(f"loaded {sum(r.rows_received for r in runs.values()):,} rows into {len(runs)} resources")


@app.command()
def synth(out: Path = typer.Option(Path("synthetic"), help="Folder for <resource>.parquet files"),
          scale: float = typer.Option(0.01, help="1 = about 1M persons, 100k enterprises, 10M settlements"),
          seed: int = typer.Option(0),
          catalog: Optional[Path] = typer.Option(None, help="Catalogue folder (default: the plan's, shipped with authops)")) -> None:
    """Generate realistic, linked synthetic data for all 53 resources (the departments' side)."""
    import time as _time

    from authops.platform import synth as synth_mod
    from authops.platform.catalog import csvload

    defs = _run(lambda: csvload.load_definitions(catalog or csvload.BUILTIN))
    started = _time.perf_counter()
    counts = synth_mod.write(defs, out, scale=scale, seed=seed)
    took = _time.perf_counter() - started
    total = sum(counts.values())
    typer.echo(f"wrote {total:,} rows for {len(counts)} resources to {out} in {took:.1f} s "
               f"({total / took:,.0f} rows/s)")


# --- demo ----------------------------------------------------------------------------------------
@app.command()
def demo(
    data_dir: Path = typer.Option(Path(".authops-demo"), help="Fresh data folder for the demo (wiped first)"),
) -> None:
    """The plan's story end to end on synthetic data, in a fresh data folder."""
    from authops import demo as demo_flow

    demo_flow.run(data_dir)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
