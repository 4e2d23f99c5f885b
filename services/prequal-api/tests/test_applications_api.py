"""The HTTP contract, in-process, on the real PostgreSQL and Kafka."""

import json
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from prequal_api.api.schemas import MAX_BODY_BYTES
from prequal_devstack.testing import (
    StackInfo,
    fetch_application,
    poll_until,
    read_topic,
    topic_ends,
)
from prequal_shared.models import Application, OutboxEvent


@pytest.fixture
def client(api_client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The API in-process (lifespan included) on the real database and broker."""
    return api_client


class RowCounter:
    """Applications and outbox events created since its first call. Not whole tables: other
    tests' applications may be stored meanwhile. An event leaves the outbox once published,
    so a count of events only tells that nothing was stored; that something was, the count
    of applications tells (one statement stores both)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.since: Any = None

    async def __call__(self) -> tuple[int, int]:
        async with self.engine.connect() as conn:
            if self.since is None:
                self.since = await conn.scalar(select(func.now()))
            applications = await conn.scalar(
                select(func.count())
                .select_from(Application)
                .where(Application.created_at >= self.since)
            )
            outbox = await conn.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.created_at >= self.since)
            )
        return int(applications or 0), int(outbox or 0)


@pytest.fixture
def row_count(engine: AsyncEngine) -> RowCounter:
    return RowCounter(engine)


SUBMITTED = "loan_applications_submitted"


async def published_event(
    stack: StackInfo, ends: dict[TopicPartition, int], application_id: uuid.UUID
) -> ConsumerRecord[bytes, bytes]:
    """The application's event as Kafka has it, read from where the topic ended (`ends`)."""
    found = await read_topic(
        stack.kafka_bootstrap_servers,
        SUBMITTED,
        count=1,
        timeout_s=10,
        start=ends,
        match=lambda record: record.key == str(application_id).encode(),
    )
    assert found, f"no event for {application_id} on {SUBMITTED}"
    return found[0]


VALID: dict[str, Any] = {
    "pan_number": "ABCDE1234F",
    "applicant_name": "Asha Rao",
    "monthly_income_inr": 50000,
    "loan_amount_inr": 200000,
    "loan_type": "PERSONAL",
}


async def test_a_valid_application_is_stored_pending_and_its_event_published(
    client: httpx.AsyncClient, engine: AsyncEngine, stack: StackInfo
) -> None:
    ends = await topic_ends(stack.kafka_bootstrap_servers, SUBMITTED)
    response = await client.post(
        "/applications", json=VALID, headers={"X-Correlation-ID": "corr-api-1"}
    )

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "PENDING"
    assert set(body) == {"application_id", "status"}
    assert response.headers["X-Correlation-ID"] == "corr-api-1"
    application_id = uuid.UUID(body["application_id"])
    row = await fetch_application(engine, application_id)
    assert row.pan_number == "ABCDE1234F"
    assert row.monthly_income_inr == Decimal("50000.00")
    assert row.loan_type == "PERSONAL"

    record = await published_event(stack, ends, application_id)
    assert dict(record.headers)["correlation_id"] == b"corr-api-1"
    payload = json.loads(record.value)["payload"]
    assert payload["monthly_income_inr"] == "50000.00"  # as stored: one way to write it
    assert payload["application_id"] == str(application_id)

    async def left_the_outbox() -> bool:
        async with engine.connect() as conn:
            left = await conn.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.message_key == str(application_id).encode())
            )
        return left == 0

    assert await poll_until(left_the_outbox, timeout_s=10)


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("c" * 128, True),
        ("c" * 129, False),  # the events' schema allows 128: the consumers would refuse it
        ("a\tb", False),
    ],
    ids=["128 characters", "129 characters", "a tab"],
)
async def test_a_correlation_id_the_events_cannot_carry_is_replaced(
    client: httpx.AsyncClient, stack: StackInfo, sent: str, kept: bool
) -> None:
    """Taken as sent, one the consumers refuse sends the application to the DLQ for good."""
    ends = await topic_ends(stack.kafka_bootstrap_servers, SUBMITTED)
    response = await client.post("/applications", json=VALID, headers={"X-Correlation-ID": sent})

    assert response.status_code == 202
    answered = response.headers["X-Correlation-ID"]
    assert (answered == sent) is kept
    assert 0 < len(answered) <= 128
    record = await published_event(stack, ends, uuid.UUID(response.json()["application_id"]))
    assert dict(record.headers)["correlation_id"] == answered.encode()


@pytest.mark.parametrize(
    ("income", "stored"),
    [
        ("2083.33", Decimal("2083.33")),
        (2083.34, Decimal("2083.34")),
        ("0.01", Decimal("0.01")),
        ("9999999999.99", Decimal("9999999999.99")),
        (1e3, Decimal("1000")),
        (" 12.5 ", Decimal("12.50")),
        ("100.000", Decimal("100.00")),
    ],
)
async def test_amounts_are_stored_exactly(
    client: httpx.AsyncClient, engine: AsyncEngine, stack: StackInfo, income: Any, stored: Decimal
) -> None:
    ends = await topic_ends(stack.kafka_bootstrap_servers, SUBMITTED)
    response = await client.post("/applications", json=VALID | {"monthly_income_inr": income})
    assert response.status_code == 202, response.text
    application_id = uuid.UUID(response.json()["application_id"])
    row = await fetch_application(engine, application_id)
    assert row.monthly_income_inr == stored
    # The event carries the amount as the row has it, with its paise.
    record = await published_event(stack, ends, application_id)
    assert json.loads(record.value)["payload"]["monthly_income_inr"] == f"{stored:.2f}"


async def test_optional_fields_may_be_left_out(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    response = await client.post(
        "/applications",
        json={"pan_number": "FGHIJ5678K", "monthly_income_inr": "1", "loan_amount_inr": "2"},
    )
    assert response.status_code == 202
    row = await fetch_application(engine, uuid.UUID(response.json()["application_id"]))
    assert (row.applicant_name, row.loan_type, row.status) == (None, None, "PENDING")


@pytest.mark.parametrize(
    ("given", "stored"),
    [("  Asha Rao ", "Asha Rao"), ("   ", None), ("", None), ("\u00a0", None)],
    ids=["trimmed", "spaces only", "empty", "no-break space"],
)
async def test_names_are_trimmed_and_a_blank_one_is_no_name(
    client: httpx.AsyncClient, engine: AsyncEngine, given: str, stored: str | None
) -> None:
    response = await client.post("/applications", json=VALID | {"applicant_name": given})
    assert response.status_code == 202, response.text
    row = await fetch_application(engine, uuid.UUID(response.json()["application_id"]))
    assert row.applicant_name == stored


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("missing pan", {k: v for k, v in VALID.items() if k != "pan_number"}, "pan_number"),
    ("lower-case pan", VALID | {"pan_number": "abcde1234f"}, "pan_number"),
    ("pan too long", VALID | {"pan_number": "ABCDE1234FG"}, "pan_number"),
    ("pan digits misplaced", VALID | {"pan_number": "ABCD11234F"}, "pan_number"),
    ("pan not a string", VALID | {"pan_number": 1234567890}, "pan_number"),
    ("name too long", VALID | {"applicant_name": "x" * 256}, "applicant_name"),
    # PostgreSQL refuses NUL in text: this was a 500 after validation had passed.
    ("name with NUL", VALID | {"applicant_name": "Asha\u0000Rao"}, "applicant_name"),
    ("name with a line break", VALID | {"applicant_name": "Asha\nRao"}, "applicant_name"),
    ("name with a C1 control", VALID | {"applicant_name": "Asha\u0085Rao"}, "applicant_name"),
    ("name with a line separator", VALID | {"applicant_name": "Asha\u2028Rao"}, "applicant_name"),
    # Displays as "Asha oaR": a name that reads as other text than it holds.
    ("name with a bidi override", VALID | {"applicant_name": "Asha \u202eRao"}, "applicant_name"),
    (
        "income missing",
        {k: v for k, v in VALID.items() if k != "monthly_income_inr"},
        "monthly_income_inr",
    ),
    ("income zero", VALID | {"monthly_income_inr": 0}, "monthly_income_inr"),
    ("income negative", VALID | {"monthly_income_inr": "-1"}, "monthly_income_inr"),
    ("income 3 decimals", VALID | {"monthly_income_inr": "100.001"}, "monthly_income_inr"),
    ("income too large", VALID | {"monthly_income_inr": "12345678901"}, "monthly_income_inr"),
    # One paisa past the largest the column holds (NUMERIC(12, 2)).
    (
        "income a paisa too large",
        VALID | {"monthly_income_inr": "10000000000.00"},
        "monthly_income_inr",
    ),
    ("income NaN string", VALID | {"monthly_income_inr": "NaN"}, "monthly_income_inr"),
    ("income Infinity", VALID | {"monthly_income_inr": "Infinity"}, "monthly_income_inr"),
    ("income text", VALID | {"monthly_income_inr": "lots"}, "monthly_income_inr"),
    ("income with underscores", VALID | {"monthly_income_inr": "50_000"}, "monthly_income_inr"),
    ("income with a sign", VALID | {"monthly_income_inr": "+50000"}, "monthly_income_inr"),
    ("income with an exponent", VALID | {"monthly_income_inr": "5E+4"}, "monthly_income_inr"),
    ("income without units", VALID | {"monthly_income_inr": ".5"}, "monthly_income_inr"),
    (
        "income in Devanagari digits",
        VALID | {"monthly_income_inr": "\u096b\u0966\u0966\u0966\u0966"},
        "monthly_income_inr",
    ),
    (
        "income in full-width digits",
        VALID | {"monthly_income_inr": "\uff15\uff10\uff10\uff10\uff10"},
        "monthly_income_inr",
    ),
    ("income boolean", VALID | {"monthly_income_inr": True}, "monthly_income_inr"),
    ("loan missing", {k: v for k, v in VALID.items() if k != "loan_amount_inr"}, "loan_amount_inr"),
    ("loan zero", VALID | {"loan_amount_inr": "0.00"}, "loan_amount_inr"),
    ("loan 3 decimals", VALID | {"loan_amount_inr": 1000.555}, "loan_amount_inr"),
    ("loan negative", VALID | {"loan_amount_inr": "-200000"}, "loan_amount_inr"),
    ("loan a paisa too large", VALID | {"loan_amount_inr": "10000000000.00"}, "loan_amount_inr"),
    ("loan NaN string", VALID | {"loan_amount_inr": "NaN"}, "loan_amount_inr"),
    ("loan type unknown", VALID | {"loan_type": "YACHT"}, "loan_type"),
    ("loan type lower-case", VALID | {"loan_type": "home"}, "loan_type"),
    ("client sets status", VALID | {"status": "PRE_APPROVED"}, "status"),
    ("client sets score", VALID | {"cibil_score": 900}, "cibil_score"),
]


@pytest.mark.parametrize(("case", "body", "field"), INVALID, ids=[c[0] for c in INVALID])
async def test_invalid_input_is_422_naming_the_field_and_stores_nothing(
    client: httpx.AsyncClient, row_count: Any, case: str, body: dict[str, Any], field: str
) -> None:
    before = await row_count()
    response = await client.post("/applications", json=body)
    assert response.status_code == 422, case
    problem = response.json()
    assert field in problem["detail"]
    assert any(field in error["loc"] for error in problem["errors"])
    assert "ABCDE1234F" not in response.text  # the input is never echoed
    assert await row_count() == before


@pytest.mark.parametrize(
    ("raw", "status", "detail"),
    [
        (b'{"pan_number": "ABCDE1234F",', 400, "not valid JSON: Expecting property name"),
        (b"not json", 400, "not valid JSON: Expecting value"),
        (
            b'{"pan_number": "ABCDE1234F", "monthly_income_inr": NaN, "loan_amount_inr": 1}',
            400,
            "not valid JSON: NaN is not a number in JSON",
        ),
        (
            b'{"pan_number": "ABCDE1234F", "monthly_income_inr": Infinity, "loan_amount_inr": 1}',
            400,
            "not valid JSON: Infinity is not a number in JSON",
        ),
        # Python's json keeps the last of two values, other parsers the first: a proxy or an
        # audit log would see another application than the one stored.
        (
            b'{"pan_number": "ABCDE1234F", "monthly_income_inr": 1, "loan_amount_inr": 1,'
            b' "loan_amount_inr": 99999}',
            400,
            'not valid JSON: "loan_amount_inr" is given twice',
        ),
        (
            b'{"pan_number": "ABCDE1234F", "monthly_income_inr": 1, "loan_amount_inr": 1,'
            b' "ABCDE1234F": 1, "ABCDE1234F": 2}',
            400,
            "not valid JSON: a key is given twice",
        ),
        (b"[1, 2]", 422, "invalid request: body"),
        (b"", 422, "invalid request: body"),
    ],
    ids=[
        "cut short",
        "not json",
        "NaN",
        "Infinity",
        "repeated field",
        "repeated other key",
        "an array",
        "empty",
    ],
)
async def test_malformed_bodies_are_rejected_and_store_nothing(
    client: httpx.AsyncClient, row_count: Any, raw: bytes, status: int, detail: str
) -> None:
    before = await row_count()
    response = await client.post(
        "/applications", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    assert "ABCDE1234F" not in response.text  # the input is never echoed
    assert await row_count() == before


@pytest.mark.parametrize("key", ["ABCDE1234F", "abcde1234f", "Asha Rao", "asha_rao"])
async def test_an_unknown_key_is_422_without_echoing_it(
    client: httpx.AsyncClient, row_count: Any, key: str
) -> None:
    """An extra key is refused, and the error says where without quoting the client's text:
    a key may hold a PAN as well as a value can."""
    before = await row_count()
    response = await client.post("/applications", json=VALID | {key: 1})
    assert response.status_code == 422, response.text
    assert response.json() == {
        "detail": "invalid request: <unknown key>",
        "errors": [
            {
                "loc": ["body", "<unknown key>"],
                "msg": "Extra inputs are not permitted",
                "type": "extra_forbidden",
            }
        ],
    }
    assert key not in response.text
    assert await row_count() == before


def padded(size: int) -> bytes:
    """A valid application, padded with whitespace to `size` bytes."""
    body = json.dumps(VALID).encode()
    return body + b" " * (size - len(body))


async def streamed(body: bytes) -> Any:
    """The body in 1 kB chunks, with no Content-Length (chunked transfer encoding)."""
    for start in range(0, len(body), 1024):
        yield body[start : start + 1024]


@pytest.mark.parametrize(
    ("size", "chunked", "status"),
    [
        (MAX_BODY_BYTES, False, 202),
        (MAX_BODY_BYTES + 1, False, 413),
        (MAX_BODY_BYTES, True, 202),
        (MAX_BODY_BYTES + 1, True, 413),
        (50 * 1024 * 1024, False, 413),
    ],
    ids=["at the limit", "one byte over", "chunked at the limit", "chunked over", "50 MB"],
)
async def test_bodies_over_the_limit_are_413_and_store_nothing(
    client: httpx.AsyncClient, row_count: Any, size: int, chunked: bool, status: int
) -> None:
    body = padded(size)
    before = await row_count()
    response = await client.post(
        "/applications",
        content=streamed(body) if chunked else body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status, response.text
    if status == 202:
        assert (await row_count())[0] == before[0] + 1
    else:
        assert await row_count() == before


async def test_status_of_a_known_application_never_shows_the_pan(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post("/applications", json=VALID)
    application_id = created.json()["application_id"]

    response = await client.get(f"/applications/{application_id}/status")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"application_id", "status", "cibil_score", "updated_at"}
    assert body["application_id"] == application_id
    assert body["status"] in ("PENDING", "PRE_APPROVED", "REJECTED", "MANUAL_REVIEW")
    assert "ABCDE" not in response.text


async def test_status_of_an_unknown_application_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/applications/{uuid.uuid4()}/status")
    assert response.status_code == 404
    assert "not found" in response.json()["detail"]


async def test_status_with_an_id_that_is_not_a_uuid_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/applications/not-a-uuid/status")
    assert response.status_code == 422
    assert "application_id" in response.json()["detail"]


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}

    async def ready() -> httpx.Response | None:
        response = await client.get("/health/ready")
        return response if response.status_code == 200 else None

    response = await poll_until(ready, timeout_s=10)
    assert response is not None
    assert response.json()["checks"] == {"postgres": "ok", "kafka": "ok"}


async def test_openapi_documents_the_contract_with_examples(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    post = spec["paths"]["/applications"]["post"]
    assert {"202", "400", "413", "422", "503"} <= set(post["responses"])
    schema = spec["components"]["schemas"]["ApplicationIn"]
    assert schema["examples"][0]["pan_number"] == "ABCDE1234F"
    assert schema["additionalProperties"] is False
