"""Reading and replaying the dead-letter topic (used by the `prequal-dlq` CLI)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from prequal_shared.config import CommonSettings
from prequal_shared.events import header
from prequal_shared.kafka import (
    DLQ_CONSUMER,
    DLQ_ERROR,
    DLQ_ERROR_TYPE,
    DLQ_FAILED_AT,
    DLQ_HEADERS,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_TOPIC,
    DLQ_VALUE_OMITTED,
    create_producer,
    security_options,
    stop_consumer,
)

REPLAYED_FROM = "dlq_replayed_from"


@dataclass(frozen=True)
class DeadLetter:
    id: str
    """`partition:offset` in the DLQ topic."""
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int

    def meta(self, name: str) -> str | None:
        return header(self.headers, name)

    @property
    def error(self) -> str:
        return self.meta(DLQ_ERROR) or ""

    @property
    def error_type(self) -> str:
        return self.meta(DLQ_ERROR_TYPE) or ""

    @property
    def source(self) -> str:
        return (
            f"{self.meta(DLQ_SOURCE_TOPIC)}[{self.meta(DLQ_SOURCE_PARTITION)}]"
            f"@{self.meta(DLQ_SOURCE_OFFSET)}"
        )

    @property
    def source_topic(self) -> str | None:
        return self.meta(DLQ_SOURCE_TOPIC)

    @property
    def consumer(self) -> str:
        return self.meta(DLQ_CONSUMER) or ""

    @property
    def failed_at(self) -> datetime:
        raw = self.meta(DLQ_FAILED_AT)
        return (
            datetime.fromisoformat(raw)
            if raw
            else datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)
        )

    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in self.headers if k not in DLQ_HEADERS and k != REPLAYED_FROM]


async def read_dead_letters(settings: CommonSettings) -> list[DeadLetter]:
    """Everything in the DLQ, oldest first, read without joining a consumer group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        **security_options(settings),
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(settings.topic_dlq)
        if partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(settings.topic_dlq) or set()
        tps = [TopicPartition(settings.topic_dlq, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        letters: list[DeadLetter] = []

        async def behind() -> bool:
            for tp in tps:
                if await consumer.position(tp) < ends[tp]:
                    return True
            return False

        async with asyncio.timeout(60):
            while await behind():
                batches = await consumer.getmany(timeout_ms=1000)
                for tp, records in batches.items():
                    letters.extend(
                        DeadLetter(
                            id=f"{tp.partition}:{r.offset}",
                            key=r.key,
                            value=r.value,
                            headers=list(r.headers or ()),
                            timestamp_ms=r.timestamp,
                        )
                        for r in records
                        if r.offset < ends[tp]
                    )
        return sorted(letters, key=lambda letter: letter.timestamp_ms)
    finally:
        await stop_consumer(consumer)


async def replay(settings: CommonSettings, letters: list[DeadLetter]) -> list[DeadLetter]:
    """Send each message back to its source topic, as it was. Safe to repeat: the consumers
    recognise events they have already applied by event id."""
    producer = create_producer(settings, client_id="prequal-dlq")
    await producer.start()
    replayed: list[DeadLetter] = []
    try:
        for letter in letters:
            if not letter.source_topic or letter.meta(DLQ_VALUE_OMITTED):
                continue  # nothing to send back (its value stayed at the source offset)
            await producer.send_and_wait(
                letter.source_topic,
                value=letter.value,
                key=letter.key,
                headers=[*letter.original_headers(), (REPLAYED_FROM, letter.id.encode())],
            )
            replayed.append(letter)
    finally:
        await producer.stop()
    return replayed
