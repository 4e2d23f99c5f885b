"""Reading and replaying the dead-letter topic (used by the `prequal-dlq` CLI)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
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
    assign_whole_topic,
    create_producer,
    security_options,
    source_key,
    stop_consumer,
)

REPLAYED_FROM = "dlq_replayed_from"
REPLAY_GROUP = "prequal-dlq-replay"
"""The consumer group in which `replay --all` keeps its place in the DLQ."""


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    """Where the letter is in the DLQ topic."""
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    """Kafka lets a header's value be null."""
    timestamp_ms: int

    def meta(self, name: str) -> str | None:
        return header(self.headers, name)

    @property
    def id(self) -> str:
        """`partition:offset`, as `prequal-dlq` lists it and takes it."""
        return f"{self.partition}:{self.offset}"

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

    def _int_meta(self, name: str) -> int:
        """A number header; -1 when it is missing or not a number (anyone who can write to
        the DLQ can put anything there, and listing it must still work)."""
        try:
            return int(self.meta(name) or -1)
        except ValueError:
            return -1

    @property
    def failed_at(self) -> datetime:
        """When it was dead-lettered: its header, else the message's Kafka timestamp."""
        with contextlib.suppress(ValueError):
            raw = self.meta(DLQ_FAILED_AT)
            if raw:
                at = datetime.fromisoformat(raw)
                return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        # The producer sets the timestamp, and may set it past the year 9999.
        with contextlib.suppress(ValueError, OverflowError, OSError):
            return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)
        return datetime.fromtimestamp(0, tz=UTC)

    @property
    def replayable(self) -> bool:
        """Whether there is a message to send back: not when its value stayed at the source
        (too large), nor when it had neither key nor value (its key is then made up)."""
        if not self.source_topic or self.meta(DLQ_VALUE_OMITTED):
            return False
        if self.value is None:
            made_up = source_key(
                self.source_topic,
                self._int_meta(DLQ_SOURCE_PARTITION),
                self._int_meta(DLQ_SOURCE_OFFSET),
            )
            return self.key != made_up
        return True

    def original_headers(self) -> list[tuple[str, bytes | None]]:
        return [(k, v) for k, v in self.headers if k not in DLQ_HEADERS and k != REPLAYED_FROM]


DLQ_READ_TIMEOUT_S = 60.0
"""How long reading the whole DLQ may take."""


def _dlq_reader(settings: CommonSettings, *, group: str | None) -> AIOKafkaConsumer:
    """A consumer of the DLQ that is assigned its partitions, never subscribed: it joins no
    group's rebalances, and with `group` it only reads and commits that group's offsets."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        # A place committed before letters were deleted (a retention, `kafka-delete-records`)
        # is out of range: read from the oldest letter left, not from the end (skipping all).
        auto_offset_reset="earliest",
        **security_options(settings),
    )


async def read_dead_letters(
    settings: CommonSettings, *, after_group: str | None = None
) -> list[DeadLetter]:
    """Everything in the DLQ, oldest first; with `after_group`, only what comes after the
    offsets that consumer group committed (what `replay --all` has not replayed yet)."""
    consumer = _dlq_reader(settings, group=after_group)
    try:
        await consumer.start()
        tps = await assign_whole_topic(consumer, settings.topic_dlq)
        if not tps:
            return []
        await consumer.seek_to_beginning(*tps)
        if after_group is not None:
            for tp in tps:
                committed = await consumer.committed(tp)
                if committed is not None:
                    consumer.seek(tp, committed)
        ends = await consumer.end_offsets(tps)
        letters: list[DeadLetter] = []

        async def behind() -> bool:
            for tp in tps:
                if await consumer.position(tp) < ends[tp]:
                    return True
            return False

        async with asyncio.timeout(DLQ_READ_TIMEOUT_S):
            while await behind():
                batches = await consumer.getmany(timeout_ms=1000)
                for tp, records in batches.items():
                    letters.extend(
                        DeadLetter(
                            partition=tp.partition,
                            offset=r.offset,
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


async def replay(
    settings: CommonSettings,
    letters: list[DeadLetter],
    *,
    done_in_group: str | None = None,
    on_replayed: Callable[[DeadLetter], None] = lambda _: None,
) -> list[DeadLetter]:
    """Send each message back to its source topic, as it was (`on_replayed` hears of each as
    it is acknowledged). Safe to repeat: the consumers recognise events they have already
    applied by event id. With `done_in_group`, each letter passed (replayed, or one that
    cannot be) is committed in that consumer group, so `read_dead_letters(after_group=...)`
    does not return it again; the letters must then be in offset order within each partition.
    """
    producer = create_producer(settings, client_id="prequal-dlq")
    marker: AIOKafkaConsumer | None = None
    replayed: list[DeadLetter] = []
    async with contextlib.AsyncExitStack() as resources:
        resources.push_async_callback(producer.stop)  # closes it too if start() fails
        await producer.start()
        if done_in_group is not None:
            marker = _dlq_reader(settings, group=done_in_group)
            resources.push_async_callback(stop_consumer, marker)
            await marker.start()
            await assign_whole_topic(marker, settings.topic_dlq)
        for letter in letters:
            topic = letter.source_topic if letter.replayable else None
            if topic:
                await producer.send_and_wait(
                    topic,
                    value=letter.value,
                    key=letter.key,
                    headers=[*letter.original_headers(), (REPLAYED_FROM, letter.id.encode())],
                )
            if marker is not None:
                place = TopicPartition(settings.topic_dlq, letter.partition)
                await marker.commit({place: letter.offset + 1})
            if topic:
                replayed.append(letter)
                on_replayed(letter)
        if marker is not None:
            await _renew(marker)
    return replayed


async def _renew(marker: AIOKafkaConsumer) -> None:
    """Commit each partition's place again, in one request. Kafka forgets an offset of a group
    without members `offsets.retention.minutes` after it was committed (7 days by default),
    and a partition with no new letter would otherwise not be committed by later runs."""
    committed = {tp: await marker.committed(tp) for tp in marker.assignment()}
    places = {tp: offset for tp, offset in committed.items() if offset is not None}
    if places:  # none when the group has no place yet (the DLQ has always been empty)
        await marker.commit(places)
