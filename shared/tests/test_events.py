import json
import uuid
from decimal import Decimal

import pytest

from prequal_devstack.testing import application_event, report_event
from prequal_shared.errors import PoisonMessageError
from prequal_shared.events import (
    ApplicationSubmittedEvent,
    CreditReportGeneratedEvent,
    decode,
    encode,
    header,
    headers_for,
)


def test_amounts_travel_as_decimal_strings_and_round_trip_exactly() -> None:
    event = application_event(monthly_income_inr=Decimal("2083.33"))
    wire = json.loads(encode(event))
    assert wire["payload"]["monthly_income_inr"] == "2083.33"
    assert wire["payload"]["loan_amount_inr"] == "200000.00"  # with its paise, as stored
    assert set(wire) == {
        "event_id",
        "event_type",
        "schema_version",
        "occurred_at",
        "correlation_id",
        "payload",
    }
    assert decode(ApplicationSubmittedEvent, encode(event)) == event


def test_headers_carry_ids_and_correlation() -> None:
    event = application_event()
    headers = headers_for(event)
    assert header(headers, "correlation_id") == event.correlation_id
    assert header(headers, "event_id") == str(event.event_id)
    assert header(headers, "event_type") == "loan_application_submitted"
    assert header(headers, "missing") is None


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"not json",
        b"{}",
        b'{"event_id": "x"}',
    ],
)
def test_unparseable_messages_are_poison(raw: bytes | None) -> None:
    with pytest.raises(PoisonMessageError):
        decode(ApplicationSubmittedEvent, raw)


def test_an_event_of_another_type_is_poison() -> None:
    with pytest.raises(PoisonMessageError, match="event_type"):
        decode(CreditReportGeneratedEvent, encode(application_event()))


@pytest.mark.parametrize(
    "change",
    [
        {"monthly_income_inr": "0"},
        {"monthly_income_inr": "-1"},
        {"loan_amount_inr": "1.001"},
        {"loan_amount_inr": "NaN"},
        {"loan_amount_inr": "12345678901.00"},
        {"pan_number": "abcde1234f"},
        {"loan_type": "YACHT"},
        {"status": "PRE_APPROVED"},
    ],
)
def test_payload_rules_are_enforced_on_the_wire(change: dict[str, str]) -> None:
    wire = json.loads(encode(application_event()))
    wire["payload"].update(change)
    with pytest.raises(PoisonMessageError):
        decode(ApplicationSubmittedEvent, json.dumps(wire).encode())


def report_with_income(income: bytes) -> bytes:
    """A credit report on the wire whose income is written exactly as `income`."""
    wire = json.loads(encode(report_event(uuid.uuid4(), score=700)))
    wire["payload"]["monthly_income_inr"] = "INCOME"
    return json.dumps(wire).encode().replace(b'"INCOME"', income)


@pytest.mark.parametrize(
    ("income", "exact"),
    [
        (b'"2083.33"', Decimal("2083.33")),
        (b"2083", Decimal("2083")),  # a JSON integer is exact
        (b'"2083.330"', Decimal("2083.33")),
    ],
)
def test_event_amounts_are_read_exactly(income: bytes, exact: Decimal) -> None:
    event = decode(CreditReportGeneratedEvent, report_with_income(income))
    assert event.payload.monthly_income_inr == exact


@pytest.mark.parametrize(
    "income",
    [
        b"100000.00000000000000001",  # a float would read it as 100000.0
        b"2083.33",
        b'"2_083.33"',
        b'"\\u0968\\u0966\\u096e\\u0969"',  # Devanagari digits, as JSON escapes
    ],
)
def test_an_amount_that_may_not_be_exact_is_poison(income: bytes) -> None:
    with pytest.raises(PoisonMessageError, match="monthly_income_inr"):
        decode(CreditReportGeneratedEvent, report_with_income(income))


def report_on_the_wire(**changes: object) -> bytes:
    """A credit report on the wire with envelope or payload fields (payload_*) changed."""
    wire = json.loads(encode(report_event(uuid.uuid4(), score=700)))
    for name, value in changes.items():
        if name.startswith("payload_"):
            wire["payload"][name.removeprefix("payload_")] = value
        else:
            wire[name] = value
    return json.dumps(wire).encode()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"schema_version": 2}, "schema_version"),
        ({"occurred_at": "2026-11-28T10:15:02"}, "occurred_at"),  # no time zone
        ({"correlation_id": "x" * 129}, "correlation_id"),
        ({"correlation_id": "a\nb"}, "correlation_id"),
        ({"payload_cibil_score": "700"}, "cibil_score"),
        ({"payload_cibil_score": 700.0}, "cibil_score"),
        ({"payload_cibil_score": 299}, "cibil_score"),
        ({"payload_cibil_score": 901}, "cibil_score"),
    ],
)
def test_an_envelope_outside_version_1_is_poison(changes: dict[str, object], field: str) -> None:
    with pytest.raises(PoisonMessageError, match=field):
        decode(CreditReportGeneratedEvent, report_on_the_wire(**changes))


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"correlation_id": "x" * 128},
        {"occurred_at": "2026-11-28T10:15:02+05:30"},
        {"payload_cibil_score": 300},
        {"payload_cibil_score": 900},
    ],
)
def test_an_envelope_of_version_1_is_read(changes: dict[str, object]) -> None:
    assert decode(CreditReportGeneratedEvent, report_on_the_wire(**changes))
