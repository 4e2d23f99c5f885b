"""The bench's own workings: what it asks of oha and reads back, oha's build, how requests
never answered count, the once-a-second counts, the chart's series, the settling and the disk
probe."""

import asyncio
import itertools
import re
import shutil
import socket
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from prequal_devstack import bench
from prequal_devstack.bench import (
    Run,
    Sample,
    decided_of,
    disk_flush_max_by_second,
    disk_flush_summary,
    disk_line,
    drive_aiohttp,
    drive_oha,
    oha_binary,
    per_second,
    percentile,
    post_latencies_ms,
    probe_disk,
    progress,
    settle,
    throughput_series,
)
from prequal_devstack.config import StackConfig
from prequal_devstack.testing import StackInfo


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
    """Stands in for the live count: 1,000 applications a second, each count taking 0.1 s and,
    like PostgreSQL's, as of when it started; the third takes 1.5 s."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.calls = 0

    async def __call__(self) -> tuple[int, int]:
        count = int(1000 * (time.monotonic() - self.started))
        self.calls += 1
        await asyncio.sleep(1.5 if self.calls == 3 else 0.1)
        return count, count


async def test_progress_shows_each_second_of_wall_clock(capsys: pytest.CaptureFixture[str]) -> None:
    stop = asyncio.Event()
    watcher = asyncio.create_task(progress(SlowCounts(), stop))
    await asyncio.sleep(5.5)
    stop.set()
    await watcher
    lines = re.findall(
        r"t=\s*([\d.]+)s\s+accepted=\s*(\d+)\s+accepted/s=\s*(\d+)\s+decided/s=\s*(\d+)",
        capsys.readouterr().out,
    )
    # Not 1,100 a "second" of a second and a count; after the slow count, no burst of
    # counts to catch up (the fourth second is skipped, the fifth counted over 2 s).
    assert [round(float(t)) for t, *_ in lines] == [1, 2, 3, 5, 6], lines
    assert all(950 <= int(per_s) <= 1050 for _, _, per_s, _ in lines), lines


async def test_the_live_count_counts_each_application_of_the_run_once(stack: StackInfo) -> None:
    pool = await bench.connect(stack.database_url, size=1)
    marker = f"live-{uuid.uuid4().hex[:8]}"

    async def store(count: int, *, seconds_ago: float, status: str, name: str = marker) -> None:
        await pool.executemany(
            "INSERT INTO applications (id, pan_number, applicant_name, monthly_income_inr,"
            " loan_amount_inr, status, created_at)"
            " VALUES ($1, 'ABCDE1234F', $2, 50000, 100000, $3,"
            " now() - make_interval(secs => $4))",
            [(uuid.uuid4(), name, status, seconds_ago) for _ in range(count)],
        )

    try:
        await store(4, seconds_ago=0, status="PENDING", name=f"other-{marker}")  # not the run's
        ran = Run(
            rate=10,
            duration=1,
            concurrency=1,
            marker=marker,
            since=await pool.fetchval("SELECT now() - interval '60 seconds'"),
        )
        assert await bench.LiveCount(pool, ran)() == (0, 0)  # nothing of the run's yet
        live = bench.LiveCount(pool, ran)
        await store(3, seconds_ago=30, status="REJECTED")  # counted once, then kept
        await store(1, seconds_ago=30, status="PENDING")  # undecided until it is decided
        await store(2, seconds_ago=0, status="PENDING")  # counted again each time
        assert await live() == (6, 3)
        assert await live() == (6, 3)
        await pool.execute(  # the older one is decided, the recent ones still wait
            "UPDATE applications SET status = 'REJECTED' WHERE applicant_name = $1"
            " AND status = 'PENDING' AND created_at < now() - interval '10 seconds'",
            marker,
        )
        assert await live() == (6, 4)
        await store(1, seconds_ago=0, status="PRE_APPROVED")
        await pool.execute(
            "UPDATE applications SET status = 'MANUAL_REVIEW' WHERE applicant_name = $1"
            " AND status = 'PENDING' AND created_at > now() - interval '1 minute'",
            marker,
        )
        assert await live() == (7, 7)
        assert await live() == (7, 7)
    finally:
        await pool.execute(
            "DELETE FROM applications WHERE applicant_name = ANY($1::text[])",
            [marker, f"other-{marker}"],
        )
        await pool.close()


async def test_the_floor_leaves_none_of_its_applications_behind(stack: StackInfo) -> None:
    pool = await bench.connect(stack.database_url, size=1)
    try:
        since = await pool.fetchval("SELECT now()")
        per_s = await bench.floor(stack.database_url, concurrency=2, seconds=0.3)
        left = await pool.fetchval(
            "SELECT count(*) FROM applications WHERE created_at >= $1"
            " AND applicant_name LIKE 'floor-%'",
            since,
        )
    finally:
        await pool.close()
    assert per_s > 0
    assert left == 0


@pytest.mark.parametrize(
    ("created", "decided", "seconds", "expected"),
    [
        # Second n counts [n - 1, n): 0.0 and 0.99 in the first, 1.0 in the second.
        ([0.0, 0.99, 1.0], [0.5, 1.2, 1.9], 2, [(1, 2, 1), (2, 1, 2)]),
        # A second with nothing stored or decided shows as 0, not as a gap.
        ([0.1, 2.5], [0.2, 2.6], 3, [(1, 1, 1), (2, 0, 0), (3, 1, 1)]),
        # Decisions after the load has ended extend the series.
        ([0.1], [3.2], 1, [(1, 1, 0), (2, 0, 0), (3, 0, 0), (4, 0, 1)]),
        ([], [], 2, [(1, 0, 0), (2, 0, 0)]),
        # Stamped by another clock a moment behind this one's start: the first second.
        ([-0.2, 0.5], [0.6, 0.7], 1, [(1, 2, 2)]),
    ],
)
def test_throughput_series_counts_each_application_in_its_own_second(
    created: list[float],
    decided: list[float],
    seconds: int,
    expected: list[tuple[int, int, int]],
) -> None:
    series = throughput_series(created, decided, seconds=seconds)
    assert [
        (int(p["t"]), int(p["accepted_per_s"]), int(p["decided_per_s"])) for p in series
    ] == expected


async def test_settle_writes_out_what_the_vacuum_changed(stack: StackInfo) -> None:
    pool = await bench.connect(stack.database_url, size=1)
    try:
        before = await pool.fetchval("SELECT date_trunc('second', clock_timestamp())")
        await settle(pool)
        # The last checkpoint began after the vacuum was asked for: its writes are on disk.
        # (A timed checkpoint comes every 5 minutes at most, and only after writes.)
        latest = await pool.fetchval("SELECT checkpoint_time FROM pg_control_checkpoint()")
    finally:
        await pool.close()
    assert latest >= before


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


def test_the_disk_probe_times_each_flush_to_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushed: list[int] = []

    def slow_fdatasync(fd: int) -> None:  # a disk that takes 30 ms to make a write durable
        time.sleep(0.03)
        flushed.append(fd)

    monkeypatch.setattr("prequal_devstack.bench.os.fdatasync", slow_fdatasync)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    began = time.time()
    flushes = probe_disk(tmp_path / "probe", stop=stop, interval_s=0.01)
    ended = time.time()

    assert len(flushes) == len(flushed) >= 3
    assert all(began <= at <= ended for at, _ in flushes)
    assert all(30 <= ms < 300 for _, ms in flushes)
    assert not (tmp_path / "probe").exists()


def test_the_disk_probe_flushes_a_real_file_and_leaves_none(tmp_path: Path) -> None:
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    flushes = probe_disk(tmp_path / "probe", stop=stop, interval_s=0.01)
    assert len(flushes) >= 3
    assert list(tmp_path.iterdir()) == []


def test_a_failing_disk_probe_keeps_what_it_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def full_disk_after_two(fd: int) -> None:
        calls.append(fd)
        if len(calls) > 2:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr("prequal_devstack.bench.os.fdatasync", full_disk_after_two)
    stop = threading.Event()
    safety_net = threading.Timer(5, stop.set)  # the failure must end the probe well before
    safety_net.start()
    began = time.monotonic()
    flushes = probe_disk(tmp_path / "probe", stop=stop, interval_s=0.01)
    safety_net.cancel()
    assert time.monotonic() - began < 2
    assert len(flushes) == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("t", "second"), [(-0.3, 1), (0.0, 1), (0.999, 1), (1.0, 2), (59.5, 60), (60.0, 61)]
)
def test_every_per_second_figure_numbers_the_seconds_alike(t: float, second: int) -> None:
    assert per_second([t]) == {second: 1}
    assert bench.post_p99_by_second([Sample(due=t, latency=0.01, status=202)]) == {second: 10.0}
    assert disk_flush_max_by_second([(100.0 + t, 3.0)], started_wall=100.0) == {second: 3.0}


@pytest.mark.parametrize(
    ("flushes", "expected"),
    [
        # Numbered as the chart's seconds: the first second is 1.
        ([(100.05, 1.0), (100.5, 3.0), (101.2, 250.0), (103.9, 2.0)], {1: 3.0, 2: 250.0, 4: 2.0}),
        ([], {}),
    ],
)
def test_the_slowest_flush_of_each_second(
    flushes: list[tuple[float, float]], expected: dict[int, float]
) -> None:
    assert disk_flush_max_by_second(flushes, started_wall=100.0) == expected


def test_the_disk_flush_summary_counts_the_stalls() -> None:
    flushes = [(float(i), 1.0) for i in range(97)] + [(97.0, 100.0), (98.0, 101.0), (99.0, 600.0)]
    assert disk_flush_summary(flushes) == {
        "count": 100,
        "p50_ms": 1.0,
        "p99_ms": 101.0,
        "max_ms": 600.0,
        "over_100_ms": 2,
    }
    assert "2 of 100 over 100 ms" in disk_line(disk_flush_summary(flushes))
    assert disk_line(None) == "disk flushes  not probed (an external PostgreSQL)"


async def test_memory_is_read_one_process_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading all of the stack's PSS at once took 73 ms of a core, a beat in the POST p99 of
    each 5 s: the processes are read in turn, spread over the interval, and summed by family."""
    reads: list[tuple[float, int, float | None]] = []
    real = bench.pss_mb

    def read(process: psutil.Process) -> float | None:
        value = real(process)
        reads.append((time.monotonic(), process.pid, value))
        return value

    monkeypatch.setattr(bench, "pss_mb", read)
    child = await asyncio.create_subprocess_exec("sleep", "10")
    try:
        me = psutil.Process()
        members = {me.pid, child.pid}
        peaks: dict[str, float] = {}
        stop = asyncio.Event()
        sampler = asyncio.create_task(bench.sample_rss({"us": me}, peaks, stop, interval_s=0.4))
        await asyncio.sleep(1.0)
        stop.set()
        await sampler
    finally:
        child.kill()
        await child.wait()

    read_while_running = [r for r in reads if r[1] in members][: -len(members)]  # not the last
    assert len(read_while_running) >= 4
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(read_while_running)]
    assert min(gaps) >= 0.1  # 0.4 s over two processes: one every 0.2 s
    last_of = {pid: value for _, pid, value in reads if value is not None}
    assert peaks["us"] >= last_of[child.pid] + min(v for _, p, v in reads if p == me.pid and v)
