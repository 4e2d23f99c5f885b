"""Which failures count against the circuit: only the database's own (no server needed)."""

import pybreaker
import pytest

from decision_service.messaging.breaker import create_breaker, guarded
from decision_service.messaging.handler import DecisionHandler
from prequal_devstack.testing import raw_record
from prequal_shared.config import CommonSettings
from prequal_shared.db import create_engine
from prequal_shared.errors import PoisonMessageError, RetryLaterError, UnknownApplicationError


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


@pytest.mark.parametrize("state", ["half_open", "open"])
async def test_a_batch_of_poison_alone_neither_closes_nor_waits_for_the_circuit(
    state: str,
) -> None:
    breaker = create_breaker(fail_max=1, reset_timeout_s=60)
    getattr(breaker, state)()
    # No PostgreSQL at this address: the handler must not need one for such a batch.
    engine = create_engine(
        CommonSettings(database_url="postgresql+asyncpg://nobody@127.0.0.1:9/none"),
        application_name="breaker-test",
    )
    handler = DecisionHandler(
        engine=engine,
        breaker=breaker,
        consumer_name="breaker-test",
    )
    poison = raw_record(b"k", b"not json")
    failures = await handler([poison, poison])
    assert sorted(failures) == [0, 1]
    assert all(isinstance(error, PoisonMessageError) for error in failures.values())
    assert breaker.current_state == getattr(pybreaker, f"STATE_{state.upper()}")
    await engine.dispose()
