"""Which function builds the rows of which resource (domain modules register themselves)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from authops.platform.synth.columns import Rows

Builder = Callable[..., "Rows | Iterator[Rows]"]
BUILDERS: dict[str, Builder] = {}


def builder(*codes: str) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        for code in codes:
            BUILDERS[code] = fn
        return fn
    return register


def per_entity(counts: np.ndarray) -> np.ndarray:
    """Entity index repeated by its count: [0, 0, 1, 3, 3, 3] for counts [2, 1, 0, 3]."""
    return np.repeat(np.arange(len(counts)), counts)
