import asyncio

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError
from sqlalchemy import exc as sa_exc

from prequal_shared.errors import (
    PoisonMessageError,
    RetryLaterError,
    TransientError,
    UnknownApplicationError,
    is_transient,
)


def wrapped(inner: BaseException) -> sa_exc.DBAPIError:
    """What SQLAlchemy's asyncpg dialect raises: a DBAPIError around an adapter error."""

    class AdapterError(Exception):
        pass

    adapter = AdapterError(str(inner))
    adapter.__cause__ = inner
    return sa_exc.DBAPIError("SELECT 1", {}, adapter)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError(), True),
        (KafkaConnectionError(), True),
        (TransientError("x"), True),
        (RetryLaterError("open", retry_after=1), True),
        (wrapped(asyncpg.CannotConnectNowError("the database system is shutting down")), True),
        (wrapped(asyncpg.exceptions.AdminShutdownError("terminating connection")), True),
        (wrapped(asyncpg.exceptions.ConnectionDoesNotExistError("closed")), True),
        (sa_exc.OperationalError("SELECT 1", {}, Exception("x")), True),
        (wrapped(asyncpg.exceptions.TooManyConnectionsError("too many clients")), True),
        (wrapped(asyncpg.exceptions.DiskFullError("could not extend file")), True),
        (wrapped(asyncpg.exceptions.OutOfMemoryError("out of memory")), True),
        (wrapped(asyncpg.exceptions.PostgresIOError("could not read block")), True),
        (wrapped(asyncpg.exceptions.LockNotAvailableError("lock timeout")), True),
        (
            wrapped(asyncpg.exceptions.ReadOnlySQLTransactionError("read-only transaction")),
            True,
        ),
        (wrapped(asyncpg.exceptions.InvalidPasswordError("password authentication")), True),
        (wrapped(asyncpg.exceptions.InvalidAuthorizationSpecificationError("no role")), True),
        (wrapped(asyncpg.exceptions.InvalidCatalogNameError("no database")), True),
        (wrapped(asyncpg.exceptions.InsufficientPrivilegeError("permission denied")), True),
        (wrapped(asyncpg.exceptions.UndefinedTableError("no relation")), True),
        (wrapped(asyncpg.exceptions.UndefinedColumnError("no column")), True),
        (wrapped(asyncpg.exceptions.UniqueViolationError("duplicate key")), False),
        (wrapped(asyncpg.exceptions.SyntaxOrAccessError("syntax error")), False),
        (wrapped(asyncpg.exceptions.ClientConfigurationError("bad option")), True),
        (wrapped(asyncpg.exceptions.CheckViolationError("check")), False),
        # Unwrapped: what asyncpg's own connection raises (the hot statements run on it).
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), True),
        (
            asyncpg.InternalClientError(
                "cannot switch to state 12; another operation (2) is in progress"
            ),
            True,
        ),
        (asyncpg.exceptions.CheckViolationError("check"), False),
        (asyncpg.exceptions.UniqueViolationError("duplicate key"), False),
        (PoisonMessageError("bad"), False),
        (UnknownApplicationError("gone"), False),
        (ValueError("bug"), False),
    ],
)
def test_failure_classes(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_a_permanent_error_stays_permanent_whatever_it_wraps() -> None:
    error = PoisonMessageError("unparseable")
    error.__cause__ = ConnectionResetError()
    assert is_transient(error) is False


def cancelled_while_handling(error: BaseException) -> asyncio.CancelledError:
    """A task cancelled while it cleans up after `error` (a rollback, a producer's stop)."""
    try:
        raise error
    except BaseException:
        try:
            raise asyncio.CancelledError
        except asyncio.CancelledError as cancelled:
            return cancelled


@pytest.mark.parametrize(
    "error", [ConnectionResetError(), wrapped(asyncpg.exceptions.AdminShutdownError("bye"))]
)
def test_a_cancellation_is_never_retried_whatever_it_interrupted(error: BaseException) -> None:
    """The retry loop retried a stop's cancellation while it cleaned up after a transient
    failure (found by its `__context__`), for the whole retry budget."""
    cancelled = cancelled_while_handling(error)
    assert cancelled.__context__ is error
    assert is_transient(cancelled) is False
