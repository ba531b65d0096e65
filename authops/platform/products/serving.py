"""The in-process cache of each product's current answer set.

A call asks `answers(session, settings, product_id)`: the current answer set is read from the
database (one indexed row) at most every `check_seconds` (default 1 s; 0 = on every call; a build
in this process marks its product for a check on the next call), and when it differs
from the cached one the new set is loaded once (decrypted from the object store into a Lookup)
under a per-product lock while other threads keep serving the set they had. Lookups are O(1) by
the subject's digest.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from authops.core.errors import Unavailable
from authops.core.settings import Settings
from authops.core.storage.store import get_object_store
from authops.platform.products.models import AnswerSet
from authops.products.runtime import answers as rt


class NotReady(Unavailable):
    code = "product_not_ready"


@dataclass(frozen=True)
class Loaded:
    answer_set_id: int
    object_key: str  # unique per build: what identifies the loaded set
    version: int
    built_at: datetime
    lookup: rt.Lookup
    key: bytes  # the product's serving key (subject digests)


_CURRENT = AnswerSet.__table__


STALE_CHECKS = 3  # the batched path serves a set whose check is due for at most 3 checks' time


class AnswerCache:
    def __init__(self, check_seconds: float = 0.0) -> None:
        self.check_seconds = check_seconds
        self._loaded: dict[int, Loaded] = {}
        self._checked: dict[int, float] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()
        self._checking: set[int] = set()  # products whose check a thread is making (fresh)
        self.loads = 0  # how many times a set was read from the store (for tests and the benchmark)

    def _lock(self, product_id: int) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(product_id, threading.Lock())

    def recheck(self, product_id: int) -> None:
        """Look for a newer set on the next call (a build in this process just stored one)."""
        self._checked.pop(product_id, None)

    def clear(self) -> None:
        with self._guard:
            self._loaded.clear()
            self._checked.clear()

    def fresh(self, settings: Settings, product_id: int, product_code: str) -> Loaded | None:
        """For the batched call path, which reads nothing from the database first: the loaded set
        when it was checked within check_seconds (what `get` would answer without a query). When the
        check is due, a thread makes it (one per product at a time) while the set in hand keeps
        serving, for at most STALE_CHECKS more checks' time; None when there is no set in hand."""
        have = self._loaded.get(product_id)
        if have is None or not self.check_seconds:
            return None
        age = time.monotonic() - self._checked.get(product_id, 0.0)
        if age < self.check_seconds:
            return have
        with self._guard:
            start = product_id not in self._checking
            self._checking.add(product_id)
        if start:
            threading.Thread(target=self._check_now, args=(settings, product_id, product_code), daemon=True,
                             name="authops-answer-check").start()
        return have if age < self.check_seconds * STALE_CHECKS else None

    def _check_now(self, settings: Settings, product_id: int, product_code: str) -> None:
        from authops.core.db import get_engine

        try:
            with Session(get_engine(settings)) as session:
                self.get(session, settings, product_id, product_code)
        except Exception:  # the next call checks again (the ordinary path reports a failure)
            pass
        finally:
            with self._guard:
                self._checking.discard(product_id)

    def get(self, session: Session, settings: Settings, product_id: int, product_code: str) -> Loaded:
        """The product's current answers, loading a newer set when there is one."""
        have = self._loaded.get(product_id)
        now = time.monotonic()
        if have is not None and self.check_seconds and now - self._checked.get(product_id, 0.0) < self.check_seconds:
            return have
        row = session.connection().execute(
            select(_CURRENT.c.id, _CURRENT.c.version, _CURRENT.c.built_at, _CURRENT.c.object_key)
            .where(_CURRENT.c.product_id == product_id).order_by(_CURRENT.c.version.desc()).limit(1)).first()
        if row is None:
            raise NotReady(f"product {product_code} has no precomputed answers yet; the operator builds them "
                           "(products.precompute) before calls are served")
        self._checked[product_id] = now
        if have is not None and have.object_key == row.object_key:
            return have
        with self._lock(product_id):
            have = self._loaded.get(product_id)
            if have is not None and have.object_key == row.object_key:
                return have
            from authops.platform.products.precompute import serving_key

            table = rt.read_table(get_object_store(settings).get(row.object_key))
            loaded = Loaded(answer_set_id=row.id, object_key=row.object_key, version=row.version, built_at=row.built_at,
                            lookup=rt.Lookup(table), key=serving_key(settings, product_code))
            self._loaded[product_id] = loaded
            self.loads += 1
            return loaded


CACHE = AnswerCache(check_seconds=1.0)


def answers(session: Session, settings: Settings, product_id: int, product_code: str) -> Loaded:
    return CACHE.get(session, settings, product_id, product_code)
