"""One typed settings object; nothing else in authops reads os.environ."""

from __future__ import annotations

import functools
from enum import Enum
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "dev", "development", "placeholder"}
DEV_SECRET = "authops-development-secret-not-for-production"


class Mode(str, Enum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Configuration from AUTHOPS_* variables; with none set everything lives under data_dir."""

    model_config = SettingsConfigDict(env_prefix="AUTHOPS_", extra="ignore")

    mode: Mode = Mode.DEVELOPMENT
    data_dir: Path = Path(".authops")

    # Empty means "embedded": SQLite file, local object directory, private valkey broker.
    database_url: str = ""
    broker_url: str = ""
    storage_url: str = ""
    storage_bucket: str = "authops"
    storage_access_key: str = ""
    storage_secret_key: SecretStr = SecretStr("")

    # Signing secret for tokens and HMACs. Refused when a placeholder outside development.
    secret_key: SecretStr = SecretStr(DEV_SECRET)
    # Master keys for envelope encryption: "kid1:base64key,kid2:base64key"; the active id
    # wraps new data keys. Empty in development: a keyring file in data_dir is generated.
    master_keys: SecretStr = SecretStr("")
    master_key_id: str = ""

    # Ed25519 keys that sign audit checkpoints: "base64(32-byte seed)[,older…]", first = active.
    # Empty in development: a signing keyring file in data_dir is generated.
    audit_signing_keys: SecretStr = SecretStr("")
    # Where each checkpoint is also pushed, beyond the operator's reach: empty = a write-once
    # folder in data_dir (development); "s3://bucket" = a bucket with object lock on the
    # endpoint audit_witness_endpoint (the bureau's), with its own credentials.
    audit_witness_url: str = ""
    audit_witness_endpoint: str = ""
    audit_witness_access_key: str = ""
    audit_witness_secret_key: SecretStr = SecretStr("")
    audit_witness_retention_days: int = 3650
    audit_checkpoint_seconds: int = 300

    token_ttl_seconds: int = 30 * 60
    login_max_failures: int = 5
    login_lockout_seconds: int = 15 * 60
    api_key_default_ttl_days: int = 365

    # Rate limits (authops.platform.limits): each at most N per rate_limit_window_seconds in a sliding
    # window; 0 turns one off. Product calls per API key (or logged-in user) and per organisation;
    # login attempts per account name, per its organisation and per client address.
    rate_limit_window_seconds: int = Field(60, ge=1, le=3600)
    rate_limit_call_per_key: int = Field(6000, ge=0)
    rate_limit_call_per_org: int = Field(30000, ge=0)
    rate_limit_login_per_user: int = Field(10, ge=0)
    rate_limit_login_per_org: int = Field(300, ge=0)
    rate_limit_login_per_ip: int = Field(120, ge=0)
    # Where the counters live: "" = a Redis when there is one (a redis:// broker URL, or the embedded
    # broker), else each process alone; "memory" = each process alone; "redis://host:port/db" = there.
    rate_limit_url: str = ""
    # Product calls run in at most call_concurrency worker threads per API process (the rest wait
    # their turn in the event loop): enough to overlap database round trips, few enough that the
    # threads do not take turns for the interpreter lock while holding the hot rows' locks.
    call_concurrency: int = Field(6, ge=1, le=64)
    # On PostgreSQL, calls whose key, terms and consent this process has seen admit a call are
    # committed in batches by one writer per process (authops.platform.products.batched); false:
    # every call takes the ordinary path, one transaction each.
    call_batching: bool = True
    # Request bodies: at most max_body_bytes (JSON, forms), max_upload_bytes for multipart uploads
    # (the catalogue takes files up to 200 MiB); larger ones are refused with 413.
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(200 * 1024 * 1024 + 64 * 1024, ge=1024)

    job_lease_seconds: int = 60
    job_redispatch_seconds: int = 30
    job_max_attempts: int = 5
    # A job running longer is stopped (soft limit: it fails with time_limit; the hard limit,
    # a minute later, kills its process and the lease brings it back).
    job_time_limit_seconds: int = 3600
    # Real partner-code jobs in constant time (authops.platform.sandbox.jobs): each ends exactly its
    # time limit (x runs, + a quarter for the release gate) after the code started, whatever the data,
    # with no stage shown meanwhile, so the run time carries nothing out; holds a worker that long.
    # Unset: on in production mode, off in development.
    sandbox_code_constant_time: bool | None = None
    # governance (BRIEF.md sections 1-6): review deadlines in working days, committee rules
    review_provider_working_days: int = 10
    review_expert_working_days: int = 10
    review_bureau_working_days: int = 10
    committee_quorum: int = 3  # expert votes needed before the committee decides
    committee_majority: float = 0.5  # share of approvals that must be exceeded
    publicity_working_days: int = 7
    operator_ban_years: int = 5  # the plan says 5 in one place and 3 in another
    maintenance_interval_seconds: float = 2.0
    # Personal consent: the identity providers whose subject certificates bind a subject's Ed25519
    # key to its ID (e.g. the city's real-name authentication app). One or more PEM public keys
    # (Ed25519), inline or as the path of a PEM file. Empty in development: a demo identity
    # provider key pair is generated under data_dir/keys/ (said so in the log); empty in
    # production: no consent can be recorded.
    consent_issuers: str = ""
    consent_max_validity_days: int = 366  # never beyond the usage agreement's end either
    consent_backdate_seconds: int = 600  # how far in the past valid_from may lie (clock skew)
    # Objections to an operator application under publicity (the public route)
    objection_max_chars: int = 2000
    objection_contact_max_chars: int = 100
    objection_max_open: int = 20  # open objections per application
    objection_per_ip_per_day: int = 3  # per application, per source address, per day
    # Webhooks may not point into the platform's own networks unless this is on (tests, labs)
    webhook_allow_private_hosts: bool = False

    # Where requests come from, for the audit log and anomaly rules: "name=cidr,cidr;name=cidr".
    regions: str = "local=127.0.0.0/8,::1/128;intranet=10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
    region_default: str = "external"
    # Proxies (addresses, comma-separated) whose X-Forwarded-Proto the console believes: behind them a
    # session cookie is marked Secure when the browser's side of the proxy was HTTPS.
    trusted_proxies: str = ""

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> "Settings":
        if self.mode is Mode.PRODUCTION:
            secret = self.secret_key.get_secret_value()
            if secret.lower() in PLACEHOLDER_SECRETS or secret == DEV_SECRET or len(secret) < 32:
                raise ValueError(
                    "AUTHOPS_SECRET_KEY is a placeholder or shorter than 32 characters; "
                    "production mode needs a random secret (e.g. `python -c 'import secrets;"
                    "print(secrets.token_urlsafe(48))'`)"
                )
            if not self.master_keys.get_secret_value():
                raise ValueError(
                    "AUTHOPS_MASTER_KEYS is empty; production mode needs at least one "
                    "'kid:base64-32-byte-key' master key"
                )
        return self

    # --- derived locations -------------------------------------------------
    @property
    def data_path(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_path / 'authops.sqlite3'}"

    @property
    def broker_dir(self) -> Path:
        return self.data_path / "broker"

    @property
    def objects_dir(self) -> Path:
        return self.data_path / "objects"

    @property
    def keyring_path(self) -> Path:
        return self.data_path / "keys" / "master-keys.json"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (after the environment changed, e.g. in tests or the CLI)."""
    get_settings.cache_clear()
