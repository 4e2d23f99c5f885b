"""The bench's load driver: what it asks of vegeta, and that a failed attack ends the run."""

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prequal_devstack.bench import Run, decided_of, drive_vegeta, vegeta_rate


@pytest.mark.parametrize(
    ("rate", "flag"),
    [
        (500, "500/1s"),
        (1000.0, "1000/1s"),
        (2.5, "2500/1000s"),  # not 2/1s: a fractional rate kept
        (0.4, "1/2.5s"),  # not 0/1s, which vegeta takes as "no limit"
        (0.0001, "1/10000s"),
        (1e-9, "1/1000000000s"),  # not 1/1e+09s, which is no Go duration
        (1.0015, "1002/1000s"),
    ],
)
def test_vegeta_rate(rate: float, flag: str) -> None:
    assert vegeta_rate(rate) == flag


def run() -> Run:
    return Run(rate=10, duration=1, concurrency=2, marker="t", since=datetime.now(UTC))


def fake_vegeta(tmp_path: Path, attack_exit: int, encode_exit: int) -> Path:
    binary = tmp_path / "vegeta"
    binary.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = attack ]; then echo "attack: refused" >&2; exit {attack_exit}; fi\n'
        f'echo "encode: unreadable" >&2; exit {encode_exit}\n'
    )
    binary.chmod(0o755)
    return binary


@pytest.mark.parametrize(
    ("attack_exit", "encode_exit", "message"),
    [(1, 0, "vegeta attack failed (1): attack: refused"), (0, 2, "vegeta encode failed (2)")],
)
async def test_a_failed_vegeta_ends_the_run(
    tmp_path: Path, attack_exit: int, encode_exit: int, message: str
) -> None:
    with pytest.raises(SystemExit, match=re.escape(message)):
        await drive_vegeta(
            run(), "http://127.0.0.1:9", fake_vegeta(tmp_path, attack_exit, encode_exit)
        )


@pytest.mark.parametrize(
    ("decided", "stored", "accepted", "shown"),
    [
        (100, 100, 100, "100/100 decided"),
        (98, 100, 100, "98/100 decided"),
        # The generator gave up on some requests that the API still stored and decided.
        (
            120,
            120,
            100,
            "120/120 stored decided; 100 answered 202 in time, the rest stored after the"
            " generator gave up on them",
        ),
        # A 202 whose application is not in the database: lost, and said so.
        (99, 99, 100, "99/100 decided; only 99 of the 202s stored"),
    ],
)
def test_decided_of(decided: int, stored: int, accepted: int, shown: str) -> None:
    assert decided_of({"decided": decided, "stored": stored, "accepted": accepted}) == shown
