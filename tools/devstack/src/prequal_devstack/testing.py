"""pytest fixtures shared by every test folder: where the servers are, and helpers to use them.

By default the session brings the local stack up (`scripts/devstack up`), or uses
DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS when they point at running servers. With
PREQUAL_TEST_BACKEND=testcontainers it starts PostgreSQL and Kafka containers instead (needs a
Docker engine; untested on the build machines, which have none). Everything after "where are
the servers" (topics, migrations, the three services) is the same code path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.structs import ConsumerRecord
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from prequal_api.main import create_app
from prequal_api.settings import ApiSettings
from prequal_devstack import procs
from prequal_devstack.config import StackConfig
from prequal_devstack.stack import Stack
from prequal_shared.events import (
    ApplicationSubmitted,
    ApplicationSubmittedEvent,
    CreditReportGenerated,
    CreditReportGeneratedEvent,
    Envelope,
    encode,
    headers_for,
    new_event_fields,
)
from prequal_shared.kafka import assign_whole_topic
from prequal_shared.models import Application


@dataclass(frozen=True)
class StackInfo:
    stack: Stack
    database_url: str
    kafka_bootstrap_servers: str
    api_url: str

    @property
    def owns_postgres(self) -> bool:
        return not self.stack.config.uses_external_postgres

    @property
    def owns_kafka(self) -> bool:
        return not self.stack.config.uses_external_kafka


@contextlib.contextmanager
def _testcontainers() -> Iterator[None]:
    from testcontainers.kafka import KafkaContainer  # noqa: PLC0415 - only with a Docker engine
    from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

    with (
        PostgresContainer("postgres:16", driver="asyncpg") as postgres,
        KafkaContainer("apache/kafka:3.9.1").with_kraft() as kafka,
    ):
        os.environ["DATABASE_URL"] = postgres.get_connection_url()
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = kafka.get_bootstrap_server()
        yield


@pytest.fixture(scope="session")
def stack() -> Iterator[StackInfo]:
    with contextlib.ExitStack() as resources:
        if os.environ.get("PREQUAL_TEST_BACKEND", "devstack") == "testcontainers":
            resources.enter_context(_testcontainers())
        running = Stack(StackConfig())
        running.up()
        cfg = running.config
        yield StackInfo(
            stack=running,
            database_url=cfg.database_url,
            kafka_bootstrap_servers=cfg.kafka_bootstrap_servers,
            api_url=cfg.api_url,
        )


@pytest.fixture
def owned_stack(stack: StackInfo) -> StackInfo:
    """For fault tests: the stack's own PostgreSQL and Kafka, which the test may stop."""
    if not (stack.owns_postgres and stack.owns_kafka):
        pytest.fail("fault tests need the devstack's own PostgreSQL and Kafka (unset DATABASE_URL)")
    return stack


@pytest.fixture
async def engine(stack: StackInfo) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(stack.database_url, pool_size=2, pool_pre_ping=True)
    yield engine
    await engine.dispose()


@pytest.fixture
async def api(stack: StackInfo) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as client:
        yield client


@contextlib.asynccontextmanager
async def in_process_api(stack: StackInfo) -> AsyncIterator[httpx.AsyncClient]:
    """The API in-process (lifespan included) on the stack's database and broker."""
    app = create_app(
        ApiSettings(
            database_url=stack.database_url,
            kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
            log_format="console",
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api") as client,
    ):
        # Until its relay has reached Kafka, the API leaves new events to the sweep, 5 to 7 s
        # later: a test's first POST would wait for that.
        async def ready() -> bool:
            return (await client.get("/health/ready")).status_code == 200

        if not await poll_until(ready, timeout_s=60, interval_s=0.05):
            msg = "the in-process API was not ready within 60 s"
            raise AssertionError(msg)
        yield client


@pytest.fixture
async def api_client(stack: StackInfo) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_api(stack) as client:
        yield client


@pytest.fixture
async def topics(stack: StackInfo) -> AsyncIterator[TopicFactory]:
    factory = TopicFactory(stack.kafka_bootstrap_servers)
    yield factory
    await factory.delete_all()


class TopicFactory:
    """Makes throw-away topics so a test's messages cannot mix with anyone else's."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.created: list[str] = []

    async def create(self, prefix: str, *, partitions: int = 1, name: str | None = None) -> str:
        """A topic named after `prefix` and a random suffix, or `name`."""
        name = name or f"test.{prefix}.{uuid.uuid4().hex[:10]}"
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(name, num_partitions=partitions, replication_factor=1)]
            )
        finally:
            await admin.close()
        self.created.append(name)
        return name

    async def delete(self, name: str) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([name])
        finally:
            await admin.close()

    async def delete_all(self) -> None:
        if not self.created:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        with contextlib.suppress(Exception):
            await admin.start()
            await admin.delete_topics(self.created)
        await admin.close()


async def produce(
    bootstrap: str,
    topic: str,
    *messages: tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes | None]]],
    partition: int | None = None,
    compression_type: str | None = None,
) -> None:
    """Send the messages one by one, each acknowledged before the next (so in this order)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        compression_type=compression_type,
    )
    await producer.start()
    try:
        for key, value, headers in messages:
            await producer.send_and_wait(
                topic, value=value, key=key, headers=list(headers), partition=partition
            )
    finally:
        await producer.stop()


def run_dlq_cli(
    stack: StackInfo, *args: str, dlq_topic: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`prequal-dlq ARGS` against the stack, in its own process, as an operator runs it."""
    env = {
        **os.environ,
        "DATABASE_URL": stack.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
    }
    if dlq_topic is not None:
        env["TOPIC_DLQ"] = dlq_topic
    return subprocess.run(
        [sys.executable, "-m", "prequal_shared.dlq_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
    )


async def delete_records(bootstrap: str, topic: str, partition: int, *, before: int) -> None:
    """What an operator does with `kafka-delete-records.sh`: the partition now starts at
    offset `before`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records(
            {TopicPartition(topic, partition): RecordsToDelete(before_offset=before)}
        )
    finally:
        await admin.close()


async def topic_ends(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    """Where each partition of `topic` ends now: for `read_topic(start=...)`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = await assign_whole_topic(consumer, topic)
        if not partitions:
            msg = f"kafka has no partitions of {topic}"
            raise AssertionError(msg)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        return ends
    finally:
        await consumer.stop()


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    count: int,
    timeout_s: float = 30,
    match: Any = None,
    start: dict[TopicPartition, int] | None = None,
) -> list[Any]:
    """Read a topic until `count` records (that satisfy `match`) arrived: from the beginning,
    or from `start` (see `topic_ends`), which spares reading what earlier runs wrote."""
    consumer = AIOKafkaConsumer(
        *(() if start is not None else (topic,)),
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    if start is not None:
        consumer.assign(list(start))
        for partition, offset in start.items():
            consumer.seek(partition, offset)
    found: list[Any] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(found) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    found.extend(r for r in records if match is None or match(r))
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return found


async def poll_until(check: Any, *, timeout_s: float = 30, interval_s: float = 0.1) -> Any:
    """Await `check()` until it returns something truthy; returns it (or the last falsy value)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() >= deadline:
            return result
        await asyncio.sleep(interval_s)


async def start_and_wait_for_the_pipeline(stack: StackInfo, component: str) -> None:
    """After a test that stopped PostgreSQL or Kafka: start it, then wait until an application
    goes through the stack's own API and consumers again (their groups rejoin after a broker
    restart; the decision service's circuit may have opened), so that the tests after it find
    the pipeline working."""
    await asyncio.to_thread(stack.stack.start, component)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as api:
        created = await api.post(
            "/applications",
            json={"pan_number": "ABCDE1234F", "monthly_income_inr": "1", "loan_amount_inr": "1"},
        )
        created.raise_for_status()
        status_url = f"/applications/{created.json()['application_id']}/status"

        async def decided() -> bool:
            return bool((await api.get(status_url)).json()["status"] != "PENDING")

        if not await poll_until(decided, timeout_s=90, interval_s=0.5):
            msg = f"the pipeline did not decide an application within 90 s of {component}'s restart"
            raise AssertionError(msg)


class ServiceProcess:
    """One service started as its own process for a test (own topics, group, ports)."""

    def __init__(self, module: str, env: dict[str, str], log_path: Any) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**os.environ, "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own process group, so that close() also stops what it started (uvicorn's
            # workers outlived a killed supervisor, relaying outbox rows of later tests).
            start_new_session=True,
        )

    def log_text(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    async def wait_for_log(self, needle: str, *, timeout_s: float = 30) -> None:
        async def seen() -> bool:
            return needle in self.log_text() or self.process.poll() is not None

        await poll_until(seen, timeout_s=timeout_s)
        assert needle in self.log_text(), f"{needle!r} not logged:\n{self.log_text()[-3000:]}"

    def terminate(self, *, timeout_s: float = 30) -> int:
        self.process.terminate()
        code = self.process.wait(timeout=timeout_s)
        self._log.close()
        return code

    def close(self) -> None:
        procs.kill(self.process.pid, group=True)
        self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def service_process(tmp_path: Any) -> Iterator[Any]:
    """Start a service module in its own process: `service_process("credit_service", {...})`."""
    started: list[ServiceProcess] = []

    def start(module: str, env: dict[str, str]) -> ServiceProcess:
        process = ServiceProcess(module, env, tmp_path / f"{module}-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def run_devstack(*args: str) -> str:
    """Run `scripts/devstack` as a user would (for fault tests); returns what it printed."""
    root = StackConfig().root
    result = subprocess.run(
        [str(root / "scripts" / "devstack"), *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        timeout=180,
    )
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def insert_application(engine: AsyncEngine, **overrides: Any) -> uuid.UUID:
    """Factory: a PENDING application row, as the API would store it."""
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "pan_number": "ABCDE1234F",
        "applicant_name": "Test Applicant",
        "monthly_income_inr": Decimal("50000"),
        "loan_amount_inr": Decimal("200000"),
        "loan_type": "PERSONAL",
        "status": "PENDING",
    } | overrides
    async with engine.begin() as conn:
        await conn.execute(insert(Application).values(**values))
    application_id: uuid.UUID = values["id"]
    return application_id


async def count_pending(engine: AsyncEngine, application_ids: list[str]) -> int:
    """How many of these applications are still PENDING."""
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count())
            .select_from(Application)
            .where(Application.id.in_(application_ids), Application.status == "PENDING")
        )
    return int(count or 0)


async def fetch_application(engine: AsyncEngine, application_id: uuid.UUID) -> Any:
    async with engine.connect() as conn:
        return (
            await conn.execute(select(Application).where(Application.id == application_id))
        ).first()


# -- event factories ---------------------------------------------------------------------


def report_event(
    application_id: uuid.UUID, score: int = 790, **payload: Any
) -> CreditReportGeneratedEvent:
    fields = {
        "application_id": application_id,
        "cibil_score": score,
        "monthly_income_inr": Decimal("50000"),
        "loan_amount_inr": Decimal("200000"),
        "loan_type": "HOME",
    } | payload
    return CreditReportGeneratedEvent(
        payload=CreditReportGenerated.model_validate(fields),
        **new_event_fields(correlation_id=f"corr-{uuid.uuid4().hex[:6]}"),
    )


def as_message(event: Envelope[Any]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return str(event.payload.application_id).encode(), encode(event), headers_for(event)


def as_record(
    event: Envelope[Any], offset: int = 0, topic: str = "credit_reports_generated"
) -> ConsumerRecord[bytes, bytes]:
    key, value, headers = as_message(event)
    return raw_record(key, value, headers, offset=offset, topic=topic)


def raw_record(
    key: bytes,
    value: bytes,
    headers: list[tuple[str, bytes]] | None = None,
    *,
    offset: int = 0,
    topic: str = "credit_reports_generated",
) -> ConsumerRecord[bytes, bytes]:
    """A record as a consumer gets it, of any bytes (say, poison)."""
    return ConsumerRecord(
        topic=topic,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=headers or [],
    )


def application_event(pan: str = "ABCDE1234F", **payload: Any) -> ApplicationSubmittedEvent:
    fields = {
        "application_id": uuid.uuid4(),
        "pan_number": pan,
        "monthly_income_inr": Decimal("50000"),
        "loan_amount_inr": Decimal("200000"),
        "loan_type": "PERSONAL",
    } | payload
    return ApplicationSubmittedEvent(
        payload=ApplicationSubmitted.model_validate(fields),
        **new_event_fields(correlation_id=f"corr-{uuid.uuid4().hex[:6]}"),
    )
