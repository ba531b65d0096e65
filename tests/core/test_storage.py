"""Encrypted object storage, on a local directory and on a real S3 endpoint (moto server).

Raw bytes are inspected and damaged behind the store's back: straight on disk, or with
boto3 (a different client from the store's minio).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
import uuid
from pathlib import Path

import boto3
import pytest

from authops.core.crypto import TAG_SIZE, derive_key, stream_decrypt
from authops.core.errors import (
    ConfigurationError, Conflict, IntegrityViolation, InvalidInput, NotFound, Unavailable,
)
from authops.core.settings import Settings
from authops.core.storage import (
    RESERVED_PREFIX, LocalBackend, ObjectStore, S3Backend, get_object_store, load_keyring,
    rotate_master_key,
)
from authops.core.storage.store import _object_aad

CHUNK = 64
MARKER = b"PLAINTEXT-MARKER-7f3a"


def b64key(seed: int) -> str:
    return base64.b64encode(bytes([seed]) * 32).decode()


def record_name(key: str) -> str:
    return f"{RESERVED_PREFIX}{key}.json"


class Raw:
    """Direct access to stored bytes, bypassing the store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if settings.storage_url:
            self.s3 = boto3.client("s3", endpoint_url=settings.storage_url, region_name="us-east-1",
                                   aws_access_key_id="test", aws_secret_access_key="testtesttest")
            self.bucket = settings.storage_bucket
        else:
            self.s3 = None

    def read(self, name: str) -> bytes:
        if self.s3:
            return self.s3.get_object(Bucket=self.bucket, Key=name)["Body"].read()
        return (self.settings.objects_dir / name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        if self.s3:
            self.s3.put_object(Bucket=self.bucket, Key=name, Body=data)
        else:
            (self.settings.objects_dir / name).write_bytes(data)

    def remove(self, name: str) -> None:
        if self.s3:
            self.s3.delete_object(Bucket=self.bucket, Key=name)
        else:
            (self.settings.objects_dir / name).unlink()

    def names(self) -> list[str]:
        if self.s3:
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
            return sorted(o["Key"] for page in pages for o in page.get("Contents", []))
        root = self.settings.objects_dir
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture(params=["local", "s3"])
def backend_kind(request) -> str:
    return request.param


@pytest.fixture
def make_settings(request, backend_kind, tmp_path):
    """Build Settings for this test's backend; each call gets the same data dir and bucket."""
    extra: dict = {}
    if backend_kind == "s3":
        extra = dict(storage_url=request.getfixturevalue("s3_url"), storage_access_key="test",
                     storage_secret_key="testtesttest", storage_bucket=f"t-{uuid.uuid4().hex[:20]}")

    def build(**overrides) -> Settings:
        return Settings(data_dir=tmp_path / "data", **{**extra, **overrides})

    return build


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings()


@pytest.fixture
def store(settings) -> ObjectStore:
    return ObjectStore.from_settings(settings, chunk_size=CHUNK)


@pytest.fixture
def raw(settings) -> Raw:
    return Raw(settings)


def flip(data: bytes, pos: int) -> bytes:
    out = bytearray(data)
    out[pos] ^= 0x01
    return bytes(out)


def expect_violation(store: ObjectStore, key: str) -> IntegrityViolation:
    with pytest.raises(IntegrityViolation) as err:
        store.get(key)
    assert repr(key) in err.value.message
    assert MARKER.decode() not in err.value.message
    return err.value


def positions(length: int, backend_kind: str) -> range:
    """Every byte locally; every few bytes over HTTP to stay fast."""
    return range(0, length, 1 if backend_kind == "local" else 5)


# --- behaviour -------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK, 1000])
def test_round_trip(store, size):
    data = (MARKER * (size // len(MARKER) + 1))[:size]
    info = store.put("reports/2024/q1.csv", data, content_type="text/csv")
    assert (info.key, info.size, info.sha256) == ("reports/2024/q1.csv", size, hashlib.sha256(data).hexdigest())
    assert info.key_id == store.keyring.active_id
    assert store.get("reports/2024/q1.csv") == data
    assert store.stat("reports/2024/q1.csv") == info
    assert store.exists("reports/2024/q1.csv")
    assert store.list() == ["reports/2024/q1.csv"]


def test_overwrite_and_delete(store):
    store.put("a/b", b"first")
    store.put("a/b", b"second version")
    assert store.get("a/b") == b"second version"
    store.delete("a/b")
    assert not store.exists("a/b") and store.list() == []
    with pytest.raises(NotFound, match="'a/b'"):
        store.get("a/b")


def test_backend_is_chosen_from_settings(settings, raw, backend_kind):
    store = get_object_store(settings)
    assert get_object_store(settings) is store  # cached per settings object
    assert get_object_store(settings.model_copy()) is not store
    store.put("x/y.bin", b"data")
    assert raw.names() == sorted(["x/y.bin", record_name("x/y.bin")])
    if backend_kind == "s3":
        assert isinstance(store.backend, S3Backend)
        assert not settings.objects_dir.exists()
    else:
        assert isinstance(store.backend, LocalBackend)


def test_objects_are_ciphertext_at_rest(store, raw):
    data = MARKER * 40
    info = store.put("secret/data.csv", data, content_type="text/csv")
    blob, record = raw.read("secret/data.csv"), raw.read(record_name("secret/data.csv"))
    for stored in (blob, record):
        assert MARKER not in stored and MARKER[:8] not in stored
        assert b"text/csv" not in stored and info.sha256.encode() not in stored
    assert blob[:4] == b"AOE\x89"  # magic/version header
    # the data key really is in the record, but only wrapped
    data_key = store._open_record("secret/data.csv", record).data_key
    assert b"".join(stream_decrypt(derive_key(data_key, "object-data"), io.BytesIO(blob),
                                   _object_aad("secret/data.csv"))) == data
    for form in (data_key, base64.b64encode(data_key), data_key.hex().encode(),
                 base64.urlsafe_b64encode(data_key)):
        assert form not in record and form not in blob
    assert json.loads(record)["kid"] == info.key_id


def test_flipping_any_byte_of_the_data_fails(store, raw, backend_kind):
    store.put("t/obj", MARKER * 7)
    blob = raw.read("t/obj")
    assert len(blob) > 3 * CHUNK
    for pos in positions(len(blob), backend_kind):
        raw.write("t/obj", flip(blob, pos))
        expect_violation(store, "t/obj")
    raw.write("t/obj", blob)
    assert store.get("t/obj") == MARKER * 7


def test_flipping_any_byte_of_the_key_record_fails(store, raw, backend_kind):
    store.put("t/obj", MARKER)
    record = raw.read(record_name("t/obj"))
    for pos in positions(len(record), backend_kind):
        raw.write(record_name("t/obj"), flip(record, pos))
        expect_violation(store, "t/obj")
    raw.write(record_name("t/obj"), record)
    assert store.get("t/obj") == MARKER


def test_truncation_and_appending_are_detected(store, raw):
    store.put("t/obj", MARKER * 10)  # 200 bytes: chunks of 64, 64, 64, 8
    blob = raw.read("t/obj")
    boundary = 16 + 2 * (CHUNK + TAG_SIZE)
    for cut in (0, 3, 16, 40, boundary, len(blob) - 1):
        raw.write("t/obj", blob[:cut])
        expect_violation(store, "t/obj")
    raw.write("t/obj", blob + b"\x00")
    expect_violation(store, "t/obj")
    raw.write("t/obj", blob + blob[16:16 + CHUNK + TAG_SIZE])
    expect_violation(store, "t/obj")


def test_swapped_objects_are_detected(store, raw):
    store.put("a", MARKER + b"-a" * 50)
    store.put("b", MARKER + b"-b" * 50)
    blob_a, blob_b = raw.read("a"), raw.read("b")
    rec_a, rec_b = raw.read(record_name("a")), raw.read(record_name("b"))
    raw.write("a", blob_b)
    raw.write("b", blob_a)
    expect_violation(store, "a")
    expect_violation(store, "b")
    raw.write(record_name("a"), rec_b)  # data and record both swapped: names are bound in
    raw.write(record_name("b"), rec_a)
    err = expect_violation(store, "a")
    assert "another object" in err.message
    expect_violation(store, "b")


def test_a_half_written_object_fails_cleanly(store, raw):
    store.put("half/record-missing", MARKER)
    raw.remove(record_name("half/record-missing"))  # crash before the commit point
    assert not store.exists("half/record-missing")
    assert store.list() == []
    with pytest.raises(NotFound, match="'half/record-missing'"):
        store.get("half/record-missing")
    store.put("half/data-missing", MARKER)
    raw.remove("half/data-missing")
    assert not store.exists("half/data-missing")
    err = expect_violation(store, "half/data-missing")
    assert "missing" in err.message
    store.delete("half/data-missing")
    with pytest.raises(NotFound):
        store.delete("half/record-missing")  # never committed: not found, orphan cleaned up
    assert raw.names() == []


def test_wrong_or_missing_master_key_fails(make_settings):
    writer = ObjectStore.from_settings(make_settings(master_keys=f"k1:{b64key(1)}"), chunk_size=CHUNK)
    writer.put("doc", MARKER)
    other_key = ObjectStore.from_settings(make_settings(master_keys=f"k1:{b64key(2)}"))
    expect_violation(other_key, "doc")
    no_key = ObjectStore.from_settings(make_settings(master_keys=f"k2:{b64key(1)}"))
    assert "'k1'" in expect_violation(no_key, "doc").message


def test_rotation_with_dev_keyring(settings, store, raw):
    keys = [f"r/{i}" for i in range(4)]
    for i, key in enumerate(keys):
        store.put(key, MARKER * (i * 5))
    old_kid = store.keyring.active_id
    blobs = {k: raw.read(k) for k in keys}

    report = rotate_master_key(settings)
    new_kid = report["active_key_id"]
    assert new_kid != old_kid
    assert report == {"active_key_id": new_kid, "rewrapped": 4, "already_current": 0, "objects": 4}
    ring = json.loads(settings.keyring_path.read_text())
    assert ring["active"] == new_kid and set(ring["keys"]) == {old_kid, new_kid}
    for i, key in enumerate(keys):
        assert raw.read(key) == blobs[key]  # data objects byte-identical
        assert json.loads(raw.read(record_name(key)))["kid"] == new_kid
        assert store.get(key) == MARKER * (i * 5)  # the existing store picks up the new ring
    assert store.put("r/new", b"x").key_id == new_kid

    assert rotate_master_key(settings, "ops-2025")["rewrapped"] == 5
    again = rotate_master_key(settings, "ops-2025")
    assert again == {"active_key_id": "ops-2025", "rewrapped": 0, "already_current": 5, "objects": 5}
    assert all(raw.read(k) == blobs[k] for k in keys)


def test_rotation_with_configured_keys_resumes_after_a_crash(make_settings, raw):
    keys = f"k1:{b64key(1)}, k2:{b64key(2)}"
    old = make_settings(master_keys=keys, master_key_id="k1")
    store = ObjectStore.from_settings(old, chunk_size=CHUNK)
    for i in range(3):
        store.put(f"c/{i}", MARKER * i)
    blobs = {n: raw.read(n) for n in raw.names()}
    new = make_settings(master_keys=keys, master_key_id="k2")

    assert rotate_master_key(new)["rewrapped"] == 3
    # a crash before the last record was rewritten leaves it as it was
    raw.write(record_name("c/2"), blobs[record_name("c/2")])
    assert ObjectStore.from_settings(new).get("c/2") == MARKER * 2
    report = rotate_master_key(new)
    assert report == {"active_key_id": "k2", "rewrapped": 1, "already_current": 2, "objects": 3}
    assert rotate_master_key(new)["rewrapped"] == 0
    for name, before in blobs.items():
        if not name.startswith(RESERVED_PREFIX):
            assert raw.read(name) == before
    assert rotate_master_key(new, "k1")["rewrapped"] == 3  # explicit id: rewrap back
    with pytest.raises(ConfigurationError, match="'k9'"):
        rotate_master_key(new, "k9")


def test_rotation_reports_damaged_records(settings, store, raw):
    store.put("ok", b"fine")
    store.put("bad", b"damaged")
    raw.write(record_name("bad"), flip(raw.read(record_name("bad")), 60))
    with pytest.raises(IntegrityViolation, match="'bad'") as err:
        rotate_master_key(settings)
    assert err.value.details["failed"] == ["bad"]
    assert err.value.details["report"]["rewrapped"] == 1
    assert store.get("ok") == b"fine"


def test_streaming_file_helpers(store, raw, tmp_path):
    source = tmp_path / "in.bin"
    payload = os.urandom(50 * CHUNK + 7)
    source.write_bytes(payload)
    info = store.put_file("files/in.bin", source, content_type="application/x-test")
    assert info.size == len(payload) and info.sha256 == hashlib.sha256(payload).hexdigest()
    out = tmp_path / "out" / "copy.bin"
    assert store.get_to_file("files/in.bin", out) == info
    assert out.read_bytes() == payload
    blob = raw.read("files/in.bin")
    raw.write("files/in.bin", blob[:-(CHUNK + TAG_SIZE)])  # drop the last chunk
    bad_out = tmp_path / "out" / "bad.bin"
    with pytest.raises(IntegrityViolation, match="'files/in.bin'"):
        store.get_to_file("files/in.bin", bad_out)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["copy.bin"]  # nothing partial
    with pytest.raises(InvalidInput, match="missing.bin"):
        store.put_file("files/x", tmp_path / "missing.bin")


BAD_KEYS = ["", "/etc/passwd", "a/../b", "..", "a//b", "a/", "a\\b", "./a", "a/./b",
            ".authops/keys/x.json", "dir/.hidden", "nul\x00byte", "x" * 1000]


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_bad_keys_are_refused(store, bad):
    for call in (lambda: store.put(bad, b"x"), lambda: store.get(bad), lambda: store.exists(bad),
                 lambda: store.delete(bad)):
        with pytest.raises(InvalidInput) as err:
            call()
        assert repr(bad[:100])[1:-1] in err.value.message  # names the offending key


def test_missing_objects(store):
    for call in (lambda: store.get("no/such"), lambda: store.stat("no/such"),
                 lambda: store.delete("no/such")):
        with pytest.raises(NotFound, match="'no/such'"):
            call()
    store.delete("no/such", missing_ok=True)
    assert not store.exists("no/such")


def test_list_filters_by_prefix_and_hides_records(store, raw):
    for key in ["b/2", "a/1", "a/10", "ab", "c"]:
        store.put(key, b".")
    assert store.list() == ["a/1", "a/10", "ab", "b/2", "c"]
    assert store.list("a") == ["a/1", "a/10", "ab"]
    assert store.list("a/") == ["a/1", "a/10"]
    assert store.list("a/1") == ["a/1", "a/10"]
    assert store.list("zzz") == []
    assert any(n.startswith(RESERVED_PREFIX) for n in raw.names())
    with pytest.raises(InvalidInput):
        store.list("../")


def test_ping_succeeds_and_creates_bucket(store, settings, raw, backend_kind):
    store.ping()
    if backend_kind == "s3":
        raw.s3.head_bucket(Bucket=settings.storage_bucket)
    else:
        assert settings.objects_dir.is_dir()


def test_local_name_clash_is_a_conflict(tmp_path):
    store = ObjectStore.from_settings(Settings(data_dir=tmp_path))
    store.put("a", b"1")
    with pytest.raises(Conflict, match="'a/b'"):
        store.put("a/b", b"2")
    store.delete("a")
    store.put("a/b", b"2")
    store.delete("a/b")
    store.put("a", b"3")  # emptied directories were pruned
    assert store.get("a") == b"3"


def test_unreachable_s3_is_unavailable(tmp_path, closed_port_url):
    store = ObjectStore.from_settings(Settings(data_dir=tmp_path, storage_url=closed_port_url,
                                               storage_access_key="test", storage_secret_key="testtesttest"))
    for call in (store.ping, lambda: store.put("a", b"x"), lambda: store.get("a"), store.list):
        with pytest.raises(Unavailable) as err:
            call()
        assert closed_port_url in err.value.message


# --- keyring ---------------------------------------------------------------------------------

def test_dev_keyring_is_generated_once_with_mode_0600(tmp_path):
    settings = Settings(data_dir=tmp_path / "deep" / "data")
    first = load_keyring(settings)
    path = settings.keyring_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_keyring(Settings(data_dir=tmp_path / "deep" / "data"))
    assert second.active() == first.active()
    assert base64.b64encode(first.active()[1]).decode() not in repr(first)


@pytest.mark.parametrize(("master_keys", "key_id", "complaint"), [
    (f"k1:{base64.b64encode(b'x' * 16).decode()}", "", "16 bytes"),
    (f"k1:{b64key(1)}", "k2", "'k2' is not in the keyring"),
    (f"k1:{b64key(1)},k2:{b64key(2)}", "", "AUTHOPS_MASTER_KEY_ID"),
    ("k1", "", "kid:base64key"),
    ("k1:not*base64!", "", "not valid base64"),
    (f"k1:{b64key(1)},k1:{b64key(2)}", "k1", "twice"),
    (f"bad id:{b64key(1)}", "", "invalid"),
])
def test_bad_master_keys_are_refused(tmp_path, master_keys, key_id, complaint):
    settings = Settings(data_dir=tmp_path, master_keys=master_keys, master_key_id=key_id)
    with pytest.raises(ConfigurationError, match=complaint) as err:
        load_keyring(settings)
    for part in master_keys.split(","):
        secret = part.partition(":")[2]
        assert not secret or len(secret) < 8 or secret not in err.value.message
    with pytest.raises(ConfigurationError):
        get_object_store(settings)


def test_configured_keys_win_over_the_dev_file(tmp_path):
    settings = Settings(data_dir=tmp_path, master_keys=f"prod-1:{b64key(9)}")
    assert load_keyring(settings).active() == ("prod-1", bytes([9]) * 32)
    assert not Path(settings.keyring_path).exists()
