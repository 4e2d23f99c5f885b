"""/metrics on the API and on each consumer return real Prometheus text after real traffic."""

import httpx
from prometheus_client.parser import text_string_to_metric_families

from prequal_devstack.testing import StackInfo, poll_until


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls)


async def test_metrics_of_every_service_after_traffic(
    stack: StackInfo, api: httpx.AsyncClient
) -> None:
    config = stack.stack.config
    credit_url = f"http://127.0.0.1:{config.credit_ops_port}/metrics"
    decision_url = f"http://127.0.0.1:{config.decision_ops_port}/metrics"
    async with httpx.AsyncClient(timeout=5) as ops:
        before_credit = samples((await ops.get(credit_url)).text)
        before_decision = samples((await ops.get(decision_url)).text)
        created = await api.post(
            "/applications",
            json={
                "pan_number": "ABCDE1234F",
                "monthly_income_inr": "90000",
                "loan_amount_inr": "10000",
            },
        )
        assert created.status_code == 202
        assert (await api.post("/applications", json={"pan_number": "nope"})).status_code == 422

        async def decided() -> bool:
            body = (
                await api.get(f"/applications/{created.json()['application_id']}/status")
            ).json()
            return bool(body["status"] != "PENDING")

        assert await poll_until(decided)
        api_metrics = samples((await api.get("/metrics")).text)
        credit = samples((await ops.get(credit_url)).text)
        decision = samples((await ops.get(decision_url)).text)

    assert (
        value(
            api_metrics, "http_requests_total", handler="/applications", method="POST", status="202"
        )
        >= 1
    )
    assert (
        value(
            api_metrics, "http_requests_total", handler="/applications", method="POST", status="422"
        )
        >= 1
    )
    assert value(api_metrics, "http_request_duration_seconds_count", handler="/applications") >= 2
    # Buckets fine enough to read the 50 ms objective off (the library's default: 0.1, 0.5, 1).
    assert {"0.005", "0.025", "0.05"} <= {
        dict(labels).get("le")
        for (name, labels) in api_metrics
        if name == "http_request_duration_seconds_bucket"
    }
    assert ("prequal_outbox_backlog", frozenset()) in api_metrics
    assert value(api_metrics, "prequal_outbox_published_total") >= 1

    processed = {
        "consumer": "credit-service",
        "outcome": "processed",
        "topic": "loan_applications_submitted",
    }
    assert value(credit, "prequal_consumer_messages_total", **processed) > value(
        before_credit, "prequal_consumer_messages_total", **processed
    )
    decided_ok = {
        "consumer": "decision-service",
        "outcome": "processed",
        "topic": "credit_reports_generated",
    }
    assert value(decision, "prequal_consumer_messages_total", **decided_ok) > value(
        before_decision, "prequal_consumer_messages_total", **decided_ok
    )
    assert value(decision, "prequal_consumer_batch_seconds_count", consumer="decision-service") >= 1
    assert any(name == "prequal_consumer_lag" for name, _ in decision)
    assert ("prequal_circuit_breaker_state", frozenset({("breaker", "postgres")})) in decision
    assert value(decision, "prequal_circuit_breaker_state", breaker="postgres") == 0


async def test_api_metrics_label_requests_by_route_template(api: httpx.AsyncClient) -> None:
    """The handler label is the matched route's template (plain routes too, such as the OpenAPI
    document), one label for every unmatched path; health and metrics are not counted, the
    scrapes themselves included."""
    unknown_id = "01890000-0000-7000-8000-000000000000"
    before = samples((await api.get("/metrics")).text)
    assert (await api.get(f"/applications/{unknown_id}/status")).status_code == 404
    assert (await api.get("/no-such-route/4B6F2E")).status_code == 404
    assert (await api.get("/health")).status_code == 200
    assert (await api.get("/openapi.json")).status_code == 200
    await api.get("/metrics")  # a second scrape, between the two read here
    after = samples((await api.get("/metrics")).text)

    def added(**labels: str) -> float:
        return value(after, "http_requests_total", **labels) - value(
            before, "http_requests_total", **labels
        )

    status_route = "/applications/{application_id}/status"
    assert added(handler=status_route, method="GET", status="404") == 1
    assert added(handler="none", method="GET", status="404") == 1
    assert added(handler="none", method="GET", status="200") == 0  # not the scrapes
    assert added(handler="/openapi.json", method="GET", status="200") == 1
    for raw_path in (f"/applications/{unknown_id}/status", "/no-such-route/4B6F2E"):
        assert value(after, "http_requests_total", handler=raw_path) == 0
    assert value(after, "http_requests_total", handler="/health") == 0
    assert value(after, "http_requests_total", handler="/metrics") == 0
    assert added(method="GET") == 3
