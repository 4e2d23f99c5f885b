"""The engine every service uses, on the real database."""

import asyncio
import time

import asyncpg
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError

from prequal_devstack.testing import StackInfo, fetch_application, insert_application
from prequal_shared.config import CommonSettings
from prequal_shared.db import (
    create_engine,
    create_session_factory,
    driver_connection,
    driver_connection_of,
)
from prequal_shared.errors import TransientError, is_transient


async def test_database_errors_do_not_carry_the_statement_values(stack: StackInfo) -> None:
    """Errors are logged, and a failed batch insert listed every applicant's name and PAN.
    (What PostgreSQL itself quotes in a message, e.g. the value that broke a cast, stays.)"""
    engine = create_engine(
        CommonSettings(database_url=stack.database_url), application_name="test-db"
    )
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError) as caught:
                await conn.execute(
                    text("SELECT CAST(:v AS text) WHERE 1 / 0 = 1"), {"v": "Asha Rao ABCDE1234F"}
                )
    finally:
        await engine.dispose()
    assert "division by zero" in str(caught.value)
    assert "1 / 0" in str(caught.value)  # the statement is still named
    assert "Asha Rao" not in str(caught.value)
    assert "ABCDE1234F" not in str(caught.value)


async def test_errors_on_the_driver_connection_do_not_carry_the_statement_values(
    stack: StackInfo,
) -> None:
    """The hot statements run on asyncpg's connection, where SQLAlchemy's hide_parameters
    does not reach: asyncpg must not quote the values either."""
    engine = create_engine(
        CommonSettings(database_url=stack.database_url), application_name="test-db"
    )
    try:
        async with driver_connection(engine) as conn:
            with pytest.raises(asyncpg.PostgresError) as caught:
                await conn.fetch("SELECT $1::text WHERE 1 / 0 = 1", "Asha Rao ABCDE1234F")
    finally:
        await engine.dispose()
    shown = f"{caught.value} {caught.value!r}"
    assert "division by zero" in shown
    assert "Asha Rao" not in shown
    assert "ABCDE1234F" not in shown


@pytest.mark.parametrize(
    ("case", "user", "database", "statement", "transient"),
    [
        # Faults of the database's set-up: every message would fail the same way until an
        # operator or a migration fixes it, so they must pause the consumer, not fill the DLQ.
        ("unknown role", "nobody_here", None, "SELECT 1", True),
        ("unknown database", None, "no_such_db", "SELECT 1", True),
        ("missing table", None, None, "SELECT id FROM no_such_table", True),
        ("missing column", None, None, "SELECT no_such_column FROM applications", True),
        # Faults of the statement or its values: the same every time, whatever the database.
        ("division by zero", None, None, "SELECT 1 / 0", False),
        ("bad argument", None, None, "SELECT CAST(:v AS integer) + 1", False),
    ],
)
async def test_database_faults_are_classed_by_what_fixes_them(
    stack: StackInfo,
    case: str,
    user: str | None,
    database: str | None,
    statement: str,
    transient: bool,
) -> None:
    url = make_url(stack.database_url)
    url = url.set(username=user or url.username, database=database or url.database)
    engine = create_engine(
        CommonSettings(database_url=url.render_as_string(hide_password=False)),
        application_name="test-db",
    )
    try:
        with pytest.raises(DBAPIError) as caught:
            async with engine.connect() as conn:
                # asyncpg types the parameter from the statement and refuses "x" itself.
                await conn.execute(text(statement), {"v": "x"} if ":v" in statement else {})
        # The same on asyncpg's connection, where the hot statements run: its errors arrive
        # unwrapped (a failed connect is still SQLAlchemy's, the pool's).
        with pytest.raises(Exception) as raw:  # noqa: PT011 - whatever the driver raises
            async with driver_connection(engine) as driver:
                await driver.execute(
                    statement.replace(":v", "$1"), *(["x"] if ":v" in statement else [])
                )
    finally:
        await engine.dispose()
    assert is_transient(caught.value) is transient, case
    assert is_transient(raw.value) is transient, case


async def test_a_transaction_whose_client_went_quiet_releases_its_locks(stack: StackInfo) -> None:
    """A process that dies (or loses its link) mid-transaction leaves its session idle on the
    server, holding its row locks: until TCP keepalive gave up, about two hours, everyone who
    needed those rows waited, and their statements timed out."""
    quiet = create_engine(
        CommonSettings(database_url=stack.database_url, db_idle_in_transaction_timeout_s=1),
        application_name="test-db-quiet",
    )
    other = create_engine(
        CommonSettings(database_url=stack.database_url), application_name="test-db-other"
    )
    lock_row = text("UPDATE applications SET status = 'MANUAL_REVIEW' WHERE id = :id")
    try:
        application_id = await insert_application(other)
        async with quiet.connect() as abandoned:
            await abandoned.begin()
            await abandoned.execute(lock_row, {"id": application_id})
            # From here it sends nothing more, as if its host had died.
            started = time.monotonic()
            async with other.begin() as conn:
                await conn.execute(
                    text("UPDATE applications SET cibil_score = 700 WHERE id = :id"),
                    {"id": application_id},
                )
            waited = time.monotonic() - started
            await asyncio.sleep(0.1)
            with pytest.raises(DBAPIError) as ended:
                await abandoned.execute(text("SELECT 1"))
            assert is_transient(ended.value)
        row = await fetch_application(other, application_id)
    finally:
        await quiet.dispose()
        await other.dispose()
    assert 0.5 < waited < 3  # the server ended the quiet session after 1 s; no statement timeout
    assert (row.status, row.cibil_score) == ("PENDING", 700)  # its update was rolled back


@pytest.mark.parametrize(("wait_for_flush", "setting"), [(True, "on"), (False, "off")])
async def test_only_engines_asked_to_commit_without_waiting_for_the_disk(
    stack: StackInfo, wait_for_flush: bool, setting: str
) -> None:
    engine = create_engine(
        CommonSettings(database_url=stack.database_url),
        application_name="test-db",
        wait_for_flush=wait_for_flush,
    )
    try:
        async with engine.connect() as conn:
            shown = await conn.scalar(text("SHOW synchronous_commit"))
    finally:
        await engine.dispose()
    assert shown == setting


async def test_the_driver_connection_of_a_session_works_in_its_transaction(
    stack: StackInfo,
) -> None:
    """The outbox sweep deletes on asyncpg's connection inside its session's transaction: a
    rollback must take the deletion back with the rest."""
    engine = create_engine(
        CommonSettings(database_url=stack.database_url), application_name="test-db"
    )
    application_id = await insert_application(engine)
    try:
        async with create_session_factory(engine)() as session:
            await session.execute(text("SELECT 1"))  # the session's transaction has begun
            driver = await driver_connection_of(session)
            await driver.execute("DELETE FROM applications WHERE id = $1", application_id)
            assert (
                await driver.fetchval(
                    "SELECT count(*) FROM applications WHERE id = $1", application_id
                )
                == 0
            )
            await session.rollback()
        row = await fetch_application(engine, application_id)
    finally:
        await engine.dispose()
    assert row.status == "PENDING"


async def test_a_driver_connection_left_in_a_transaction_fails_and_is_not_pooled_again(
    stack: StackInfo,
) -> None:
    """Its work is not committed: the block must not pass for a success, and the pool's next
    user must not find itself in that transaction."""
    engine = create_engine(
        CommonSettings(database_url=stack.database_url),
        application_name="test-db",
        pool_size=1,
    )
    try:
        with pytest.raises(TransientError):  # noqa: PT012 - the block's exit raises
            async with driver_connection(engine) as conn:
                await conn.execute("BEGIN")  # and no COMMIT or ROLLBACK
                first = conn.get_server_pid()
        async with driver_connection(engine) as conn:
            in_transaction = conn.is_in_transaction()
            second = conn.get_server_pid()
    finally:
        await engine.dispose()
    assert not in_transaction
    assert second != first  # the pool's only connection was replaced


async def test_a_driver_connection_interrupted_mid_statement_is_not_pooled_again(
    stack: StackInfo,
) -> None:
    """Cancelled while the server runs a transaction the client began: pooled again, the
    connection would hand its next user an aborted transaction (or, had the transaction not
    failed, run the next user's statements in it, to be rolled back unseen)."""
    engine = create_engine(
        CommonSettings(database_url=stack.database_url),
        application_name="test-db",
        pool_size=1,
    )
    pids: list[int] = []

    async def interrupted() -> None:
        async with driver_connection(engine) as conn:
            pids.append(conn.get_server_pid())
            await conn.execute("BEGIN; SELECT pg_sleep(10)")

    try:
        task = asyncio.create_task(interrupted())
        await asyncio.sleep(0.5)  # the server is in the sleep, inside the transaction
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with driver_connection(engine) as conn:
            answer = await conn.fetchval("SELECT 1")
            pids.append(conn.get_server_pid())
    finally:
        await engine.dispose()
    assert answer == 1
    assert pids[1] != pids[0]
