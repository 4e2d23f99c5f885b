"""`make bench`: the whole pipeline under a constant arrival rate, against its own floor.

Open loop: request i is due at t0 + i / rate whatever happened to the earlier ones, and its
latency is counted from when it was due, so a slow server cannot hide its queueing
(coordinated omission). End-to-end latency is read from the database: `updated_at -
created_at` of each application, i.e. from the start of the transaction that stores it
PENDING (`now()`) to the decision's update (`clock_timestamp()`), each just before its commit.

The floor is the same database work (insert an application, then update it to its decision)
done directly with asyncpg at the same concurrency, with no HTTP and no Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import psutil
import uvloop
from sqlalchemy.engine import make_url

from prequal_devstack.config import StackConfig
from prequal_devstack.kafka import Kafka
from prequal_devstack.load import PANS
from prequal_devstack.postgres import Postgres
from prequal_devstack.services import SPECS, replicas_of
from prequal_shared.domain import LoanType
from prequal_shared.ids import new_id

THIS_RUN = "created_at >= $2 AND applicant_name = $1"
"""The run's applications. The created_at bound lets PostgreSQL read them through an index,
so counting and reading them costs the same however many applications earlier runs left (a
scan of the whole table cost the measured database more and more CPU from run to run)."""


@dataclass
class Sample:
    """An answered request: when it was due (seconds from the start), how long it took from
    then, and the HTTP status."""

    due: float
    latency: float
    status: int


@dataclass
class Run:
    rate: float
    duration: float
    concurrency: int
    marker: str
    since: datetime  # PostgreSQL's clock, which stamps created_at
    samples: list[Sample] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)  # requests never answered, by kind
    started_wall: float = 0.0

    @property
    def accepted(self) -> int:
        return sum(1 for s in self.samples if s.status == 202)

    @property
    def sent(self) -> int:
        return len(self.samples) + self.failures.total()


async def new_run(
    pool: asyncpg.Pool, prefix: str, *, rate: float, duration: float, concurrency: int
) -> Run:
    return Run(
        rate=rate,
        duration=duration,
        concurrency=concurrency,
        marker=f"{prefix}-{uuid.uuid4().hex[:8]}",
        # The database may be on another machine, with another clock.
        since=await pool.fetchval("SELECT now() - interval '5 seconds'"),
    )


def bodies(marker: str, count: int) -> list[bytes]:
    """A realistic mix: every PAN class, incomes around the thresholds, every outcome."""
    rng = random.Random(marker)
    out = []
    for _ in range(count):
        income = Decimal(rng.choice([18000, 32000, 45000, 60000, 80000, 150000]))
        ratio = rng.choice([10, 30, 47, 48, 49, 60, 120])
        body = {
            "pan_number": rng.choice(PANS),
            "applicant_name": marker,
            "monthly_income_inr": str(income),
            "loan_amount_inr": str(income * ratio),
            "loan_type": rng.choice([None, *[t.value for t in LoanType]]),
        }
        out.append(json.dumps(body).encode())
    return out


async def drive_aiohttp(run: Run, api_url: str) -> float:
    """Send `rate` POSTs a second for `duration` seconds, open loop, from this process.
    Returns the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    total = int(run.rate * run.duration)
    payloads = bodies(run.marker, total)
    connector = aiohttp.TCPConnector(limit=run.concurrency, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(payload: bytes, due: float) -> None:
            try:
                async with session.post(
                    f"{api_url}/applications", data=payload, headers=headers
                ) as r:
                    await r.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                run.failures[type(exc).__name__] += 1
                return
            run.samples.append(
                Sample(due=due - t0, latency=time.perf_counter() - due, status=r.status)
            )

        tasks: set[asyncio.Task[None]] = set()
        run.started_wall = time.time()
        t0 = time.perf_counter()
        for i, payload in enumerate(payloads):
            due = t0 + i / run.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(payload, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


OHA_VERSION = "1.16.0"

TIMEOUT_S = 10
"""A request not answered within this long is given up on (and counted under `errors`)."""


def oha_binary(config: StackConfig) -> Path | None:
    """oha, an open-loop HTTP load generator in Rust, built once from crates.io into the
    stack's cache; None when Rust's cargo is not installed or the build failed (once: a build
    takes minutes, and is not tried again until its log is deleted)."""
    root = config.cache / f"oha-{OHA_VERSION}"
    binary = root / "bin" / "oha"
    failed = root / "build-failed.log"
    if binary.exists():
        return binary
    cargo = shutil.which("cargo")
    if cargo is None:
        return None
    if failed.exists():
        print(f"oha could not be built (see {failed}; delete it to try again): using aiohttp")
        return None
    print(
        f"building oha {OHA_VERSION} once from crates.io (3-4 minutes on 2 cores) ...", flush=True
    )
    result = subprocess.run(
        # --locked: the versions oha was released with, which build with older compilers than
        # the newest versions of its dependencies ask for.
        [cargo, "install", "oha", "--version", OHA_VERSION, "--locked", "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        root.mkdir(parents=True, exist_ok=True)
        failed.write_text(result.stderr)
        print(
            f"  could not build oha (it needs Rust 1.88 or later and a C compiler), using the"
            f" Python generator:\n{result.stderr[-1000:]}\n  (the whole log: {failed})"
        )
        return None
    return binary


async def drive_oha(run: Run, api_url: str, oha: Path) -> float:
    """The same open-loop load from oha (another process, far cheaper per request than
    Python). Returns the CPU seconds oha used."""
    total = max(1, int(run.rate * run.duration))
    with tempfile.TemporaryDirectory() as workdir:
        lines = Path(workdir) / "bodies.jsonl"
        lines.write_bytes(b"".join(body + b"\n" for body in bodies(run.marker, min(total, 2000))))
        report = Path(workdir) / "report.json"
        results = Path(workdir) / "results.db"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        run.started_wall = time.time()
        process = await asyncio.create_subprocess_exec(
            str(oha),
            *("-n", str(total), "-q", str(float(run.rate))),
            # Each request timed from when it was due, not from when a connection was free
            # to send it: a slow server cannot hide its queue (coordinated omission).
            "--latency-correction",
            # Like the aiohttp generator: at most `concurrency` connections.
            # The timeout runs from the send, not from when the request was due.
            *("-c", str(run.concurrency), "-t", f"{TIMEOUT_S}s"),
            *("-m", "POST", "-T", "application/json", "-Z", str(lines)),
            # One thread: two cost more CPU (0.064-0.070 ms a request at 2,000/s, against
            # 0.055-0.060) and one keeps up with the stack's limit.
            *("--worker-threads", "1", "--no-tui"),
            # The answered requests one by one, and the others counted by kind.
            *("--db-url", str(results), "--output-format", "json", "-o", str(report)),
            f"{api_url}/applications",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, errors = await process.communicate()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if process.returncode != 0:
            raise SystemExit(f"oha failed ({process.returncode}): {errors.decode()[-1000:]}")
        with contextlib.closing(sqlite3.connect(results)) as db:
            answered = db.execute(
                "SELECT coalesce(start_latency_correction, start), duration, status FROM oha"
            ).fetchall()
        run.failures.update(json.loads(report.read_text())["errorDistribution"])
    run.samples.extend(
        Sample(due=due, latency=latency, status=status) for due, latency, status in answered
    )
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def post_latencies_ms(run: Run) -> list[float]:
    """Every request's latency; one never answered (a timeout, a refused connection) counts as
    the timeout. Left out, the more requests an overloaded API left unanswered, the better its
    percentiles would look."""
    answered = [sample.latency * 1000 for sample in run.samples]
    return answered + [TIMEOUT_S * 1000.0] * run.failures.total()


def rounded(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


RECOUNT_S = 5.0
"""Applications stored this recently are counted again at each live count: a row is stamped
when its statement starts and seen once it commits, and a commit is rarely this late."""

# $2 is where the last count's settled rows end; $3 the ids of those rows that count found
# undecided. Rows stored since are read through the created_at index, the undecided older ones
# by id: there is no status index to find the undecided by (a decision would then not be a
# HOT update), and reading from the oldest undecided row on would read more and more of the
# run while one stays undecided (one sent to the dead-letter topic, a backlog).
_LIVE_COUNT = f"""
WITH cut AS (SELECT now() - make_interval(secs => {RECOUNT_S}) AS at),
     run AS (SELECT id, created_at, status FROM applications WHERE {THIS_RUN}),
     waiting AS (SELECT id FROM applications WHERE id = ANY($3::uuid[]) AND status = 'PENDING')
SELECT cut.at AS cut,
       (SELECT count(*) FROM run WHERE created_at < cut.at) AS settled,
       (SELECT count(*) FROM run WHERE created_at >= cut.at) AS recent,
       (SELECT count(*) FROM run WHERE status = 'PENDING')
           + (SELECT count(*) FROM waiting) AS pending,
       ARRAY(SELECT id FROM run WHERE status = 'PENDING' AND created_at < cut.at
             UNION ALL SELECT id FROM waiting) AS waiting
FROM cut
"""


class LiveCount:
    """The run's applications stored and decided so far, counted once a second while the load
    runs at a cost that does not grow with the run. Counting all of them each time did: late in
    a 60 s run on a large database one count took 80-137 ms (EXPLAIN), and pg_stat_statements
    gave such counts (the live line's and the drain's, which it does not tell apart) 1.5 s of
    PostgreSQL's time in a 30 s run at 1,000/s, 0.05 of its 0.28 ms per application, all of it
    on the database being measured. Instead, those stored more than `RECOUNT_S` before a count
    are counted once and kept, and those of them still undecided are looked up again by id:
    decided is stored less undecided. A row whose statement began more than `RECOUNT_S` before
    a count and committed after it is never counted: the line is a live view; the summary and
    the chart read every row of the run after it."""

    def __init__(self, pool: asyncpg.Pool, run: Run) -> None:
        self._pool = pool
        self._marker = run.marker
        self._settled = 0
        self._settled_until = run.since
        self._waiting: list[uuid.UUID] = []

    async def __call__(self) -> tuple[int, int]:
        row = await self._pool.fetchrow(
            _LIVE_COUNT, self._marker, self._settled_until, self._waiting
        )
        self._settled += int(row["settled"])
        self._settled_until = max(self._settled_until, row["cut"])
        self._waiting = list(row["waiting"])
        stored = self._settled + int(row["recent"])
        return stored, stored - int(row["pending"])


LIVE_WINDOW = 3
"""The live rates are over the last this many counts (seconds), so that a count that took long
or a late wake-up does not read as a burst or a stall."""


async def progress(count: Callable[[], Awaitable[tuple[int, int]]], stop: asyncio.Event) -> None:
    """One line a second while the load runs: the run's applications stored and decided, as
    `count` gives them. Rates are divided by the time the counts span, not by whole seconds."""
    started = time.monotonic()
    counts = deque([(started, 0, 0)], maxlen=LIVE_WINDOW + 1)
    while not stop.is_set():
        # The next whole second: after a count that took longer than a second, no burst of
        # counts to catch up.
        await asyncio.sleep(1 - (time.monotonic() - started) % 1)
        now = time.monotonic()  # PostgreSQL counts as of the query's start
        accepted, decided = await count()
        counts.append((now, accepted, decided))
        then, accepted_then, decided_then = counts[0]
        span = now - then  # the sleep makes it more than 0
        print(
            f"  t={now - started:>5.1f}s  accepted={accepted:>7}"
            f"  accepted/s={(accepted - accepted_then) / span:>6.0f}"
            f"  decided/s={(decided - decided_then) / span:>6.0f}",
            flush=True,
        )


def second_of(t: float) -> int:
    """The second of the run (numbered from 1, as in the chart) that `t`, seconds from the
    start, falls in: second n holds [n - 1, n), and the first also any time before the start
    (clocks a moment apart)."""
    return max(math.floor(t), 0) + 1


def per_second(times: list[float]) -> dict[int, int]:
    """How many of `times` (seconds from the start) fall in each second."""
    return Counter(second_of(t) for t in times)


def throughput_series(
    created: list[float], decided: list[float], *, seconds: int
) -> list[dict[str, float]]:
    """The chart's throughput, from each application's own timestamps (seconds from the
    start): stored per second by `created_at`, decided per second by the decision's
    `updated_at`."""
    stored_in, decided_in = per_second(created), per_second(decided)
    last = max([seconds, *stored_in, *decided_in])
    return [
        {
            "t": float(second),
            "accepted_per_s": float(stored_in.get(second, 0)),
            "decided_per_s": float(decided_in.get(second, 0)),
        }
        for second in range(1, last + 1)
    ]


def disk_flush_max_by_second(
    flushes: list[tuple[float, float]], started_wall: float
) -> dict[int, float]:
    """The slowest flush begun in each second of the run."""
    by_second: dict[int, float] = {}
    for began, ms in flushes:
        second = second_of(began - started_wall)
        by_second[second] = max(by_second.get(second, 0.0), ms)
    return by_second


def post_p99_by_second(samples: list[Sample]) -> dict[int, float]:
    by_second: dict[int, list[float]] = {}
    for sample in samples:
        by_second.setdefault(second_of(sample.due), []).append(sample.latency)
    return {second: percentile(values, 99) * 1000 for second, values in by_second.items()}


async def connect(database_url: str, *, size: int) -> asyncpg.Pool:
    """A plain asyncpg pool (the bench measures around SQLAlchemy, not through it)."""
    url = make_url(database_url)
    pool: asyncpg.Pool = await asyncpg.create_pool(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        database=url.database,
        min_size=size,
        max_size=size,
    )
    return pool


async def settle(pool: asyncpg.Pool) -> None:
    """Vacuum before measuring. Earlier runs leave dead rows (each decision updates its row,
    the floor deletes its own rows), and without this the autovacuum they trigger ran inside
    the next run: POST p99 at 1,000/s was 60-130 ms for its first 20 s, then 10-20 ms. Work
    this run creates is vacuumed when PostgreSQL decides, as in production."""
    for table in ("applications", "outbox", "decisions", "processed_events"):
        await pool.execute(f"VACUUM (ANALYZE) {table}")
    # The pages the vacuum changed are then written out now, not by a checkpoint or the
    # kernel's writeback inside the run. On a database of 4 million applications the vacuum
    # took 10-40 s, and commits in the run's first seconds then waited up to 0.5 s on the
    # disk (docs/performance.md, sixteenth look).
    try:
        await pool.execute("CHECKPOINT")
    except asyncpg.InsufficientPrivilegeError:
        print("  (not allowed to CHECKPOINT: the vacuum's writes may land in the run)")


async def floor(database_url: str, *, concurrency: int, seconds: float) -> float:
    """Insert-then-update per application, straight to PostgreSQL: the pipeline's ceiling."""
    pool = await connect(database_url, size=concurrency)
    marker = f"floor-{uuid.uuid4().hex[:8]}"
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        async with pool.acquire() as conn:
            while time.perf_counter() < deadline:
                app_id = new_id()  # as the API makes them
                await conn.execute(
                    "INSERT INTO applications (id, pan_number, applicant_name, monthly_income_inr,"
                    " loan_amount_inr, loan_type, status)"
                    " VALUES ($1, $2, $3, $4, $5, $6, 'PENDING')",
                    app_id,
                    "ABCDE1234F",
                    marker,
                    Decimal("50000"),
                    Decimal("200000"),
                    "HOME",
                )
                await conn.execute(
                    "UPDATE applications SET status = 'PRE_APPROVED', cibil_score = 790"
                    " WHERE id = $1 AND status = 'PENDING'",
                    app_id,
                )
                done += 1

    since = await pool.fetchval("SELECT now()")
    started = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.perf_counter() - started
    # Bounded by time like every read of a run: by name alone, a scan of the whole table.
    await pool.execute(f"DELETE FROM applications WHERE {THIS_RUN}", marker, since)
    await pool.close()
    return done / elapsed


def stack_processes(config: StackConfig) -> dict[str, psutil.Process]:
    found: dict[str, psutil.Process] = {}
    for spec in SPECS.values():
        for service in replicas_of(config, spec):
            pid = service.pid()
            if pid:
                found[service.name] = psutil.Process(pid)
    for name, component in (("kafka", Kafka(config)), ("postgres", Postgres(config))):
        pid = component.pid()
        if pid:
            found[name] = psutil.Process(pid)
    return found


def family(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(process: psutil.Process) -> float:
    """CPU of a process and its children, including children that exited and were reaped
    (PostgreSQL's backends come and go)."""
    total = 0.0
    for index, member in enumerate(family(process)):
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
        if index == 0:
            total += times.children_user + times.children_system
    return total


def pss_mb(process: psutil.Process) -> float | None:
    """One process's memory as PSS: shared pages (PostgreSQL's shared buffers) are divided
    among the processes that map them instead of counted once per backend. None if it has
    gone."""
    try:
        return float(process.memory_full_info().pss) / 2**20
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


RSS_SAMPLE_INTERVAL_S = 5.0
"""How often each process of the stack has its memory read. PSS is costly to read: the kernel
walks the process's page tables, 73 ms of CPU for the whole stack (50 of them for PostgreSQL's
dozen processes), 2-10 ms for any one process. Read twice a second, that was 15% of a core
taken from the system being measured; every 5 s it is 1.5%. Read all at once, every 5 s, it
also put a beat in the POST p99 of each second (twentieth look), so the processes are read one
at a time, spread over the 5 s."""


async def sample_rss(
    processes: dict[str, psutil.Process],
    peaks: dict[str, float],
    stop: asyncio.Event,
    *,
    interval_s: float = RSS_SAMPLE_INTERVAL_S,
) -> None:
    """Keeps in `peaks` the highest PSS of each of `processes` with its children (the sum of
    its members' latest readings) until `stop`, then reads them all once more."""
    latest: dict[int, float] = {}

    def read(name: str, members: list[psutil.Process], *only: psutil.Process) -> None:
        for member in only or members:
            if (value := pss_mb(member)) is not None:
                latest[member.pid] = value
        peaks[name] = max(peaks.get(name, 0.0), sum(latest.get(m.pid, 0.0) for m in members))

    while not stop.is_set():
        turns = [
            (name, members, member)
            for name, members in ((n, family(p)) for n, p in processes.items())
            for member in members
        ]
        step = interval_s / max(1, len(turns))
        for name, members, member in turns:
            read(name, members, member)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), step)
            if stop.is_set():
                break
    # The load is over: one last reading of everything, at once.
    for name, process in processes.items():
        read(name, family(process))


DISK_PROBE_INTERVAL_S = 0.05
"""The disk probe makes a small write durable every 50 ms: 20 flushes a second beside the
stack's 150 or so at 1,000/s. One due during a stall is made at its end and waits for it."""


def probe_disk(
    path: Path, *, stop: threading.Event, interval_s: float
) -> list[tuple[float, float]]:
    """Every `interval_s` until `stop`, write 4 kB to `path` and wait until it is on the disk
    (`fdatasync`), as a commit writes PostgreSQL's WAL and waits for it; returns, for each,
    when it began (`time.time()`) and the ms the write and its flush took. Runs in a thread of
    its own. No commit, and so no 202, can be faster than the disk's flush: a POST p99 over the
    goal in a run whose flushes stalled for hundreds of milliseconds is the disk's
    (docs/performance.md, twentieth look). A probe that fails (the disk full, say) stops and
    keeps what it measured: it must not cost the run its figures."""
    flushes: list[tuple[float, float]] = []
    block = b"\0" * 4096
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        print(f"  the disk probe could not start: {exc}", flush=True)
        return flushes
    try:
        due = time.monotonic()
        while not stop.wait(max(0.0, due - time.monotonic())):
            began, began_wall = time.monotonic(), time.time()
            os.pwrite(fd, block, 0)
            os.fdatasync(fd)
            flushes.append((began_wall, (time.monotonic() - began) * 1000))
            # The next one interval_s after this one was due, or now if that has passed: no
            # burst of flushes to catch up after a stall.
            due = max(due + interval_s, time.monotonic())
    except OSError as exc:
        print(f"  the disk probe stopped: {exc}", flush=True)
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    return flushes


def disk_flush_summary(flushes: list[tuple[float, float]]) -> dict[str, float | int]:
    took = [ms for _, ms in flushes]
    return {
        "count": len(took),
        "p50_ms": round(percentile(took, 50), 2),
        "p99_ms": round(percentile(took, 99), 2),
        "max_ms": round(max(took, default=0.0), 2),
        "over_100_ms": sum(1 for ms in took if ms > 100),
    }


def chart(
    series: list[dict[str, float]],
    post_p99: dict[int, float],
    e2e: list[tuple[float, float]],
    path: Path,
    title: str,
    *,
    disk_flush_max: dict[int, float] | None = None,
) -> None:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    t = [p["t"] for p in series]
    top.plot(t, [p["accepted_per_s"] for p in series], label="stored/s")
    top.plot(t, [p["decided_per_s"] for p in series], label="decided/s")
    top.set_ylabel("applications / s")
    top.legend()
    top.grid(alpha=0.3)
    top.set_title(title)
    seconds = sorted(post_p99)
    bottom.plot(
        seconds, [post_p99[x] for x in seconds], label="POST p99 (per second, answered requests)"
    )
    if disk_flush_max:
        flushed = sorted(disk_flush_max)
        bottom.plot(
            flushed,
            [disk_flush_max[x] for x in flushed],
            color="tab:gray",
            linewidth=1,
            label="slowest disk flush (per second)",
        )
    if e2e:
        bottom.scatter(
            [x for x, _ in e2e],
            [y for _, y in e2e],
            s=2,
            alpha=0.3,
            color="tab:red",
            label="end-to-end (each)",
        )
    bottom.set_yscale("log")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("seconds since start")
    bottom.legend()
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def wait_until_decided(
    count: Callable[[], Awaitable[tuple[int, int]]], *, accepted: int, timeout_s: float
) -> tuple[int, int]:
    """Wait (at most timeout_s) until every application of the run that was stored is
    decided, as `count` (a `LiveCount` of its own) gives them; returns how many were stored
    and how many are decided. Stored can exceed the 202s the generator counted (`accepted`): a
    request it gave up on (its timeout) may still have been stored, and is then decided like
    any other."""
    deadline = time.monotonic() + timeout_s
    last_stored, stored_since = -1, time.monotonic()
    while True:
        stored, decided = await count()
        if stored != last_stored:  # the API may still be storing requests oha gave up on
            last_stored, stored_since = stored, time.monotonic()
        settled = time.monotonic() - stored_since >= 1.0
        if (decided == stored >= accepted and settled) or time.monotonic() >= deadline:
            return stored, decided
        await asyncio.sleep(0.2)


async def drive(run: Run, api_url: str, oha: Path | None) -> float:
    if oha is not None:
        return await drive_oha(run, api_url, oha)
    return await drive_aiohttp(run, api_url)


async def bench(
    rate: float,
    duration: float,
    *,
    concurrency: int,
    drain_s: float,
    generator: str,
    warmup_s: float,
) -> dict[str, Any]:
    config = StackConfig()
    out_dir = config.root / ".bench"
    out_dir.mkdir(exist_ok=True)
    oha = oha_binary(config) if generator in ("auto", "oha") else None
    if generator == "oha" and oha is None:
        raise SystemExit(
            "oha is not available (it needs Rust 1.88 or later and a C compiler to build, and"
            " a failed build leaves its log in the cache): use --generator aiohttp"
        )
    pool = await connect(config.database_url, size=2)
    if warmup_s > 0:
        # A stack just started is slower for a while: Kafka's JVM has not compiled its hot
        # paths yet (its CPU per application was 0.27 ms in a first minute, 0.15 ms in the
        # next) and PostgreSQL's caches are cold. POST p99 of a first 60 s run at 1,000/s was
        # 104 ms against 51 ms in the run after it. The warm-up's requests are not counted,
        # and the measured run starts once they are all decided (no backlog carried over).
        print(f"warm-up: {rate:g} applications/s for {warmup_s:g} s, not measured", flush=True)
        warmup = await new_run(
            pool, "warmup", rate=rate, duration=warmup_s, concurrency=concurrency
        )
        await drive(warmup, config.api_url, oha)
        _, decided = await wait_until_decided(
            LiveCount(pool, warmup), accepted=warmup.accepted, timeout_s=drain_s
        )
        print(
            f"  warm-up: {warmup.accepted} of {warmup.sent} accepted, {decided} decided",
            flush=True,
        )
    run = await new_run(pool, "bench", rate=rate, duration=duration, concurrency=concurrency)
    print(
        "settling the database: VACUUM (ANALYZE) of what earlier runs left, then CHECKPOINT ...",
        flush=True,
    )
    await settle(pool)
    processes = stack_processes(config)
    cpu_before = {name: cpu_seconds(p) for name, p in processes.items()}
    peaks: dict[str, float] = {}
    stop = asyncio.Event()
    print(
        f"bench: {rate:g} applications/s for {duration:.0f} s against {config.api_url}"
        f" (marker {run.marker})"
    )
    sampler = asyncio.create_task(sample_rss(processes, peaks, stop))
    watcher = asyncio.create_task(progress(LiveCount(pool, run), stop))
    # The disk's flushes are probed only where the stack's own PostgreSQL keeps its WAL.
    probe_stop = threading.Event()
    disk_probe = (
        None
        if config.uses_external_postgres
        else asyncio.create_task(
            asyncio.to_thread(
                probe_disk,
                config.state / "bench-disk-probe",
                stop=probe_stop,
                interval_s=DISK_PROBE_INTERVAL_S,
            )
        )
    )
    try:
        generator_cpu = await drive(run, config.api_url, oha)
    finally:
        probe_stop.set()
        flushes = await disk_probe if disk_probe is not None else None
    if not (run.samples or run.failures):
        raise SystemExit("the load generator sent no request: no figures to report")
    accepted = run.accepted
    # A count of its own: the live line's may still be running.
    stored, _ = await wait_until_decided(LiveCount(pool, run), accepted=accepted, timeout_s=drain_s)
    stop.set()
    await watcher
    await sampler
    cpu_after = {name: cpu_seconds(p) for name, p in processes.items()}
    every = await pool.fetch(
        "SELECT extract(epoch FROM created_at) AS created,"
        " extract(epoch FROM updated_at) AS updated, status <> 'PENDING' AS decided"
        f" FROM applications WHERE {THIS_RUN}",
        run.marker,
        run.since,
    )
    await pool.close()
    rows = [r for r in every if r["decided"]]

    e2e_ms = [(float(r["updated"]) - float(r["created"])) * 1000 for r in rows]
    # Stored per second counts every application of the run, decided or not (the drain may
    # have timed out). Times are the database's clock from this machine's start of the run,
    # as in the end-to-end scatter.
    series = throughput_series(
        [float(r["created"]) - run.started_wall for r in every],
        [float(r["updated"]) - run.started_wall for r in rows],
        seconds=math.ceil(duration),
    )
    first_created = min((float(r["created"]) for r in rows), default=0.0)
    last_decided = max((float(r["updated"]) for r in rows), default=0.0)
    decided_per_s = len(rows) / max(last_decided - first_created, duration) if rows else 0.0
    post = post_latencies_ms(run)
    errors = Counter(str(s.status) for s in run.samples if s.status != 202) + run.failures
    print("floor: the same insert + update straight to PostgreSQL ...", flush=True)
    floor_per_s = await floor(
        config.database_url, concurrency=concurrency, seconds=min(10.0, duration)
    )
    handled = max(accepted, stored)
    post_p99_each_second = post_p99_by_second(run.samples)
    flush_max_each_second = (
        disk_flush_max_by_second(flushes, run.started_wall) if flushes is not None else {}
    )
    result: dict[str, Any] = {
        "rate_target": rate,
        "duration_s": duration,
        "warmup_s": warmup_s,
        "concurrency": concurrency,
        "sent": run.sent,
        "accepted": accepted,
        "stored": stored,
        "decided": len(rows),
        "accepted_per_s": round(accepted / duration, 1),
        "decided_per_s": round(decided_per_s, 1),
        "post_p50_ms": round(percentile(post, 50), 2),
        "post_p99_ms": round(percentile(post, 99), 2),
        "post_max_ms": round(max(post, default=0.0), 2),
        "e2e_p50_ms": round(percentile(e2e_ms, 50), 2),
        "e2e_p99_ms": round(percentile(e2e_ms, 99), 2),
        "e2e_max_ms": round(max(e2e_ms, default=0.0), 2),
        "floor_per_s": round(floor_per_s, 1),
        "ratio_to_floor": round(decided_per_s / floor_per_s, 3) if floor_per_s else 0.0,
        # Decided/s cannot exceed the target rate, so neither can the ratio exceed this.
        "ratio_ceiling_at_rate": round(rate / floor_per_s, 3) if floor_per_s else 0.0,
        "errors": dict(errors),
        "cpu_ms_per_application": {
            name: round((cpu_after[name] - cpu_before[name]) / max(handled, 1) * 1000, 3)
            for name in processes
        },
        # Requests the generator gave up on may still have been stored, and cost the same.
        "cpu_unit": "ms of CPU per application (those stored, or the 202s if more)",
        "load_generator": "oha" if oha is not None else "aiohttp",
        "load_generator_cpu_s": round(generator_cpu, 2),
        "load_generator_cpu_share": round(generator_cpu / duration, 3),
        "rss_mb": {name: round(value, 1) for name, value in peaks.items()},
        "rss_note": "peak proportional set size (PSS) of each process with its children",
        "rss_mb_stack_total": round(sum(peaks.values()), 1),
        # The disk PostgreSQL's commits wait on, probed through the run (null with an external
        # PostgreSQL): what a durable commit cannot be faster than.
        "disk_flush": disk_flush_summary(flushes) if flushes is not None else None,
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        },
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.started_wall)),
        # The chart's data: a slow run shows here whether it was slow throughout or stalled.
        "per_second": [
            {
                **point,
                "post_p99_ms": rounded(post_p99_each_second.get(int(point["t"]))),
                "disk_flush_max_ms": rounded(flush_max_each_second.get(int(point["t"]))),
            }
            for point in series
        ],
    }
    (out_dir / "latest.json").write_text(json.dumps(result, indent=2))
    chart(
        series,
        post_p99_each_second,
        [(float(r["created"]) - run.started_wall, e) for r, e in zip(rows, e2e_ms, strict=True)],
        out_dir / "latest.png",
        f"{rate:g}/s target for {duration:.0f} s: decided {decided_per_s:.0f}/s, "
        f"POST p99 {result['post_p99_ms']:.0f} ms, e2e p99 {result['e2e_p99_ms']:.0f} ms",
        disk_flush_max=flush_max_each_second,
    )
    return result


def decided_of(result: dict[str, Any]) -> str:
    decided, stored, accepted = result["decided"], result["stored"], result["accepted"]
    if stored > accepted:
        return (
            f"{decided}/{stored} stored decided; {accepted} answered 202 in time, the rest"
            " stored after the generator gave up on them"
        )
    if stored < accepted:
        return f"{decided}/{accepted} decided; only {stored} of the 202s stored"
    return f"{decided}/{accepted} decided"


def disk_line(flush: dict[str, float] | None) -> str:
    if flush is None:
        return "disk flushes  not probed (an external PostgreSQL)"
    return (
        f"disk flushes  p50 {flush['p50_ms']:.1f} ms   p99 {flush['p99_ms']:.1f} ms"
        f"   max {flush['max_ms']:.0f} ms   ({flush['over_100_ms']} of {flush['count']} over"
        " 100 ms; every commit waits for a flush)"
    )


def summary(result: dict[str, Any]) -> str:
    lines = [
        "",
        f"target        {result['rate_target']:g}/s for {result['duration_s']:.0f} s",
        f"accepted      {result['accepted_per_s']:.0f}/s   decided {result['decided_per_s']:.0f}/s"
        f"   ({decided_of(result)})",
        f"POST          p50 {result['post_p50_ms']:.1f} ms   p99 {result['post_p99_ms']:.1f} ms"
        f"   max {result['post_max_ms']:.0f} ms",
        f"end to end    p50 {result['e2e_p50_ms']:.1f} ms   p99 {result['e2e_p99_ms']:.1f} ms"
        f"   max {result['e2e_max_ms']:.0f} ms",
        f"floor         {result['floor_per_s']:.0f}/s"
        f"   ratio_to_floor {result['ratio_to_floor']:.2f}"
        f" (at most {result['ratio_ceiling_at_rate']:.2f} at this rate)",
        f"errors        {result['errors'] or 'none'}",
        "CPU ms/app    "
        + "  ".join(f"{k} {v}" for k, v in result["cpu_ms_per_application"].items()),
        f"load gen CPU  {result['load_generator_cpu_share'] * 100:.0f}% of a core"
        f" ({result['load_generator']})",
        disk_line(result["disk_flush"]),
        "peak PSS MB   "
        + "  ".join(f"{k} {v:.0f}" for k, v in result["rss_mb"].items())
        + f"  (total {result['rss_mb_stack_total']:.0f})",
        "written       .bench/latest.json, .bench/latest.png",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument(
        "--concurrency", type=int, default=64, help="HTTP connections and floor workers"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        # Kafka's JVM compiles its hot paths for a minute or more of load: after 10 s, a fresh
        # stack's POST p99 at 1,000/s was 57-139 ms (four runs); after 60 s, 13-100 ms (four
        # runs, the hour mattering as much; docs/performance.md, fifteenth look).
        default=60,
        help="seconds of load at the same rate before the measured run (not counted)",
    )
    parser.add_argument(
        "--drain", type=float, default=60, help="seconds to wait for the last decisions"
    )
    parser.add_argument(
        "--generator",
        choices=("auto", "oha", "aiohttp"),
        default="auto",
        help="auto: oha when Rust's cargo can build it, else aiohttp in this process",
    )
    args = parser.parse_args()
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0:
        parser.error("--rate and --duration must be positive, --warmup 0 or more")
    result = uvloop.run(
        bench(
            args.rate,
            args.duration,
            concurrency=args.concurrency,
            drain_s=args.drain,
            generator=args.generator,
            warmup_s=args.warmup,
        )
    )
    print(summary(result))


if __name__ == "__main__":
    main()
