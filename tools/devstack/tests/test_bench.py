"""The bench's load driver: what it asks of oha and reads back, and that a failed run ends
the bench."""

import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prequal_devstack.bench import Run, Sample, decided_of, drive_oha


def run() -> Run:
    return Run(rate=10, duration=1, concurrency=2, marker="t", since=datetime.now(UTC))


# What the bench reads of oha 1.16: the answered requests in a SQLite table (`--db-url`), the
# others counted by kind in its JSON report. The fake answers like oha only when asked for
# latencies counted from when each request was due, which is what makes the load open loop.
FAKE_OHA = """#!{python}
import json, sqlite3, sys
args = sys.argv[1:]
value = lambda flag: args[args.index(flag) + 1]
if "--latency-correction" not in args or value("-q") != "10.0" or value("-n") != "10":
    sys.exit("fake oha: not the open-loop run the bench asks for: " + " ".join(args))
db = sqlite3.connect(value("--db-url"))
db.execute(
    "CREATE TABLE oha (url TEXT NOT NULL, start REAL NOT NULL, start_latency_correction REAL,"
    " end REAL NOT NULL, duration REAL NOT NULL, status INTEGER NOT NULL,"
    " len_bytes INTEGER NOT NULL, run INTEGER NOT NULL)"
)
# Due at 0.1 s, sent at 0.3 s (no connection was free), answered at 0.35 s.
db.execute("INSERT INTO oha VALUES ('/applications', 0.3, 0.1, 0.35, 0.25, 202, 76, 1)")
db.execute("INSERT INTO oha VALUES ('/applications', 0.2, 0.2, 0.21, 0.01, 503, 90, 1)")
db.commit()
report = {{"errorDistribution": {{"timeout": 2, "Connection refused (os error 111)": 1}}}}
open(value("-o"), "w").write(json.dumps(report))
"""


def fake_oha(tmp_path: Path, script: str) -> Path:
    binary = tmp_path / "oha"
    binary.write_text(script)
    binary.chmod(0o755)
    return binary


async def test_oha_results_become_the_runs_samples(tmp_path: Path) -> None:
    ran = run()
    oha = fake_oha(tmp_path, FAKE_OHA.format(python=sys.executable))
    await drive_oha(ran, "http://127.0.0.1:9", oha)
    assert ran.samples == [
        Sample(due=0.1, latency=0.25, status=202),
        Sample(due=0.2, latency=0.01, status=503),
    ]
    assert ran.failures == {"timeout": 2, "Connection refused (os error 111)": 1}
    assert (ran.accepted, ran.sent) == (1, 5)


async def test_a_failed_oha_ends_the_run(tmp_path: Path) -> None:
    oha = fake_oha(tmp_path, '#!/bin/sh\necho "error: refused" >&2; exit 1\n')
    with pytest.raises(SystemExit, match=re.escape("oha failed (1): error: refused")):
        await drive_oha(run(), "http://127.0.0.1:9", oha)


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
