"""The error hierarchy every service uses to decide between retry, dead-letter and HTTP status."""

import asyncpg
from aiokafka.errors import KafkaError
from sqlalchemy import exc as sa_exc


class PrequalError(Exception):
    """Base of the project's own errors."""


class PermanentError(PrequalError):
    """Retrying cannot help (bad payload, unknown application): dead-letter the message."""


class PoisonMessageError(PermanentError):
    """The message cannot be parsed or does not match its schema."""


class UnknownApplicationError(PermanentError):
    """An event names an application that does not exist."""


class InconsistentEventError(PermanentError):
    """An event contradicts what is stored (a credit report with other amounts than its
    application's): deciding on it would not be deciding on the application."""


class TransientError(PrequalError):
    """A dependency is unavailable for now; retry later without losing the message."""


class ApplicationNotFoundError(PrequalError):
    """No application has this id."""


class RetryLaterError(TransientError):
    """A dependency is known to be down (circuit open): pause for `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    TransientError,
    OSError,
    TimeoutError,
    KafkaError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08: connection failures
    asyncpg.OperatorInterventionError,  # class 57: shutting down, cannot connect now, cancelled
    asyncpg.InterfaceError,
    # The client's protocol state broke, e.g. "another operation is in progress" when a dying
    # server's FATAL message reached an idle connection just before a statement (the chaos
    # suite's crash of PostgreSQL met it); also a standby where a primary was asked for, or a
    # statement cached under an older schema. A new connection is the cure, not the DLQ.
    asyncpg.InternalClientError,
    asyncpg.TransactionRollbackError,  # class 40: deadlock, serialization failure
    # The server cannot do the work right now, whatever the work: too many connections, a
    # full disk, out of memory (class 53), an I/O error (58), a lock timeout (55P03), or a
    # standby that is read-only during a failover (25006). Classed permanent, they sent good
    # messages to the DLQ.
    asyncpg.InsufficientResourcesError,
    asyncpg.PostgresSystemError,
    asyncpg.LockNotAvailableError,
    asyncpg.ReadOnlySQLTransactionError,
    # The database refuses everyone until an operator or a deploy fixes it: a rotated password
    # (class 28), a database that is not there (3D000), a revoked grant (42501), or code
    # deployed ahead of its migration (42P01, 42703). Classed permanent, every good message
    # went to the DLQ while the circuit breaker, counting them as no failure, stayed closed.
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InsufficientPrivilegeError,
    asyncpg.UndefinedTableError,
    asyncpg.UndefinedColumnError,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps (SQLAlchemy's `.orig`, `__cause__`, `__context__`)."""
    found: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or any(current is seen for seen in found):
            continue
        found.append(current)
        pending.extend([getattr(current, "orig", None), current.__cause__, current.__context__])
    return found


def is_transient(exc: BaseException) -> bool:
    """True for failures of infrastructure that may heal by themselves (retry, never DLQ).

    SQLAlchemy wraps asyncpg's errors in adapter classes, so the whole chain is inspected:
    `the database system is shutting down` arrives as a plain `DBAPIError`.
    """
    if isinstance(exc, PermanentError) or not isinstance(exc, Exception):
        # Not an `Exception`: a cancellation (a stop), KeyboardInterrupt, SystemExit. Found
        # transient by what it interrupted (its `__context__`), a stop's cancellation was
        # retried for the whole retry budget.
        return False
    for current in _chain(exc):
        if isinstance(current, _TRANSIENT_TYPES):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
    return False


class DependencyUnavailableError(TransientError):
    """Raised at a request boundary when PostgreSQL or Kafka cannot be reached."""
