"""Settings: embedded defaults under one data folder; placeholder secrets refused in production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from authops.core.settings import Settings


def test_embedded_defaults_live_under_one_data_folder(tmp_path, monkeypatch):
    for key in ("AUTHOPS_DATABASE_URL", "AUTHOPS_BROKER_URL", "AUTHOPS_STORAGE_URL", "AUTHOPS_DATA_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.data_path == (tmp_path / ".authops").resolve()
    assert s.effective_database_url == f"sqlite:///{tmp_path / '.authops' / 'authops.sqlite3'}"
    assert s.embedded_broker and s.broker_dir.parent == s.data_path
    assert s.objects_dir.parent == s.data_path


def test_production_urls_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("AUTHOPS_DATABASE_URL", "postgresql://db/authops")
    monkeypatch.setenv("AUTHOPS_BROKER_URL", "amqp://guest:guest@mq//")
    monkeypatch.setenv("AUTHOPS_STORAGE_URL", "http://minio:9000")
    s = Settings()
    assert (s.effective_database_url, s.broker_url, s.storage_url) == \
        ("postgresql://db/authops", "amqp://guest:guest@mq//", "http://minio:9000")
    assert not s.embedded_broker


@pytest.mark.parametrize("secret", ["changeme", "secret", "short-but-not-placeholder"])
def test_production_refuses_placeholder_secrets(secret):
    with pytest.raises(ValidationError, match="AUTHOPS_SECRET_KEY"):
        Settings(mode="production", secret_key=secret, master_keys="k1:" + "A" * 44)


def test_production_refuses_the_development_default_and_missing_master_keys():
    with pytest.raises(ValidationError, match="AUTHOPS_SECRET_KEY"):
        Settings(mode="production", master_keys="k1:" + "A" * 44)
    with pytest.raises(ValidationError, match="AUTHOPS_MASTER_KEYS"):
        Settings(mode="production", secret_key="x" * 48)


def test_production_accepts_real_secrets():
    s = Settings(mode="production", secret_key="Zq8" * 16, master_keys="k1:" + "A" * 44)
    assert s.mode.value == "production"
