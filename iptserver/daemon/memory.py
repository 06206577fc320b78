"""The garbage collector and what lives as long as a schema."""

from __future__ import annotations

import gc


def settle() -> None:
    """Keep the collector off what lives as long as a schema (the compiled policy, the
    plan: hundreds of thousands of objects with large lists): frozen, a full collection
    does not walk them, which otherwise stalls every answer for tens of milliseconds.
    Unfrozen first, so the previous schema's objects can go."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
