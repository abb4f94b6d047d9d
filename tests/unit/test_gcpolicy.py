"""The start-up objects are frozen for the collector, and its pauses are measured."""

from __future__ import annotations

import gc

from resplit.gcpolicy import GC_PAUSE, freeze_startup


def _count(generation: str) -> float:
    for metric in GC_PAUSE.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels["generation"] == generation:
                return sample.value
    return 0.0


def test_freezing_moves_the_live_objects_out_of_the_collectors_walk():
    try:
        kept = [[i] for i in range(50_000)]  # long-lived objects, like a model's modules
        frozen = freeze_startup()
        # >=: a service another test started in this process may freeze its own meanwhile;
        # and the count is read against ``kept``, not ``frozen``: another thread may free a
        # few of the frozen objects in between (a fresh run read 685115 after 685120)
        assert frozen >= len(kept) and gc.get_freeze_count() >= len(kept)
        walked = {id(obj) for obj in gc.get_objects()}
        assert not any(id(obj) in walked for obj in kept)  # no longer walked
        before = _count("2")
        gc.collect()
        # each collection's pause is observed (at least this one: another thread of the test
        # process may set off an automatic one meanwhile)
        assert _count("2") >= before + 1
    finally:
        gc.unfreeze()
