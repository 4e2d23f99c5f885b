"""Smoke tests proving the local stack is real: broker, consumer groups, migrations, CLI."""

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.engine import make_url

from prequal_devstack.config import StackConfig
from prequal_devstack.errors import StackError
from prequal_devstack.kafka import Kafka, ensure_topics
from prequal_devstack.postgres import Postgres
from prequal_devstack.procs import (
    LOG_ROTATE_BYTES,
    identity,
    kill,
    read_pid,
    spawn,
    wait_until,
)
from prequal_devstack.services import SPECS, Service
from prequal_devstack.stack import Stack
from prequal_devstack.testing import StackInfo, TopicFactory, poll_until, produce, run_devstack

ROOT = Path(__file__).resolve().parents[3]


async def test_a_consumer_group_resumes_after_its_manual_commit(
    stack: StackInfo, topics: TopicFactory
) -> None:
    topic = await topics.create("smoke")
    group = f"smoke-{uuid.uuid4().hex[:8]}"
    await produce(
        stack.kafka_bootstrap_servers, topic, *[(None, f"m{i}".encode(), []) for i in range(3)]
    )

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=stack.kafka_bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )

    first = consumer()
    await first.start()
    seen: list[bytes] = []
    try:
        while len(seen) < 3:
            for records in (await first.getmany(timeout_ms=1000)).values():
                seen.extend(r.value for r in records)
        await first.commit({TopicPartition(topic, 0): 2})  # handled m0 and m1 only
    finally:
        await first.stop()
    assert seen == [b"m0", b"m1", b"m2"]

    second = consumer()
    await second.start()
    resumed: list[bytes] = []
    try:
        async with asyncio.timeout(30):
            while not resumed:
                for records in (await second.getmany(timeout_ms=1000)).values():
                    resumed.extend(r.value for r in records)
    finally:
        await second.stop()
    assert resumed == [b"m2"]


def alembic(database_url: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), *args],
        env={**os.environ, "DATABASE_URL": database_url},
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


@contextlib.asynccontextmanager
async def scratch_database(stack: StackInfo) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """A throw-away database on the stack's server: its name, URL and asyncpg connect kwargs."""
    url = make_url(stack.database_url)
    name = f"migtest_{uuid.uuid4().hex[:8]}"
    server = {"host": url.host, "port": url.port, "user": url.username, "password": url.password}
    admin = await asyncpg.connect(database=url.database, **server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name, url.set(database=name).render_as_string(hide_password=False), server
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.mark.parametrize(
    ("before", "rows", "index", "table"),
    [
        (
            "0002",
            "INSERT INTO outbox (event_id, topic, message_key, payload, headers) VALUES"
            " (gen_random_uuid(), 't', 'k', 'p', '{}'), (gen_random_uuid(), 't', 'k', 'p', '{}')",
            "ix_outbox_published",
            "outbox (topic)",
        ),
        (
            "0003",
            "INSERT INTO processed_events (consumer, event_id) VALUES"
            " ('c', gen_random_uuid()), ('c', gen_random_uuid())",
            "ix_processed_events_consumer_processed_at",
            "processed_events (consumer)",
        ),
    ],
)
async def test_a_migration_whose_concurrent_index_build_failed_can_be_run_again(
    stack: StackInfo, before: str, rows: str, index: str, table: str
) -> None:
    """A `CREATE INDEX CONCURRENTLY` that fails (cancelled, a deadlock, a unique violation)
    leaves an INVALID index behind under its name, and the migration, run again, stopped at
    "already exists"."""
    async with scratch_database(stack) as (name, scratch_url, server):
        await asyncio.to_thread(alembic, scratch_url, "upgrade", before)
        conn = await asyncpg.connect(database=name, **server)
        try:
            await conn.execute(rows)
            # A build of that name that failed half-way: its index stays, marked invalid.
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {index} ON {table}")
            await asyncio.to_thread(alembic, scratch_url, "upgrade", "head")
            await asyncio.to_thread(alembic, scratch_url, "check")
            valid = await conn.fetch(
                "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE c.relname IN ('ix_outbox_published', 'ix_processed_events_consumer_processed_at')"
            )
        finally:
            await conn.close()
    assert sorted(tuple(row) for row in valid) == [
        ("ix_outbox_published", True),
        ("ix_processed_events_consumer_processed_at", True),
    ]


async def test_migrations_create_the_schema_and_downgrade_removes_it(stack: StackInfo) -> None:
    async with scratch_database(stack) as (name, scratch_url, server):
        await asyncio.to_thread(alembic, scratch_url, "upgrade", "head")
        # The models (what the code queries) and the migrations (what exists) agree: autogenerate
        # finds nothing to add, drop or alter, e.g. an index declared on only one side.
        await asyncio.to_thread(alembic, scratch_url, "check")
        conn = await asyncpg.connect(database=name, **server)
        try:
            tables = {
                r["tablename"]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            }
            assert {
                "applications",
                "outbox",
                "processed_events",
                "decisions",
                "alembic_version",
            } <= tables
            indexes = {
                r["indexname"]
                for r in await conn.fetch(
                    "SELECT indexname FROM pg_indexes WHERE tablename = 'applications'"
                )
            }
            # No index on a column a decision changes (status, cibil_score, updated_at).
            assert indexes == {
                "pk_applications",
                "ix_applications_pan_number",
                "ix_applications_created_at",
            }
            options = await conn.fetchval(
                "SELECT reloptions FROM pg_class WHERE oid = 'applications'::regclass"
            )
            assert options == ["fillfactor=90"]
            app_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO applications (id, pan_number, monthly_income_inr, loan_amount_inr) VALUES ($1, 'ABCDE1234F', 1, 1)",
                app_id,
            )
            before = await conn.fetchrow(
                "SELECT status, created_at, updated_at FROM applications WHERE id = $1", app_id
            )
            assert before["status"] == "PENDING"
            async with conn.transaction():
                await conn.execute(
                    "UPDATE applications SET status = 'REJECTED', cibil_score = 610 WHERE id = $1",
                    app_id,
                )
                # A decision is a HOT update: the new row version stays on its page, and no
                # index gets a new entry.
                hot = await conn.fetchval(
                    "SELECT n_tup_hot_upd FROM pg_stat_xact_user_tables"
                    " WHERE relid = 'applications'::regclass"
                )
            assert hot == 1
            after = await conn.fetchval("SELECT updated_at FROM applications WHERE id = $1", app_id)
            assert after > before["updated_at"]  # kept by the trigger
            for bad in (
                "UPDATE applications SET status = 'MAYBE' WHERE id = $1",
                "UPDATE applications SET cibil_score = 901 WHERE id = $1",
                "UPDATE applications SET monthly_income_inr = 0 WHERE id = $1",
                "UPDATE applications SET loan_type = 'YACHT' WHERE id = $1",
            ):
                try:
                    await conn.execute(bad, app_id)
                except asyncpg.CheckViolationError:
                    continue
                raise AssertionError(f"accepted: {bad}")
            # 0006's downgrade puts the status index and the default fillfactor back.
            await asyncio.to_thread(alembic, scratch_url, "downgrade", "0005")
            before_0006 = await conn.fetchrow(
                "SELECT c.reloptions, to_regclass('ix_applications_status') IS NOT NULL AS indexed"
                " FROM pg_class c WHERE c.oid = 'applications'::regclass"
            )
            assert (before_0006["reloptions"], before_0006["indexed"]) == (None, True)
        finally:
            await conn.close()

        await asyncio.to_thread(alembic, scratch_url, "downgrade", "base")
        conn = await asyncpg.connect(database=name, **server)
        try:
            left = {
                r["tablename"]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            }
            functions = await conn.fetchval(
                "SELECT count(*) FROM pg_proc WHERE proname = 'set_updated_at'"
            )
        finally:
            await conn.close()
        assert left == {"alembic_version"}
        assert functions == 0


async def test_killing_kafka_and_starting_it_again_loses_nothing(owned_stack: StackInfo) -> None:
    await asyncio.to_thread(run_devstack, "kill", "kafka")
    status = await asyncio.to_thread(run_devstack, "status")
    assert any(line.startswith("kafka") and "stopped" in line for line in status.splitlines())

    async with httpx.AsyncClient(base_url=owned_stack.api_url, timeout=10) as api:
        # Accepted while the broker is down: the outbox keeps the event until it is back.
        created = await api.post(
            "/applications",
            json={
                "pan_number": "ABCDE1234F",
                "monthly_income_inr": "90000",
                "loan_amount_inr": "100000",
            },
        )
        assert created.status_code == 202
        await asyncio.to_thread(run_devstack, "start", "kafka")
        status = await asyncio.to_thread(run_devstack, "status")
        assert any(
            line.startswith("kafka") and "running" in line and line.endswith("ok")
            for line in status.splitlines()
        )

        application_id = created.json()["application_id"]

        async def decided() -> str | None:
            body = (await api.get(f"/applications/{application_id}/status")).json()
            return None if body["status"] == "PENDING" else str(body["status"])

        assert await poll_until(decided, timeout_s=90, interval_s=0.5) == "PRE_APPROVED"


def test_env_prints_the_connection_settings(stack: StackInfo) -> None:
    lines = dict(line.split("=", 1) for line in run_devstack("env").splitlines())
    assert lines["DATABASE_URL"] == stack.database_url
    assert lines["KAFKA_BOOTSTRAP_SERVERS"] == stack.kafka_bootstrap_servers
    assert lines["PREQUAL_API_URL"] == "http://127.0.0.1:8000"


def test_a_stale_pid_file_is_cleaned_up(stack: StackInfo) -> None:
    run = stack.stack.config.state / "run"
    stale = run / "credit-service-7.pid"
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: no process has this pid now
    stale.write_text(f"{gone.pid}\n")
    status = run_devstack("status")
    assert "credit-service-7" in status
    assert not stale.exists()


@pytest.mark.parametrize("who", ["an earlier boot", "earlier in this boot"])
def test_a_pid_file_naming_a_process_that_reused_the_pid_is_stale(tmp_path: Path, who: str) -> None:
    """After a reboot, or once pids wrap around, another process may have the pid."""
    pid_file = tmp_path / "svc.pid"
    with subprocess.Popen(["sleep", "30"]) as other:
        try:
            boot, ticks = str(identity(other.pid)).split(":")
            ours = f"{uuid.uuid4()}:{ticks}" if who == "an earlier boot" else f"{boot}:1"
            pid_file.write_text(f"{other.pid} {ours}\n")
            assert read_pid(pid_file) is None
            assert not pid_file.exists()

            pid_file.write_text(f"{other.pid} {boot}:{ticks}\n")
            assert read_pid(pid_file) == other.pid
        finally:
            other.kill()


def test_postgres_is_not_taken_for_a_process_that_reused_its_pid(
    stack: StackInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A postmaster.pid left from before a reboot, its pid now another program's: `up`
    skipped starting PostgreSQL and `down` signalled that program."""
    running = stack.stack.postgres.pid()
    assert running is not None  # the stack's own, working in its data directory
    monkeypatch.setenv("DEVSTACK_STATE_DIR", str(tmp_path))
    left_over = Postgres(StackConfig())
    left_over.data.mkdir(parents=True)
    with subprocess.Popen(["sleep", "30"], cwd=tmp_path) as other:
        try:
            # As PostgreSQL writes it: pid, data directory, start time (here the other's).
            started = int(psutil.Process(other.pid).create_time())
            (left_over.data / "postmaster.pid").write_text(
                f"{other.pid}\n{left_over.data}\n{started}\n"
            )
            assert left_over.pid() is None
        finally:
            other.kill()


@pytest.mark.parametrize("second_field", ["", "1795876561.57", "None"])
def test_a_pid_file_without_an_identity_is_read_by_its_pid(
    tmp_path: Path, second_field: str
) -> None:
    """Pid files written before identities (a pid alone, or the start times and "None"
    that an earlier version wrote) still name their running process."""
    pid_file = tmp_path / "svc.pid"
    with subprocess.Popen(["sleep", "30"]) as running:
        try:
            pid_file.write_text(f"{running.pid} {second_field}".rstrip() + "\n")
            assert read_pid(pid_file) == running.pid
        finally:
            running.kill()


def test_spawn_records_the_identity_that_read_pid_checks(tmp_path: Path) -> None:
    pid_file = tmp_path / "svc.pid"
    pid = spawn(["sleep", "30"], log_file=tmp_path / "svc.log", pid_file=pid_file)
    try:
        assert pid_file.read_text().split() == [str(pid), identity(pid)]
        assert read_pid(pid_file) == pid
    finally:
        kill(pid)


@pytest.mark.parametrize(
    ("partitions", "name", "refusal"),
    [
        (0, "prequal-test-no-partitions", "InvalidPartitionsError"),
        (1, "bad name!", "InvalidTopicError"),
    ],
)
async def test_a_topic_kafka_refuses_to_create_stops_up(
    stack: StackInfo, partitions: int, name: str, refusal: str
) -> None:
    topic = f"{name}-{uuid.uuid4().hex[:6]}"
    with pytest.raises(
        StackError, match=f"did not create the topics: {re.escape(topic)}: {refusal}"
    ):
        await ensure_topics(stack.kafka_bootstrap_servers, partitions=partitions, topics=(topic,))


def test_up_with_an_outside_kafka_ignores_a_stale_pid_file(
    stack: StackInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pid file left by a broker this folder once ran (say, before a reboot) must not fail
    `up` when KAFKA_BOOTSTRAP_SERVERS names another broker."""
    monkeypatch.setenv("DEVSTACK_STATE_DIR", str(tmp_path))
    config = StackConfig(  # the same servers, named otherwise: "outside" this stack's folder
        external_database_url=stack.database_url.replace("127.0.0.1", "localhost"),
        external_kafka=stack.kafka_bootstrap_servers.replace("127.0.0.1", "localhost"),
    )
    assert config.uses_external_kafka
    assert config.uses_external_postgres
    pid_file = Kafka(config).pid_file
    pid_file.parent.mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: no process has this pid now
    pid_file.write_text(f"{gone.pid}\n")

    Stack(config).up_infra()  # raised "Kafka exited during start-up"


def test_a_large_log_is_set_aside_when_its_process_starts(tmp_path: Path) -> None:
    log_file, pid_file = tmp_path / "svc.log", tmp_path / "svc.pid"
    with log_file.open("wb") as log:
        log.truncate(LOG_ROTATE_BYTES + 1)  # sparse: no disk space used
    spawn(["echo", "second start"], log_file=log_file, pid_file=pid_file)
    assert wait_until(lambda: log_file.read_text() == "second start\n", timeout_s=10)
    assert (tmp_path / "svc.log.1").stat().st_size == LOG_ROTATE_BYTES + 1

    # A small one is appended to.
    spawn(["echo", "third start"], log_file=log_file, pid_file=pid_file)
    assert wait_until(lambda: log_file.read_text() == "second start\nthird start\n", timeout_s=10)


def test_a_service_started_on_another_interpreter_is_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scripts/sync-venv makes the venv again on the system's interpreter: the services left
    running on the old one would have been kept, their path (.venv/bin/python) unchanged."""
    monkeypatch.setenv("DEVSTACK_STATE_DIR", str(tmp_path))
    service = Service(StackConfig(), SPECS["credit-service"])
    service.fingerprint_file.parent.mkdir(parents=True)
    service.fingerprint_file.write_text(service.started_with())
    assert service.stale() is None

    other = tmp_path / "python3.11"
    other.symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(other))
    assert service.stale() is None  # the same interpreter by another path

    another = tmp_path / "another" / "python3.11"
    another.parent.mkdir()
    another.write_bytes(b"")  # only its path is read
    monkeypatch.setattr(sys, "executable", str(another))
    assert service.stale() == "its code, dependencies or interpreter changed"


def test_a_service_started_against_other_servers_is_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`PREQUAL_TEST_BACKEND=testcontainers` points the tests at containers: services left
    running against the local servers were kept, so the tests read servers the services
    never wrote to."""
    monkeypatch.setenv("DEVSTACK_STATE_DIR", str(tmp_path))
    local = Service(StackConfig(), SPECS["credit-service"])
    local.fingerprint_file.parent.mkdir(parents=True)
    local.fingerprint_file.write_text(local.started_with())
    assert local.stale() is None

    containers = Service(
        StackConfig(
            external_database_url="postgresql+asyncpg://test:test@127.0.0.1:32768/test",
            external_kafka="127.0.0.1:32769",
        ),
        SPECS["credit-service"],
    )
    assert containers.stale() == "its PostgreSQL or Kafka changed"
    assert "test:test" not in containers.started_with()  # no password written to disk
