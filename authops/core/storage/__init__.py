"""Encrypted object storage: one interface over a local directory or S3/MinIO.

Backend chosen from settings only (`storage_url` empty: `objects_dir`; else S3/MinIO).
Every object is AES-256-GCM encrypted under its own data key, wrapped by a master key.
"""

from authops.core.storage.backends import Backend, LocalBackend, S3Backend
from authops.core.storage.keyring import Keyring, load_keyring, parse_master_keys
from authops.core.storage.store import (
    RESERVED_PREFIX, ObjectInfo, ObjectStore, get_object_store, make_backend, reset_object_stores,
    rotate_master_key, validate_key,
)

__all__ = [
    "RESERVED_PREFIX", "Backend", "Keyring", "LocalBackend", "ObjectInfo", "ObjectStore", "S3Backend",
    "get_object_store", "load_keyring", "make_backend", "parse_master_keys", "reset_object_stores",
    "rotate_master_key", "validate_key",
]
