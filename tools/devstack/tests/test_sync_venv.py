"""scripts/sync-venv: the venv every command runs in, on which interpreter.

Each test makes a venv of its own (UV_PROJECT_ENVIRONMENT), offline, from uv's cache, which the
workspace's own sync has filled.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "sync-venv"
PINNED = (ROOT / ".python-version").read_text().strip()
SYSTEM_PYTHON = Path(f"/usr/bin/python{PINNED}")


def sync(venv: Path, **env: str) -> Path:
    """Runs the script for a venv at `venv`; returns the interpreter the venv was made on."""
    environment = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    environment.pop("UV_PYTHON", None)
    environment.update(env)
    subprocess.run(
        [str(SCRIPT), "--offline", "--quiet", "--no-install-workspace"],
        env=environment,
        check=True,
        timeout=120,
    )
    return (venv / "bin" / "python").resolve()


def test_the_venv_is_made_on_the_systems_interpreter_of_the_pinned_version(
    tmp_path: Path,
) -> None:
    made_on = sync(tmp_path / "venv")
    if SYSTEM_PYTHON.exists():
        assert made_on == SYSTEM_PYTHON.resolve()
    else:  # uv's own choice, of the pinned version
        assert made_on.name.startswith(f"python{PINNED}")


def test_uv_python_chooses_another_and_a_venv_on_another_interpreter_is_made_again(
    tmp_path: Path,
) -> None:
    # Another interpreter: a copy of the one running the tests, elsewhere (CPython finds its
    # standard library from where it was built).
    other = tmp_path / "elsewhere" / "bin" / f"python{PINNED}"
    other.parent.mkdir(parents=True)
    shutil.copy2(Path(sys.executable).resolve(), other)  # the venv's python links to it
    venv = tmp_path / "venv"
    assert sync(venv, UV_PYTHON=str(other)) == other
    if SYSTEM_PYTHON.exists():
        assert sync(venv) == SYSTEM_PYTHON.resolve()
