import itertools
import time
import uuid

import pytest

from prequal_shared.ids import derived_id, new_id

RANDOM_BITS = [*range(62), *range(64, 76)]  # rand_b, then rand_a (RFC 9562, section 5.7)
NAMESPACE = uuid.UUID("6f1c3c4e-61a4-4c1e-9a43-3f1b1f0c2a55")


def at_millis(monkeypatch: pytest.MonkeyPatch, millis: int) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: millis * 1_000_000 + 999_999)


def test_new_id_is_version_7_stamped_with_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000
    assert (made.version, made.variant) == (7, uuid.RFC_4122)
    assert before <= made.int >> 80 <= after


@pytest.mark.parametrize(
    ("earlier_ms", "later_ms"),
    [(0, 1), (1_764_300_000_000, 1_764_300_000_001), (1_764_300_000_000, 1_764_386_400_000)],
)
def test_ids_sort_by_the_millisecond_they_were_made_in(
    monkeypatch: pytest.MonkeyPatch, earlier_ms: int, later_ms: int
) -> None:
    at_millis(monkeypatch, earlier_ms)
    earlier = [new_id() for _ in range(200)]
    at_millis(monkeypatch, later_ms)
    later = [new_id() for _ in range(200)]
    assert max(earlier) < min(later)
    assert max(str(i) for i in earlier) < min(str(i) for i in later)  # as text, too


def test_ids_of_one_millisecond_share_no_counter_all_74_bits_are_random(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    at_millis(monkeypatch, 1_764_300_000_000)
    made = [new_id() for _ in range(5_000)]
    assert len(set(made)) == len(made)
    for bit in RANDOM_BITS:
        assert len({i.int >> bit & 1 for i in made}) == 2, f"bit {bit} never changes"
    # Neighbours in time are not neighbours in value (a counter would make them so).
    assert sum(abs(b.int - a.int) < 1 << 40 for a, b in itertools.pairwise(made)) < 5


def test_derived_id_is_deterministic_and_ordered_like_its_source() -> None:
    source = new_id()
    derived = derived_id(source, NAMESPACE)
    assert derived == derived_id(uuid.UUID(str(source)), NAMESPACE)
    assert (derived.version, derived.variant) == (8, uuid.RFC_4122)
    assert derived.int >> 80 == source.int >> 80
    assert derived != source
    assert derived != derived_id(source, uuid.UUID(int=NAMESPACE.int + 1))
    assert derived != derived_id(uuid.UUID(int=source.int ^ 1), NAMESPACE)


def test_derived_ids_keep_the_order_of_sources_from_different_milliseconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sources = []
    for millis in (1_764_300_000_000, 1_764_300_000_001, 1_764_300_000_100):
        at_millis(monkeypatch, millis)
        sources.append(new_id())
    derived = [derived_id(source, NAMESPACE) for source in sources]
    assert derived == sorted(derived)


def test_derived_id_does_not_change_between_releases() -> None:
    """The decision service recognises a replayed report by this id: a release that derived
    another id from the same application event would let a duplicate through as new."""
    source = uuid.UUID("01a2207c-5ed1-7c49-9543-e9623f3c0c64")
    assert derived_id(source, NAMESPACE) == uuid.UUID("01a2207c-5ed1-89d1-8ffd-8b0fbd6a52da")
