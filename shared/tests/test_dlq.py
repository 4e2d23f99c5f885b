"""Replaying dead letters, on the real broker."""

import asyncio
import dataclasses
import json
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from prequal_devstack.testing import (
    StackInfo,
    TopicFactory,
    delete_records,
    free_port,
    produce,
    read_topic,
    run_dlq_cli,
)
from prequal_shared.config import CommonSettings
from prequal_shared.dlq import DeadLetter, replay
from prequal_shared.kafka import (
    DLQ_FAILED_AT,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_TOPIC,
    DLQ_VALUE_OMITTED,
    source_key,
)


@pytest.mark.parametrize(
    ("value", "key", "omitted", "replayed"),
    [
        (b"m1", b"k", False, True),
        (None, b"k", False, True),  # a tombstone goes back as it came
        # Too large for the DLQ: dead-lettered without its value, which is still at the source.
        (None, b"k", True, False),
        # It had neither key nor value: its key in the DLQ was made up, and Kafka's client
        # cannot send it back without one.
        (None, None, False, False),
    ],
)
async def test_only_a_letter_with_something_to_send_back_is_replayed(
    stack: StackInfo,
    topics: TopicFactory,
    value: bytes | None,
    key: bytes | None,
    omitted: bool,
    replayed: bool,
) -> None:
    source = await topics.create("source")
    headers: list[tuple[str, bytes | None]] = [
        (DLQ_SOURCE_TOPIC, source.encode()),
        (DLQ_SOURCE_PARTITION, b"0"),
        (DLQ_SOURCE_OFFSET, b"5"),
    ]
    if omitted:
        headers.append((DLQ_VALUE_OMITTED, b"value and headers, 1047505 bytes: too large"))
    letter = DeadLetter(
        partition=0,
        offset=0,
        key=key or source_key(source, 0, 5),
        value=value,
        headers=headers,
        timestamp_ms=0,
    )
    settings = CommonSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)

    done = await replay(settings, [letter])

    assert done == ([letter] if replayed else [])
    sent = await read_topic(stack.kafka_bootstrap_servers, source, count=1, timeout_s=3)
    assert [(r.key, r.value) for r in sent] == ([(key, value)] if replayed else [])


def replay_all(stack: StackInfo, dlq: str) -> subprocess.CompletedProcess[str]:
    return run_dlq_cli(stack, "replay", "--all", dlq_topic=dlq)


async def test_replay_all_sends_each_letter_once_across_runs(
    stack: StackInfo, topics: TopicFactory
) -> None:
    """`--all` replayed the whole DLQ every time: what was replayed before went again, and
    a message still failing came back each time beside the letter it came from, so every run
    doubled them."""
    source, dlq = await topics.create("source"), await topics.create("dlq")

    def letter(value: bytes) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        return (b"k", value, [(DLQ_SOURCE_TOPIC, source.encode())])

    await produce(stack.kafka_bootstrap_servers, dlq, letter(b"m1"), letter(b"m2"))
    first = await asyncio.to_thread(replay_all, stack, dlq)
    assert first.stdout.splitlines() == [f"replayed 0:0 -> {source}", f"replayed 0:1 -> {source}"]
    # One of them failed again and is back in the DLQ.
    await produce(stack.kafka_bootstrap_servers, dlq, letter(b"m2"))
    second = await asyncio.to_thread(replay_all, stack, dlq)
    assert second.stdout.splitlines() == [f"replayed 0:2 -> {source}"]
    third = await asyncio.to_thread(replay_all, stack, dlq)
    assert third.stdout == ""
    assert "0 message(s) replayed" in third.stderr

    sent = await read_topic(stack.kafka_bootstrap_servers, source, count=3)
    assert [record.value for record in sent] == [b"m1", b"m2", b"m2"]
    everything = await read_topic(stack.kafka_bootstrap_servers, source, count=4, timeout_s=2)
    assert len(everything) == 3


async def test_replay_all_resumes_at_the_oldest_letter_left_after_a_deletion(
    stack: StackInfo, topics: TopicFactory
) -> None:
    """Its place (after letter 0:0) was deleted with the letters before 0:2: the next run read
    from the end of the partition instead, and never replayed the letters still there."""
    source, dlq = await topics.create("source"), await topics.create("dlq")
    letter = (b"k", b"m", [(DLQ_SOURCE_TOPIC, source.encode())])
    await produce(stack.kafka_bootstrap_servers, dlq, letter)
    await asyncio.to_thread(replay_all, stack, dlq)
    await produce(stack.kafka_bootstrap_servers, dlq, letter, letter, letter)
    await delete_records(stack.kafka_bootstrap_servers, dlq, 0, before=2)

    again = await asyncio.to_thread(replay_all, stack, dlq)

    assert again.stdout.splitlines() == [f"replayed 0:2 -> {source}", f"replayed 0:3 -> {source}"]


async def test_list_shows_a_letter_whose_headers_are_not_ours(
    stack: StackInfo, topics: TopicFactory
) -> None:
    """Anyone who can write to the DLQ can put anything in its headers; a time or a partition
    that does not parse crashed `list` for every letter."""
    dlq = await topics.create("dlq")
    headers = [
        (DLQ_SOURCE_TOPIC, b"loan_applications_submitted"),
        (DLQ_SOURCE_PARTITION, b"first"),
        (DLQ_SOURCE_OFFSET, b"5"),
        (DLQ_FAILED_AT, b"yesterday"),
    ]
    await produce(stack.kafka_bootstrap_servers, dlq, (b"k", b"m", headers))

    listed = await asyncio.to_thread(run_dlq_cli, stack, "list", "--json", dlq_topic=dlq)

    [letter] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert letter["id"] == "0:0"
    assert letter["source"] == "loan_applications_submitted[first]@5"
    # The message's own Kafka timestamp stands in for the time that does not parse.
    assert abs(datetime.fromisoformat(letter["failed_at"]) - datetime.now(UTC)) < timedelta(
        minutes=1
    )


async def test_show_prints_a_header_whose_value_is_null(
    stack: StackInfo, topics: TopicFactory
) -> None:
    """Kafka lets a header's value be null, and a poison message keeps its headers in the
    DLQ: `show` ended in a traceback on such a letter."""
    dlq = await topics.create("dlq")
    headers: list[tuple[str, bytes | None]] = [(DLQ_SOURCE_TOPIC, b"t"), ("trace", None)]
    await produce(stack.kafka_bootstrap_servers, dlq, (b"k", b"m", headers))

    shown = await asyncio.to_thread(run_dlq_cli, stack, "show", "0:0", dlq_topic=dlq)

    assert "header:     trace=(null)" in shown.stdout.splitlines()


async def test_an_unreachable_kafka_is_reported_in_a_line(stack: StackInfo) -> None:
    unreachable = dataclasses.replace(stack, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")

    listed = await asyncio.to_thread(run_dlq_cli, unreachable, "list", check=False)

    assert listed.returncode == 1
    assert "Error: could not read loan_processing_dlq from Kafka at 127.0.0.1:" in listed.stderr
    assert "Traceback" not in listed.stderr


async def test_a_letter_whose_source_partition_is_not_a_number_is_replayed(
    stack: StackInfo, topics: TopicFactory
) -> None:
    """A tombstone with its own key goes back; the partition header that does not parse
    (`int("first")`) stopped the replay before it."""
    source = await topics.create("source")
    letter = DeadLetter(
        partition=0,
        offset=0,
        key=b"k",
        value=None,
        headers=[(DLQ_SOURCE_TOPIC, source.encode()), (DLQ_SOURCE_PARTITION, b"first")],
        timestamp_ms=0,
    )
    settings = CommonSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)

    assert await replay(settings, [letter]) == [letter]
    [sent] = await read_topic(stack.kafka_bootstrap_servers, source, count=1)
    assert (sent.key, sent.value) == (b"k", None)


@pytest.mark.parametrize(
    ("failed_at", "timestamp_ms", "shown"),
    [
        (b"2026-11-28T10:15:02+00:00", 0, datetime(2026, 11, 28, 10, 15, 2, tzinfo=UTC)),
        (b"2026-11-28T10:15:02", 0, datetime(2026, 11, 28, 10, 15, 2, tzinfo=UTC)),
        (b"yesterday", 1_795_000_000_000, datetime.fromtimestamp(1_795_000_000, tz=UTC)),
        (b"yesterday", 2**62, datetime.fromtimestamp(0, tz=UTC)),  # past the year 9999
    ],
)
def test_failed_at_falls_back_to_what_can_be_shown(
    failed_at: bytes, timestamp_ms: int, shown: datetime
) -> None:
    letter = DeadLetter(
        partition=0,
        offset=0,
        key=b"k",
        value=b"m",
        headers=[(DLQ_FAILED_AT, failed_at)],
        timestamp_ms=timestamp_ms,
    )
    assert letter.failed_at == shown
