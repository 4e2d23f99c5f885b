"""Vocabulary shared by the API, the events and the database."""

from __future__ import annotations

import re
from enum import StrEnum

PAN_PATTERN = r"^[A-Z]{5}[0-9]{4}[A-Z]$"
_PAN_ANYWHERE = re.compile(r"(?<![A-Z0-9])([A-Z]{5})([0-9]{4})([A-Z])(?![A-Z0-9])")


class ApplicationStatus(StrEnum):
    PENDING = "PENDING"
    PRE_APPROVED = "PRE_APPROVED"
    REJECTED = "REJECTED"
    MANUAL_REVIEW = "MANUAL_REVIEW"

    @property
    def is_terminal(self) -> bool:
        return self is not ApplicationStatus.PENDING


class LoanType(StrEnum):
    PERSONAL = "PERSONAL"
    HOME = "HOME"
    AUTO = "AUTO"
    EDUCATION = "EDUCATION"
    BUSINESS = "BUSINESS"


def mask_pan(pan: str) -> str:
    """`ABCDE1234F` -> `ABCDE***4F`: enough to tell applicants apart in logs, not to identify."""
    if len(pan) != 10:
        return "***"
    return f"{pan[:5]}***{pan[8:]}"


def redact_pans(text: str) -> str:
    """Mask every PAN-shaped token in free text (a safety net for log lines)."""
    if text.islower():
        # No capital letter, so no PAN: most of a log line's values (messages, ids, names of
        # loggers and levels). 0.03 us against the pattern's 0.4-0.5 us a value, which made
        # the safety net a third of a line's cost.
        return text
    return _PAN_ANYWHERE.sub(lambda m: f"{m.group(1)}***{m.group(2)[3]}{m.group(3)}", text)
