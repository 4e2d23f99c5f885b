"""Every setting the code reads is in .env.example and in the README's table."""

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from credit_service.settings import CreditSettings
from decision_service.settings import DecisionSettings
from prequal_api.settings import ApiSettings
from prequal_shared.config import CommonSettings

ROOT = Path(__file__).resolve().parents[3]
SETTINGS: list[type[BaseSettings]] = [CommonSettings, ApiSettings, CreditSettings, DecisionSettings]
NAMES = sorted({name.upper() for cls in SETTINGS for name in cls.model_fields})


def env_example_names() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Z][A-Z0-9_]*)=", text, re.MULTILINE)}


@pytest.mark.parametrize("name", NAMES)
def test_setting_is_in_env_example_and_readme(name: str) -> None:
    assert name in env_example_names()
    assert f"| `{name}` |" in (ROOT / "README.md").read_text()


def test_env_example_has_nothing_the_code_does_not_read() -> None:
    assert env_example_names() <= set(NAMES)


def test_env_example_values_are_valid_for_every_service(monkeypatch: pytest.MonkeyPatch) -> None:
    for line in (ROOT / ".env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            name, value = line.split("=", 1)
            monkeypatch.setenv(name, value)
    for cls in SETTINGS:
        cls(_env_file=None)  # raises if a default in the example is invalid
