import json
import logging

import pytest
import structlog

from prequal_shared.logging import configure_logging


def test_log_lines_are_json_with_no_full_pan_and_no_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(service="test", level="INFO", fmt="json")
    structlog.stdlib.get_logger("t").info(
        "applicant ABCDE1234F submitted", pan_number="FGHIJ5678K", sasl_password="hunter2"
    )
    logging.getLogger("third.party").warning("raw %s", "KLMNO1234P")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 2
    text = json.dumps(lines)
    for pan in ("ABCDE1234F", "FGHIJ5678K", "KLMNO1234P"):
        assert pan not in text
    assert lines[0]["event"] == "applicant ABCDE***4F submitted"
    assert lines[0]["pan_number"] == "FGHIJ***8K"
    assert lines[0]["sasl_password"] == "***"
    assert lines[0]["service"] == "test"
    assert (lines[0]["logger"], lines[0]["level"]) == ("t", "info")
    assert lines[1]["event"] == "raw KLMNO***4P"
    assert (lines[1]["logger"], lines[1]["level"]) == ("third.party", "warning")


def test_an_exception_is_logged_with_its_traceback_and_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(service="test", level="INFO", fmt="json")
    try:
        raise ValueError("bad PAN ABCDE1234F")
    except ValueError:
        structlog.stdlib.get_logger("t").exception("handler failed")
    (line,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert (line["event"], line["level"]) == ("handler failed", "error")
    assert "ValueError: bad PAN ABCDE***4F" in line["exception"]
    assert "ABCDE1234F" not in json.dumps(line)


def test_lines_below_the_level_are_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="test", level="WARNING", fmt="json")
    structlog.stdlib.get_logger("t").info("chatty")
    structlog.stdlib.get_logger("t").warning("kept")
    assert [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()] == ["kept"]


def test_a_line_that_cannot_be_written_does_not_fail_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure_logging(service="test", level="INFO", fmt="json")

    class BrokenPipe:
        def write(self, _: str) -> int:
            raise BrokenPipeError

    monkeypatch.setattr("sys.stderr", BrokenPipe())
    structlog.stdlib.get_logger("t").info("application accepted")  # no exception
