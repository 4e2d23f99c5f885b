"""The circuit breaker around the database, usable from asyncio.

pybreaker's `call_async` needs Tornado; its `calling()` context manager works around any
awaited block instead. An open circuit becomes a `RetryLaterError` carrying the time left,
so the consume loop pauses its partitions rather than dead-lettering good messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pybreaker
import structlog

from prequal_shared.errors import RetryLaterError, is_transient
from prequal_shared.metrics import BREAKER_STATE

log = structlog.stdlib.get_logger(__name__)


_STATE_VALUES = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}


class _StateGauge(pybreaker.CircuitBreakerListener):
    """Publishes the breaker's state as a metric and logs each change."""

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        BREAKER_STATE.labels(cb.name).set(_STATE_VALUES.get(new_state.name, -1))
        log.warning(
            "circuit breaker state changed", breaker=cb.name, old=old_state.name, new=new_state.name
        )


def _not_a_database_failure(exc: BaseException) -> bool:
    return not is_transient(exc)


def create_breaker(*, fail_max: int, reset_timeout_s: float) -> pybreaker.CircuitBreaker:
    # Only failures to reach the database count against it. Any other error ends the call as
    # a success would (pybreaker's handling of `exclude`): an error PostgreSQL answered with
    # that no retry fixes (a constraint violated) shows that it is up; a bug in our code says
    # nothing, and must not pause every partition either.
    breaker = pybreaker.CircuitBreaker(
        fail_max=fail_max,
        reset_timeout=reset_timeout_s,
        exclude=[_not_a_database_failure],
        listeners=[_StateGauge()],
        name="postgres",
    )
    BREAKER_STATE.labels(breaker.name).set(0)
    return breaker


def seconds_until_retry(breaker: pybreaker.CircuitBreaker) -> float:
    opened_at = breaker._state_storage.opened_at
    if opened_at is None:
        return 0.0
    elapsed = (datetime.now(UTC) - opened_at).total_seconds()
    return max(0.1, breaker.reset_timeout - elapsed)


@contextlib.contextmanager
def guarded(breaker: pybreaker.CircuitBreaker) -> Iterator[None]:
    try:
        with breaker.calling():
            yield
    except pybreaker.CircuitBreakerError as exc:
        raise RetryLaterError(
            f"circuit {breaker.name} is open: {exc}", retry_after=seconds_until_retry(breaker)
        ) from exc
