"""Event schemas, one per topic, inside a common envelope. Amounts travel as decimal strings."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
)

from prequal_shared.domain import PAN_PATTERN, LoanType
from prequal_shared.errors import PoisonMessageError
from prequal_shared.ids import new_id

_PLAIN_DECIMAL = re.compile(r"[ \t\r\n]*[0-9]+(\.[0-9]+)?[ \t\r\n]*")
_PAISE = Decimal("0.01")
_MAX_DIGITS, _DECIMAL_PLACES = 12, 2  # NUMERIC(12,2), the amounts' column type


def _exact_amount(value: Any) -> Any:
    """Refuse what cannot be an exact amount before Decimal sees it: a float (a JSON number
    parsed as binary floating point has already lost digits: 100000.00000000000000001 became
    100000.0), and strings other than plain digits with an optional decimal point (and
    spaces around them), which Decimal would read but other systems might not: "1_000", "+100",
    "1E+5", ".5", digits of other scripts. The API parses request numbers as Decimal, never as
    float."""
    if isinstance(value, float):
        msg = 'amounts must be exact: send a decimal string such as "50000.50", not a float'
        raise ValueError(msg)
    if isinstance(value, str) and not _PLAIN_DECIMAL.fullmatch(value):
        msg = 'amounts are plain decimals, digits 0-9 and an optional decimal point: "50000.50"'
        raise ValueError(msg)
    return value


Money = Annotated[
    Decimal,
    # The constraints first, on the Decimal itself, so that pydantic checks them natively;
    # after a validator of ours it checks them in Python, 2 us an amount, and each application
    # has its amounts validated ten times on the way through the three services. The
    # validators below still run in their order around it: before, Decimal, after.
    Field(
        gt=0,
        max_digits=_MAX_DIGITS,
        decimal_places=_DECIMAL_PLACES,
        allow_inf_nan=False,
        # Natively checked, these two are left out of the JSON schema: put back.
        json_schema_extra={"max_digits": _MAX_DIGITS, "decimal_places": _DECIMAL_PLACES},
    ),
    BeforeValidator(_exact_amount),
    # One way to write each amount, with its paise, as PostgreSQL's NUMERIC(12,2) stores it:
    # "100000", "1E+5" and "100000.000" are all 100000.00 in the row, the event and the logs.
    AfterValidator(lambda value: value.quantize(_PAISE)),
    PlainSerializer(lambda value: format(value, "f"), return_type=str, when_used="json"),
]

MAX_CORRELATION_ID_LENGTH = 128
"""The API takes a client's X-Correlation-ID only up to this length, and events carry no longer
one: each hop copies it into a payload and a header, so an unbounded one could outgrow Kafka's
message size limit on the way."""

HEADER_CORRELATION_ID = "correlation_id"
HEADER_EVENT_ID = "event_id"
HEADER_EVENT_TYPE = "event_type"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApplicationSubmitted(_Frozen):
    application_id: uuid.UUID
    pan_number: Annotated[str, Field(pattern=PAN_PATTERN)]
    applicant_name: str | None = None
    monthly_income_inr: Money
    loan_amount_inr: Money
    loan_type: LoanType | None = None


class CreditReportGenerated(_Frozen):
    application_id: uuid.UUID
    cibil_score: Annotated[int, Field(strict=True, ge=300, le=900)]  # not "700", nor 700.0
    monthly_income_inr: Money
    loan_amount_inr: Money
    loan_type: LoanType | None = None


PayloadT = TypeVar("PayloadT", bound=_Frozen)


class Envelope(_Frozen, Generic[PayloadT]):
    event_id: uuid.UUID
    event_type: str
    # An event of a later version may mean something else by the same fields (amounts in
    # paise, say): it is refused, not read as version 1.
    schema_version: Literal[1] = 1
    occurred_at: AwareDatetime
    correlation_id: Annotated[
        str, StringConstraints(max_length=MAX_CORRELATION_ID_LENGTH, pattern=r"^[^\x00-\x1f\x7f]*$")
    ]
    payload: PayloadT


class ApplicationSubmittedEvent(Envelope[ApplicationSubmitted]):
    event_type: Literal["loan_application_submitted"] = "loan_application_submitted"


class CreditReportGeneratedEvent(Envelope[CreditReportGenerated]):
    event_type: Literal["credit_report_generated"] = "credit_report_generated"


EventT = TypeVar("EventT", bound=Envelope[Any])


def new_event_fields(*, correlation_id: str, event_id: uuid.UUID | None = None) -> dict[str, Any]:
    return {
        "event_id": event_id or new_id(),
        "occurred_at": datetime.now(UTC),
        "correlation_id": correlation_id,
    }


def encode(event: Envelope[Any]) -> bytes:
    return event.model_dump_json().encode()


def decode(model: type[EventT], raw: bytes | None) -> EventT:
    """Parse a message value; anything unparseable is a poison message."""
    if raw is None:
        msg = "empty message value"
        raise PoisonMessageError(msg)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        )
        raise PoisonMessageError(f"{model.__name__} rejected: {errors}") from exc


def headers_for(event: Envelope[Any]) -> list[tuple[str, bytes]]:
    return [
        (HEADER_EVENT_ID, str(event.event_id).encode()),
        (HEADER_EVENT_TYPE, event.event_type.encode()),
        (HEADER_CORRELATION_ID, event.correlation_id.encode()),
    ]


def header(headers: Any, name: str) -> str | None:
    for key, value in headers or ():
        if key == name and value is not None:
            return bytes(value).decode(errors="replace")
    return None
