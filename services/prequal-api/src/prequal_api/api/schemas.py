"""The HTTP contract: requests are strict, responses never carry the PAN."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from prequal_shared.domain import PAN_PATTERN, ApplicationStatus, LoanType
from prequal_shared.events import Money

# An application is about 200 bytes of JSON (a name of 255 characters, each escaped as
# \uXXXX, is 1.5 kB). Without a limit a client could make the API hold any body in memory.
MAX_BODY_BYTES = 16 * 1024


_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _printable_name(name: str) -> str:
    """No control characters (C0 and C1: PostgreSQL refuses NUL in text, a 500 rather than a
    422), no line or paragraph separators, and no bidirectional overrides, which make a name
    display as other text than it holds. The joiners that Indic scripts write with (U+200C,
    U+200D) are letters' business and stay allowed."""
    for char in name:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI_CONTROLS:
            msg = "the name may not contain control characters, line breaks or direction overrides"
            raise ValueError(msg)
    return name


class ApplicationIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "pan_number": "ABCDE1234F",
                    "applicant_name": "Asha Rao",
                    "monthly_income_inr": 50000,
                    "loan_amount_inr": 200000,
                    "loan_type": "PERSONAL",
                }
            ]
        },
    )

    pan_number: Annotated[
        str, Field(pattern=PAN_PATTERN, description="Indian PAN, e.g. ABCDE1234F")
    ]
    applicant_name: (
        Annotated[
            str,
            StringConstraints(strip_whitespace=True, max_length=255),
            AfterValidator(_printable_name),
            # A name of spaces only is no name: stored as NULL, like one left out.
            AfterValidator(lambda name: name or None),
        ]
        | None
    ) = None
    monthly_income_inr: Annotated[
        Money, Field(description="Monthly income in rupees, up to 2 decimals")
    ]
    loan_amount_inr: Annotated[
        Money, Field(description="Requested amount in rupees, up to 2 decimals")
    ]
    loan_type: LoanType | None = None


class ApplicationAccepted(BaseModel):
    application_id: uuid.UUID
    status: ApplicationStatus = ApplicationStatus.PENDING


class ApplicationStatusOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "application_id": "5f0c6f0e-8d7a-4b9e-9a57-1f0e2f6c3a11",
                    "status": "PRE_APPROVED",
                    "cibil_score": 790,
                    "updated_at": "2026-11-28T10:15:02.123456Z",
                }
            ]
        }
    )

    application_id: uuid.UUID
    status: ApplicationStatus
    cibil_score: int | None
    updated_at: datetime


class Problem(BaseModel):
    detail: str


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """The 422 body: every bad field, without echoing the input."""

    detail: str
    errors: list[FieldError]
