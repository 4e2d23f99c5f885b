import subprocess
import sys

import pytest

from prequal_shared.config import CommonSettings, load_settings


def test_defaults_point_at_the_local_stack() -> None:
    settings = CommonSettings(_env_file=None)
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert settings.topic_dlq == "loan_processing_dlq"


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("DATABASE_URL", "mysql://x", "DATABASE_URL"),
        ("KAFKA_BOOTSTRAP_SERVERS", "no-port-here", "KAFKA_BOOTSTRAP_SERVERS"),
        ("DB_POOL_SIZE", "lots", "DB_POOL_SIZE"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL"),
    ],
)
def test_bad_configuration_stops_with_the_setting_named(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    named: str,
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as stopped:
        load_settings(CommonSettings)
    assert stopped.value.code == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize("module", ["prequal_api", "credit_service", "decision_service"])
def test_a_service_refuses_to_start_with_a_bad_value(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module],
        env={"DATABASE_URL": "postgresql://wrong-driver/x", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
