"""The garbage collector and what lives as long as a schema."""

from __future__ import annotations

import gc


def settle(*, full: bool = True) -> None:
    """Keep the collector off what lives as long as a schema (the compiled policy, the
    plan: hundreds of thousands of objects with large lists): frozen, a full collection
    does not walk them, which otherwise stalls every answer for tens of milliseconds.

    ``full`` (at start): unfrozen and collected first. After a reload only the young
    generations are collected (a few ms) before the new schema is frozen: the previous
    schema's objects are freed by their reference counts as they are dropped, frozen
    or not (the schema, policy and plan hold no reference cycles: gc.get_freeze_count()
    stays the same over 30 reloads of schema/examples/mesh.yaml)."""
    if full:
        gc.unfreeze()
        gc.collect()
    else:
        gc.collect(1)
    gc.freeze()
