"""Which failures count against the circuit: only the database's own (no server needed)."""

import pybreaker
import pytest

from decision_service.messaging.breaker import create_breaker, guarded
from prequal_shared.errors import RetryLaterError, UnknownApplicationError


def fail_with(breaker: pybreaker.CircuitBreaker, error: Exception) -> None:
    with guarded(breaker):
        raise error


def test_bugs_and_permanent_errors_never_open_the_circuit() -> None:
    breaker = create_breaker(fail_max=2, reset_timeout_s=60)
    for error in (ValueError("bug"), UnknownApplicationError("gone"), ValueError("bug")):
        with pytest.raises(type(error)):
            fail_with(breaker, error)
    assert breaker.current_state == pybreaker.STATE_CLOSED


def test_consecutive_database_failures_open_it() -> None:
    breaker = create_breaker(fail_max=2, reset_timeout_s=60)
    with pytest.raises(ConnectionRefusedError):
        fail_with(breaker, ConnectionRefusedError())
    with pytest.raises(RetryLaterError) as tripped:
        fail_with(breaker, ConnectionRefusedError())
    assert breaker.current_state == pybreaker.STATE_OPEN
    assert 0 < tripped.value.retry_after <= 60
