"""The bench's own workings: what it asks of oha and reads back, oha's build, how requests
never answered count, and the once-a-second counts."""

import asyncio
import re
import shutil
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import asyncpg
import pytest

from prequal_devstack import bench
from prequal_devstack.bench import (
    Run,
    Sample,
    decided_of,
    drive_aiohttp,
    drive_oha,
    oha_binary,
    percentile,
    post_latencies_ms,
    progress,
)
from prequal_devstack.config import StackConfig


def run() -> Run:
    return Run(rate=10, duration=1, concurrency=2, marker="t", since=datetime.now(UTC))


# What the bench reads of oha 1.16: the answered requests in a SQLite table (`--db-url`), the
# others counted by kind in its JSON report. The fake answers like oha only when asked for
# latencies counted from when each request was due, which is what makes the load open loop.
FAKE_OHA = """#!{python}
import json, sqlite3, sys
args = sys.argv[1:]
value = lambda flag: args[args.index(flag) + 1]
asked = (value("-n"), value("-q"), value("-c"), value("-t"))
if "--latency-correction" not in args or asked != ("10", "10.0", "2", "10s"):
    sys.exit("fake oha: not the open-loop run the bench asks for: " + " ".join(args))
db = sqlite3.connect(value("--db-url"))
db.execute(
    "CREATE TABLE oha (url TEXT NOT NULL, start REAL NOT NULL, start_latency_correction REAL,"
    " end REAL NOT NULL, duration REAL NOT NULL, status INTEGER NOT NULL,"
    " len_bytes INTEGER NOT NULL, run INTEGER NOT NULL)"
)
# Due at 0.1 s, sent at 0.3 s (no connection was free), answered at 0.35 s.
db.execute("INSERT INTO oha VALUES ('/applications', 0.3, 0.1, 0.35, 0.25, 202, 76, 1)")
db.execute("INSERT INTO oha VALUES ('/applications', 0.2, 0.2, 0.21, 0.01, 503, 90, 1)")
db.commit()
report = {{"errorDistribution": {{"timeout": 2, "Connection refused (os error 111)": 1}}}}
open(value("-o"), "w").write(json.dumps(report))
"""


def fake_oha(tmp_path: Path, script: str) -> Path:
    binary = tmp_path / "oha"
    binary.write_text(script)
    binary.chmod(0o755)
    return binary


async def test_oha_results_become_the_runs_samples(tmp_path: Path) -> None:
    ran = run()
    oha = fake_oha(tmp_path, FAKE_OHA.format(python=sys.executable))
    await drive_oha(ran, "http://127.0.0.1:9", oha)
    assert ran.samples == [
        Sample(due=0.1, latency=0.25, status=202),
        Sample(due=0.2, latency=0.01, status=503),
    ]
    assert ran.failures == {"timeout": 2, "Connection refused (os error 111)": 1}
    assert (ran.accepted, ran.sent) == (1, 5)


async def test_a_failed_oha_ends_the_run(tmp_path: Path) -> None:
    oha = fake_oha(tmp_path, '#!/bin/sh\necho "error: refused" >&2; exit 1\n')
    with pytest.raises(SystemExit, match=re.escape("oha failed (1): error: refused")):
        await drive_oha(run(), "http://127.0.0.1:9", oha)


async def test_aiohttp_counts_unanswered_requests_by_kind() -> None:
    with socket.socket() as closed:  # a port with nobody listening
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    ran = Run(rate=20, duration=0.15, concurrency=2, marker="t", since=datetime.now(UTC))
    await drive_aiohttp(ran, f"http://127.0.0.1:{port}")
    assert ran.samples == []
    assert ran.failures == {"ClientConnectorError": 3}
    assert ran.sent == 3


def test_unanswered_requests_count_as_the_timeout_in_the_percentiles() -> None:
    ran = run()
    ran.samples = [Sample(due=i / 10, latency=0.005, status=202) for i in range(98)]
    ran.failures.update({"timeout": 2})
    latencies = post_latencies_ms(ran)
    assert (percentile(latencies, 50), percentile(latencies, 99)) == (5.0, 10_000.0)


FAKE_CARGO = """#!/bin/sh
echo run >> {runs}
if [ "{builds}" = yes ]; then mkdir -p "$7/bin" && touch "$7/bin/oha"; exit 0; fi
echo "error: rustc 1.63.0 is not supported by oha" >&2; exit 101
"""


def fake_cargo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, builds: bool) -> Path:
    runs = tmp_path / "cargo-runs"
    cargo = tmp_path / "cargo"
    cargo.write_text(FAKE_CARGO.format(runs=runs, builds="yes" if builds else "no"))
    cargo.chmod(0o755)
    monkeypatch.setattr(shutil, "which", lambda name: str(cargo) if name == "cargo" else None)
    monkeypatch.setenv("DEVSTACK_CACHE_DIR", str(tmp_path / "cache"))
    return runs


def test_oha_is_built_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = fake_cargo(tmp_path, monkeypatch, builds=True)
    built = oha_binary(StackConfig())
    assert built == tmp_path / "cache" / f"oha-{bench.OHA_VERSION}" / "bin" / "oha"
    assert oha_binary(StackConfig()) == built
    assert runs.read_text().count("run") == 1


def test_a_failed_oha_build_is_not_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = fake_cargo(tmp_path, monkeypatch, builds=False)
    assert oha_binary(StackConfig()) is None  # the bench falls back to aiohttp
    assert oha_binary(StackConfig()) is None
    assert runs.read_text().count("run") == 1
    log = tmp_path / "cache" / f"oha-{bench.OHA_VERSION}" / "build-failed.log"
    assert "not supported" in log.read_text()
    log.unlink()  # deleting the log asks for another try
    assert oha_binary(StackConfig()) is None
    assert runs.read_text().count("run") == 2


def test_without_cargo_there_is_no_oha(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("DEVSTACK_CACHE_DIR", str(tmp_path / "cache"))
    assert oha_binary(StackConfig()) is None


class SlowCounts:
    """Stands in for the pool: 1,000 applications a second, each count taking 0.1 s and, like
    PostgreSQL's, as of when it started; the third takes 1.5 s."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.calls = 0

    async def fetchrow(self, *_: object) -> dict[str, int]:
        count = int(1000 * (time.monotonic() - self.started))
        self.calls += 1
        await asyncio.sleep(1.5 if self.calls == 3 else 0.1)
        return {"accepted": count, "decided": count}


async def test_progress_counts_per_second_of_wall_clock() -> None:
    stop = asyncio.Event()
    watcher = asyncio.create_task(progress(run(), cast(asyncpg.Pool, SlowCounts()), stop))
    await asyncio.sleep(5.5)
    stop.set()
    series = await watcher
    # Not 1,100 a "second" of a second and a count; after the slow count, no burst of
    # counts to catch up (the fourth second is skipped, the fifth counted over 2 s).
    assert [round(point["t"]) for point in series] == [1, 2, 3, 5, 6]
    assert all(950 <= point["accepted_per_s"] <= 1050 for point in series), series


@pytest.mark.parametrize(
    ("decided", "stored", "accepted", "shown"),
    [
        (100, 100, 100, "100/100 decided"),
        (98, 100, 100, "98/100 decided"),
        # The generator gave up on some requests that the API still stored and decided.
        (
            120,
            120,
            100,
            "120/120 stored decided; 100 answered 202 in time, the rest stored after the"
            " generator gave up on them",
        ),
        # A 202 whose application is not in the database: lost, and said so.
        (99, 99, 100, "99/100 decided; only 99 of the 202s stored"),
    ],
)
def test_decided_of(decided: int, stored: int, accepted: int, shown: str) -> None:
    assert decided_of({"decided": decided, "stored": stored, "accepted": accepted}) == shown
