"""Two instances of each consumer share the partitions and survive one being killed."""

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from prequal_devstack.load import expected_outcome, new_marker, steady_load
from prequal_devstack.testing import StackInfo, count_pending, poll_until, run_devstack
from prequal_shared.models import Application, Decision

pytestmark = pytest.mark.chaos


async def assigned(port: int) -> float:
    async with httpx.AsyncClient(timeout=2) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "prequal_consumer_assigned_partitions"
    )


async def check_all_decided_once(engine: AsyncEngine, accepted: dict[str, dict[str, str]]) -> None:
    async def none_pending() -> bool:
        return await count_pending(engine, list(accepted)) == 0

    assert await poll_until(none_pending, timeout_s=90, interval_s=0.5)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(Application.id, Application.status, Application.cibil_score).where(
                    Application.id.in_(list(accepted))
                )
            )
        ).all()
        decisions = await conn.scalar(
            select(func.count())
            .select_from(Decision)
            .where(Decision.application_id.in_(list(accepted)))
        )
    assert decisions == len(accepted)
    wrong = [
        (str(r.id), (r.cibil_score, r.status), expected_outcome(accepted[str(r.id)]))
        for r in rows
        if (r.cibil_score, r.status) != expected_outcome(accepted[str(r.id)])
    ]
    assert wrong == []


async def test_replicas_share_partitions_and_survive_a_kill(
    owned_stack: StackInfo, engine: AsyncEngine
) -> None:
    config = owned_stack.stack.config
    try:
        await asyncio.to_thread(run_devstack, "start", "credit-service", "--replicas", "2")
        await asyncio.to_thread(run_devstack, "start", "decision-service", "--replicas", "2")
        ports = {
            "credit": (config.credit_ops_port, config.credit_ops_port + 10),
            "decision": (config.decision_ops_port, config.decision_ops_port + 10),
        }

        async def shared() -> bool:
            counts = [await assigned(port) for pair in ports.values() for port in pair]
            return all(count >= 1 for count in counts) and sum(counts) == 2 * config.partitions

        assert await poll_until(shared, timeout_s=60, interval_s=0.5), (
            "replicas did not share partitions"
        )

        stop = asyncio.Event()
        marker = new_marker()
        load = asyncio.create_task(
            steady_load(config.api_url, rate_per_s=20, stop=stop, marker=marker)
        )
        await asyncio.sleep(3)
        await asyncio.to_thread(run_devstack, "kill", "credit-service-2")
        await asyncio.to_thread(run_devstack, "kill", "decision-service-2")

        async def took_over() -> bool:
            return all([await assigned(ports[name][0]) == config.partitions for name in ports])

        assert await poll_until(took_over, timeout_s=60, interval_s=0.5), (
            "survivors did not take over"
        )
        await asyncio.sleep(3)
        stop.set()
        result = await load
    finally:
        await asyncio.to_thread(run_devstack, "stop", "credit-service-2")
        await asyncio.to_thread(run_devstack, "stop", "decision-service-2")

    assert result.errors == []
    assert result.refused == []
    assert len(result.accepted) >= 100
    await check_all_decided_once(engine, result.accepted)
