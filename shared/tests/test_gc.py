"""The garbage collector's set-up once a service is wired (`configure_gc_for_load`).

Each test runs in a fresh interpreter: the set-up changes the collector for the whole
process."""

import subprocess
import sys

# Keeps `alive` young containers alive after the set-up, as requests in flight do, and counts
# the collections that follow.
_KEEP_YOUNG_OBJECTS_ALIVE = """
import gc
from prequal_shared.runtime import configure_gc_for_load
configure_gc_for_load()
collections = []
gc.callbacks.append(lambda phase, info: phase == "stop" and collections.append(info))
alive = [[] for _ in range({alive})]
print(len(collections), gc.get_freeze_count() > 0)
"""


def _collections_while_alive(alive: int) -> tuple[int, bool]:
    out = subprocess.run(
        [sys.executable, "-c", _KEEP_YOUNG_OBJECTS_ALIVE.format(alive=alive)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), out[1] == "True"


def test_young_objects_kept_alive_cause_no_collection_once_wired() -> None:
    """20,000 live containers: Python's default threshold (700) collected some 28 times."""
    collections, frozen = _collections_while_alive(20_000)
    assert collections == 0
    assert frozen  # start-up's objects are out of the collector's reach


def test_the_collector_still_runs_once_past_the_threshold() -> None:
    """A leak of cycles is still collected: the collector is not off, only less eager."""
    collections, _ = _collections_while_alive(60_000)
    assert collections >= 1
