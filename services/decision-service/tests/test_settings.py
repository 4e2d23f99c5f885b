"""The decision service's own settings (no server needed)."""

import pytest

from decision_service.settings import DecisionSettings
from prequal_shared.config import load_settings


def test_a_consumer_group_longer_than_its_column_stops_the_service_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DECISION_CONSUMER_GROUP", "g" * 64)
    assert load_settings(DecisionSettings).decision_consumer_group == "g" * 64
    monkeypatch.setenv("DECISION_CONSUMER_GROUP", "g" * 65)
    with pytest.raises(SystemExit) as stopped:
        load_settings(DecisionSettings)
    assert stopped.value.code == 2
    assert "DECISION_CONSUMER_GROUP" in capsys.readouterr().err
