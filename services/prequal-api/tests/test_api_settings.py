"""The API's own settings rules (no server needed)."""

import pytest

from prequal_api.settings import ApiSettings
from prequal_shared.config import load_settings


@pytest.mark.parametrize(
    ("seconds", "accepted"), [("15", False), ("19.9", False), ("20", True), ("60", True)]
)
def test_idle_transactions_must_outlast_the_sweeps_wait_for_kafka(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    seconds: str,
    accepted: bool,
) -> None:
    monkeypatch.setenv("DB_IDLE_IN_TRANSACTION_TIMEOUT_S", seconds)
    if accepted:
        assert load_settings(ApiSettings).db_idle_in_transaction_timeout_s == float(seconds)
        return
    with pytest.raises(SystemExit) as stopped:
        load_settings(ApiSettings)
    assert stopped.value.code == 2
    assert "DB_IDLE_IN_TRANSACTION_TIMEOUT_S" in capsys.readouterr().err
