"""Product serving runtime, pure (no platform imports): the answer-table format and its lookup,
answer shaping for verify and score products, and idempotency hashing.

The platform (authops.platform.products) builds answer tables in the trusted worker, stores them
encrypted, loads them into `Lookup`s and shapes each call's answer with `shape_answer`.
"""

from authops.products.runtime.answers import (  # noqa: F401
    KEY_BYTES,
    AnswerMeta,
    Lookup,
    OutputMeta,
    build_table,
    normal_subject,
    read_table,
    subject_digest,
    table_bytes,
)
from authops.products.runtime.idempotency import check_key, request_sha256  # noqa: F401
from authops.products.runtime.shaping import check_claims, shape_answer  # noqa: F401
