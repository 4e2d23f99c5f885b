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


class TransientError(PrequalError):
    """A dependency is unavailable for now; retry later without losing the message."""


class ApplicationNotFoundError(PrequalError):
    """No application has this id."""


class RetryLaterError(TransientError):
    """A dependency is known to be down (circuit open): pause for `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def is_transient(exc: BaseException) -> bool:
    """True for failures of infrastructure that may heal by themselves (retry, never DLQ)."""
    if isinstance(exc, TransientError | OSError | TimeoutError | KafkaError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return isinstance(
            exc.orig,
            OSError
            | TimeoutError
            | asyncpg.PostgresConnectionError
            | asyncpg.CannotConnectNowError
            | asyncpg.InterfaceError,
        ) or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True
    return isinstance(
        exc,
        asyncpg.PostgresConnectionError | asyncpg.CannotConnectNowError | asyncpg.InterfaceError,
    )


class DependencyUnavailableError(TransientError):
    """Raised at a request boundary when PostgreSQL or Kafka cannot be reached."""
