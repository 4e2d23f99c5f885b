"""The API as its own process (`python -m prequal_api`): idle connections, worker processes."""

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from prequal_devstack.testing import StackInfo, free_port, poll_until

REQUEST = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"


async def idle_time_until_closed(port: int, *, give_up_s: float) -> float:
    """Send one request on a new connection, then measure how long the idle connection lasts."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(REQUEST)
        await reader.readuntil(b'{"status":"ok"}')
        answered = time.monotonic()
        try:
            async with asyncio.timeout(give_up_s):
                assert await reader.read() == b""  # EOF: the server closed it
        except TimeoutError:
            return give_up_s
        return time.monotonic() - answered
    finally:
        writer.close()


async def test_idle_keep_alive_connections_stay_open_as_configured(
    stack: StackInfo, service_process: Any
) -> None:
    ports = {}
    for keep_alive_s in (1, 7):
        port = free_port()
        process = service_process(
            "prequal_api",
            {
                "API_PORT": str(port),
                "API_KEEP_ALIVE_S": str(keep_alive_s),
                "DATABASE_URL": stack.database_url,
                "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
            },
        )
        await process.wait_for_log("Uvicorn running on")
        ports[keep_alive_s] = port

    short, long = await asyncio.gather(
        idle_time_until_closed(ports[1], give_up_s=20),
        idle_time_until_closed(ports[7], give_up_s=20),
    )
    # Lower bounds are what matters; the upper ones leave room for a busy machine.
    assert 0.5 < short < 5
    # Longer than uvicorn's default of 5 s, which reset connections clients were reusing.
    assert 6 < long < 15


def only_folder(parent: Path, pattern: str) -> Path:
    [found] = parent.glob(pattern)
    return found


def counted_by_each_worker(metrics_dir: Path) -> list[float]:
    """Per worker process, the invalid POSTs it counted (each writes its own counter file)."""
    counts = []
    for path in sorted(metrics_dir.glob("counter_*.db")):
        with tempfile.TemporaryDirectory() as alone:
            shutil.copy(path, alone)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)  # type: ignore[no-untyped-call]
            counts.append(invalid_posts(generate_latest(registry).decode()))
    return counts


def invalid_posts(metrics_text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "http_requests_total"
        and sample.labels.get("handler") == "/applications"
        and sample.labels.get("status") == "422"
    )


async def test_worker_processes_report_their_metrics_together(
    stack: StackInfo, service_process: Any, tmp_path: Path
) -> None:
    """With API_WORKERS > 1 each request is counted by the worker that took it, and a scrape,
    whichever worker answers it, reports them all (prometheus_client's multiprocess mode)."""
    port = free_port()
    process = service_process(
        "prequal_api",
        {
            "API_PORT": str(port),
            "API_WORKERS": "2",
            "TMPDIR": str(tmp_path),  # where it makes the workers' metrics folder
            "DATABASE_URL": stack.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
        },
    )

    async def both_workers_started() -> bool:
        return bool(process.log_text().count('"event": "started"') >= 2)

    assert await poll_until(both_workers_started)
    metrics_dir = only_folder(tmp_path, "prequal-api-metrics-*")
    # No keep-alive: every request on a new connection, which either worker may accept. Sent
    # until both workers have taken some, or the test would not show that they are summed.
    limits = httpx.Limits(max_keepalive_connections=0)
    sent = 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:
        while sent < 200 and len([n for n in counted_by_each_worker(metrics_dir) if n]) < 2:
            for _ in range(20):
                invalid = await client.post("/applications", json={"pan_number": "nope"})
                assert invalid.status_code == 422
                sent += 1

        async def scrape() -> float:
            return invalid_posts((await client.get("/metrics")).text)

        async def all_counted() -> bool:
            return await scrape() == sent

        # A request is counted just after its response is sent: wait for the last one.
        assert await poll_until(all_counted)
        scraped = [await scrape() for _ in range(6)]

    per_worker = counted_by_each_worker(metrics_dir)
    assert len([n for n in per_worker if n]) == 2, per_worker
    assert sum(per_worker) == sent
    assert scraped == [sent] * 6
    assert process.terminate() == 0
    assert not metrics_dir.exists()  # removed when the API stops
