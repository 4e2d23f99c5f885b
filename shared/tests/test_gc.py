"""The garbage collector's set-up once a service is wired (`freeze_startup_objects`).

Run in a fresh interpreter each: it changes the collector for the whole process."""

import subprocess
import sys

# Keeps 20,000 young containers alive, as requests in flight do, and counts the collections.
_KEEP_YOUNG_OBJECTS_ALIVE = """
import gc
from prequal_shared.runtime import freeze_startup_objects
{setup}
collections = []
gc.callbacks.append(lambda phase, info: phase == "stop" and collections.append(info))
alive = [[] for _ in range(20_000)]
print(len(collections), sum(info["collected"] for info in collections), gc.get_freeze_count() > 0)
"""


def _collections_while_young_objects_stay_alive(setup: str) -> tuple[int, int, bool]:
    out = subprocess.run(
        [sys.executable, "-c", _KEEP_YOUNG_OBJECTS_ALIVE.format(setup=setup)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), int(out[1]), out[2] == "True"


def test_young_objects_kept_alive_cause_no_collection_once_wired() -> None:
    collections, _, frozen = _collections_while_young_objects_stay_alive("freeze_startup_objects()")
    assert collections == 0
    assert frozen  # start-up's objects are out of the collector's reach


def test_python_s_default_collects_them_over_and_over_for_nothing() -> None:
    """What the set-up saves: the default threshold walks live objects again and again."""
    collections, collected, _ = _collections_while_young_objects_stay_alive("")
    assert collections > 20
    assert collected == 0
