"""Replaying dead letters, on the real broker."""

import pytest

from prequal_devstack.testing import StackInfo, TopicFactory, read_topic
from prequal_shared.config import CommonSettings
from prequal_shared.dlq import DeadLetter, replay
from prequal_shared.kafka import DLQ_SOURCE_TOPIC, DLQ_VALUE_OMITTED


@pytest.mark.parametrize(
    ("value", "omitted", "replayed"),
    [
        (b"m1", False, True),
        # Too large for the DLQ: dead-lettered without its value, which is still at the source.
        (None, True, False),
    ],
)
async def test_only_a_letter_with_its_value_is_replayed(
    stack: StackInfo, topics: TopicFactory, value: bytes | None, omitted: bool, replayed: bool
) -> None:
    source = await topics.create("source")
    headers = [(DLQ_SOURCE_TOPIC, source.encode())]
    if omitted:
        headers.append((DLQ_VALUE_OMITTED, b"value and headers, 1047505 bytes: too large"))
    letter = DeadLetter(id="0:0", key=b"k", value=value, headers=headers, timestamp_ms=0)
    settings = CommonSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)

    done = await replay(settings, [letter])

    assert done == ([letter] if replayed else [])
    sent = await read_topic(stack.kafka_bootstrap_servers, source, count=1, timeout_s=3)
    assert [r.value for r in sent] == ([value] if replayed else [])
