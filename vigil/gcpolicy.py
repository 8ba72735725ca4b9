"""How the analysing processes use Python's cyclic garbage collector.

Analysis makes tens of small dicts and strings per event and keeps a whole batch (thousands of
events) alive until it is stored. With the default threshold (a young collection every 700
allocations) the collector runs hundreds of times per batch and keeps re-scanning the batch's
survivors: about a quarter of the manager's CPU (BENCHMARKS.md, agent channel). Almost nothing
here forms reference cycles, so collecting 70x less often costs little memory.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
OLDER_THRESHOLDS = (20, 20)


def settle_for_throughput() -> None:
    """Call once start-up is done: what exists now (rules, indexes, caches) lives as long as the process."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
