import pytest

from prequal_shared.domain import ApplicationStatus, mask_pan, redact_pans


@pytest.mark.parametrize(
    ("pan", "masked"),
    [("ABCDE1234F", "ABCDE***4F"), ("FGHIJ5678K", "FGHIJ***8K"), ("SHORT", "***"), ("", "***")],
)
def test_mask_pan(pan: str, masked: str) -> None:
    assert mask_pan(pan) == masked


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pan ABCDE1234F here", "pan ABCDE***4F here"),
        ('{"pan_number": "FGHIJ5678K"}', '{"pan_number": "FGHIJ***8K"}'),
        ("two ABCDE1234F,FGHIJ5678K", "two ABCDE***4F,FGHIJ***8K"),
        ("not a pan: XABCDE1234F1", "not a pan: XABCDE1234F1"),
        ("lower abcde1234f stays", "lower abcde1234f stays"),
        ("nothing but lower case", "nothing but lower case"),
        ("ABCDE1234F", "ABCDE***4F"),  # nothing else in the value
        ("0123456789 ABCDE1234F", "0123456789 ABCDE***4F"),  # no lower case at all
        ("abcdeABCDE1234Fabcde", "abcdeABCDE***4Fabcde"),  # inside lower-case text
    ],
)
def test_redact_pans(text: str, expected: str) -> None:
    assert redact_pans(text) == expected


def test_only_pending_is_not_terminal() -> None:
    assert [s for s in ApplicationStatus if not s.is_terminal] == [ApplicationStatus.PENDING]
