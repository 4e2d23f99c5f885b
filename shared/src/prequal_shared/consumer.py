"""The consume loop both consumers share.

Each fetched batch is handled in one unit of work (one transaction, or one round of produce
acknowledgements). Messages that can never succeed go to the DLQ at once; a transient failure
of the batch is retried with capped exponential backoff and jitter (tenacity), and if it
persists the consumer seeks back, pauses its partitions and tries again later, so the
offset is never committed past a message that has not been handled. Offsets are committed
after each batch, once its work is durable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    CorruptRecordException,
    IllegalStateError,
    KafkaError,
    UnsupportedCodecError,
)
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from prequal_shared.errors import PermanentError, RetryLaterError, is_transient
from prequal_shared.events import HEADER_CORRELATION_ID, header
from prequal_shared.kafka import DeadLetterPublisher
from prequal_shared.metrics import BATCH_SECONDS, BATCH_SIZE, LAG, MESSAGES, PAUSED
from prequal_shared.shutdown import finish_or_abandon

Record: TypeAlias = ConsumerRecord[bytes, bytes]
Handler = Callable[[Sequence[Record]], Awaitable[Mapping[int, PermanentError]]]
"""Handles a batch in one unit of work. Returns the messages that can never succeed (by index
in the batch) for the dead-letter topic; raises for a failure of the whole batch."""

log = structlog.stdlib.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_s: float = 0.1
    max_s: float = 5.0
    budget_s: float = 10.0
    """How long to retry in place before pausing the partitions and polling on."""
    pause_s: float = 5.0
    unexpected_attempts: int = 5
    """An unclassified exception (a bug?) is retried this many times, then dead-lettered."""


class ConsumerLoop:
    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        handler: Handler,
        dead_letters: DeadLetterPublisher,
        name: str,
        policy: RetryPolicy | None = None,
        max_records: int = 200,
        stop_grace_s: float = 5.0,
    ) -> None:
        """Once stopped, the batch in hand has `stop_grace_s` to finish and be committed; after
        that it is abandoned uncommitted, to be redelivered, so that a stop cannot hang on a
        dependency that is down (unacknowledged sends are retried for ever, and a commit waits
        for ever for the group's coordinator)."""
        self._name = name
        self._stop_grace_s = stop_grace_s
        self._consumer = consumer
        self._handler = handler
        self._dead_letters = dead_letters
        self._policy = policy or RetryPolicy()
        self._max_records = max_records
        self._resume_at: float | None = None
        self._unexpected: dict[tuple[str, int, int], int] = {}
        PAUSED.labels(name).set(0)  # a value from the start: "no data" would look like an outage

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; the batch in hand is finished and committed first."""
        while not stop.is_set():
            if self._resume_at is not None:
                if time.monotonic() >= self._resume_at:
                    self._resume()
                else:
                    self._stay_paused()
            fetching = asyncio.ensure_future(
                self._consumer.getmany(timeout_ms=500, max_records=self._max_records)
            )
            # Not for ever: while the group rebalances, aiokafka waits for the new assignment
            # with no time limit (its coordinator gone, say). Nothing is taken from a fetch
            # cut short.
            if not await finish_or_abandon(fetching, stop, 0):
                break
            try:
                batches = fetching.result()
            except (CorruptRecordException, UnsupportedCodecError) as exc:
                # aiokafka decodes a fetch partition by partition: the records it had already
                # taken from other partitions are dropped with this error, their positions
                # moved past them. Fetching on, a later commit could skip them for good. End
                # the consumer instead: restarted, it reads again from its last commits.
                log.error(
                    "a fetched batch cannot be decoded; stopping so that nothing is skipped"
                    " (restart once the batch is readable, or deleted)",
                    error=repr(exc),
                )
                raise
            except KafkaError as exc:
                # The client reconnects by itself; do not spin while the broker is away.
                log.warning("fetch failed", error=repr(exc))
                await asyncio.sleep(1)
                continue
            if not batches:
                continue
            if self._resume_at is not None and time.monotonic() < self._resume_at:
                # A rebalance during this fetch handed out partitions unpaused: pause them too,
                # and put back what came from them, as for a batch not handled.
                self._stay_paused()
                await self._settle(batches, [])
                continue
            processing = asyncio.ensure_future(self._process(batches))
            if not await finish_or_abandon(processing, stop, self._stop_grace_s):
                log.warning("stopped with a batch uncommitted; it will be redelivered")
                break
            processing.result()
        log.info("consumer stopping")

    async def _process(self, batches: Mapping[TopicPartition, list[Record]]) -> None:
        """Handle a fetched batch, then settle it. Both can wait for ever on a broker that is
        gone: aiokafka retries sends, and looks for the group's coordinator to commit, until
        the consumer is closed, which only happens once the loop has returned."""
        records = [record for partition in batches.values() for record in partition]
        started = time.perf_counter()
        handled = await self._handle(records)
        BATCH_SECONDS.labels(self._name).observe(time.perf_counter() - started)
        BATCH_SIZE.labels(self._name).observe(len(records))
        await self._settle(batches, records[:handled])

    async def _settle(
        self, batches: Mapping[TopicPartition, list[Record]], handled: list[Record]
    ) -> None:
        """Commit what was handled (a prefix of the batch); seek back to the rest, which is
        fetched again. A rebalance may have run while the batch was handled: only partitions
        this instance still owns are sought or committed (their new owner re-reads the rest
        from the last commit, and the work is idempotent)."""
        owned = self._consumer.assignment()
        next_offsets = {TopicPartition(r.topic, r.partition): r.offset + 1 for r in handled}
        done: dict[TopicPartition, int] = {}
        retried = 0
        for tp, partition in batches.items():
            if tp not in owned:
                continue
            if tp in next_offsets:
                done[tp] = next_offsets[tp]
            resume = next_offsets.get(tp, partition[0].offset)
            if resume <= partition[-1].offset:
                # Nothing past the first unhandled message may be committed.
                self._consumer.seek(tp, resume)
                retried += partition[-1].offset + 1 - resume
        if retried:
            MESSAGES.labels(self._name, next(iter(batches)).topic, "retried").inc(retried)
        await self._commit(done)
        self._record_lag(done)

    async def _handle(self, records: list[Record]) -> int:
        """Handle a batch; returns how many of its records, from the first, were handled (the
        rest is fetched again later). Handled means applied, or dead-lettered for good."""
        try:
            failures = await self._attempt(records)
        except RetryLaterError as exc:
            log.warning(
                "dependency unavailable, pausing", error=str(exc), retry_after=exc.retry_after
            )
            self._pause(exc.retry_after)
            return 0
        except Exception as exc:
            if is_transient(exc):
                log.warning("transient failure persists, pausing", error=repr(exc))
                self._pause(self._policy.pause_s)
                return 0
            if len(records) > 1:
                # Handled ones are committed even if a later one fails: not handled (and
                # dead-lettered) again while that one is retried.
                log.warning("batch failed unexpectedly; handling its messages one at a time")
                for index, record in enumerate(records):
                    if not await self._handle([record]):
                        return index
                return len(records)
            return 1 if await self._unexpected_failure(records[0], exc) else 0
        for index, error in sorted(failures.items()):
            if not await self._dead_letter(records[index], error):
                # The batch's work is durable and the failures before this one are in the DLQ:
                # only from here is it fetched again (and they are not dead-lettered twice).
                return index
        if self._unexpected:  # a message that failed before has now been handled
            for record in records:
                self._unexpected.pop((record.topic, record.partition, record.offset), None)
        processed = len(records) - len(failures)
        if processed:
            MESSAGES.labels(self._name, records[0].topic, "processed").inc(processed)
        return len(records)

    async def _attempt(self, records: list[Record]) -> Mapping[int, PermanentError]:
        """Call the handler, retrying transient failures in place for a short while."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(
                lambda exc: is_transient(exc) and not isinstance(exc, RetryLaterError)
            ),
            wait=wait_exponential_jitter(
                multiplier=self._policy.initial_s,
                max=self._policy.max_s,
                jitter=self._policy.initial_s,
            ),
            stop=stop_after_delay(self._policy.budget_s),
            reraise=True,
        ):
            with attempt:
                return await self._handler(records)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _unexpected_failure(self, record: Record, error: Exception) -> bool:
        """A bug, probably: retry a few times, then dead-letter the message so the rest flows."""
        key = (record.topic, record.partition, record.offset)
        self._unexpected[key] = self._unexpected.get(key, 0) + 1
        log.error(
            "unexpected failure",
            attempt=self._unexpected[key],
            offset=record.offset,
            correlation_id=header(record.headers, HEADER_CORRELATION_ID),
            exc_info=error,
        )
        if self._unexpected[key] >= self._policy.unexpected_attempts:
            del self._unexpected[key]
            return await self._dead_letter(record, error)
        self._pause(self._policy.initial_s * 2 ** self._unexpected[key])
        return False

    async def _dead_letter(self, record: Record, error: BaseException) -> bool:
        try:
            await self._dead_letters.publish(record, error)
        except Exception as exc:
            log.warning("dead-letter publish failed, will retry", error=repr(exc))
            self._pause(self._policy.pause_s)
            return False
        log.warning(
            "message dead-lettered",
            error=str(error),
            error_type=type(error).__name__,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            correlation_id=header(record.headers, HEADER_CORRELATION_ID),
        )
        MESSAGES.labels(self._name, record.topic, "dead_lettered").inc()
        return True

    def _pause(self, seconds: float) -> None:
        partitions = self._consumer.assignment()
        if partitions:
            self._consumer.pause(*partitions)
        self._resume_at = time.monotonic() + max(seconds, 0.05)
        PAUSED.labels(self._name).set(1)

    def _stay_paused(self) -> None:
        """A rebalance during a pause hands out partitions afresh, unpaused (even the ones this
        instance kept): they would be fetched, and the dependency hit, before the pause ends."""
        unpaused = self._consumer.assignment() - self._consumer.paused()
        if unpaused:
            self._consumer.pause(*unpaused)

    def _resume(self) -> None:
        paused = self._consumer.paused()
        if paused:
            self._consumer.resume(*paused)
        self._resume_at = None
        PAUSED.labels(self._name).set(0)

    def _record_lag(self, positions: dict[TopicPartition, int]) -> None:
        for tp, next_offset in positions.items():
            try:
                highwater = self._consumer.highwater(tp)
            except (AssertionError, IllegalStateError):  # revoked since the commit
                continue
            if highwater is not None:
                LAG.labels(self._name, tp.topic, str(tp.partition)).set(
                    max(0, highwater - next_offset)
                )

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            await self._consumer.commit(
                {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()}
            )
        except (KafkaError, AssertionError) as exc:
            # The work is durable and idempotent: a redelivered message is recognised and skipped.
            log.warning("offset commit failed; messages may be redelivered", error=repr(exc))
