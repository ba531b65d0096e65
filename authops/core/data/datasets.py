"""Datasets at rest: Arrow tables written as Parquet and stored encrypted in the object store.

Each load of a resource becomes one immutable object, `datasets/<resource>/v<schema>/<n>.parquet`
(the key names no department or subject). The object store encrypts it with its own data
key (AES-256-GCM), so no plaintext Parquet ever touches disk or S3.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from authops.core.storage.store import ObjectInfo, ObjectStore

CONTENT_TYPE = "application/vnd.apache.parquet"


def dataset_key(resource_code: str, schema_version: int, dataset_version: int, unique: str = "") -> str:
    """`unique` (random, per write) keeps a write that loses a race from landing on a committed object."""
    return f"datasets/{resource_code}/v{schema_version}/{dataset_version:06d}{'-' + unique if unique else ''}.parquet"


def to_parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=256_000)
    return buf.getvalue()


def write_dataset(store: ObjectStore, key: str, table: pa.Table) -> ObjectInfo:
    return store.put(key, to_parquet(table), content_type=CONTENT_TYPE)


def read_dataset(store: ObjectStore, key: str, *, columns: list[str] | None = None) -> pa.Table:
    """Decrypt and read a dataset (inside the trusted process only; never returned to a caller)."""
    return pq.read_table(io.BytesIO(store.get(key)), columns=columns)
