"""scripts/sync-venv: the venv every command runs in, on which interpreter.

The first test makes a real venv of its own (UV_PROJECT_ENVIRONMENT), offline, from uv's cache,
which the workspace's own sync has filled. The others run a copy of the script in a tree of
their own, with a stand-in `uv` first on PATH that records what it was asked to do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "sync-venv"
PINNED = (ROOT / ".python-version").read_text().strip()


def system_python(version: str) -> Path | None:
    """The interpreter the script should pick for `version`: the system's, if it is whole."""
    path = Path(f"/usr/bin/python{version}")
    if not os.access(path, os.X_OK):
        return None
    whole = subprocess.run(
        [str(path), "-c", "import asyncio, ctypes, sqlite3, ssl"], capture_output=True, check=False
    )
    return path if whole.returncode == 0 else None


def environment(**env: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment.pop("UV_PYTHON", None)
    environment.update(env)
    return environment


def test_the_venv_is_made_on_the_systems_interpreter_of_the_pinned_version(
    tmp_path: Path,
) -> None:
    venv = tmp_path / "venv"
    subprocess.run(
        [str(SCRIPT), "--offline", "--quiet", "--no-install-workspace"],
        env=environment(UV_PROJECT_ENVIRONMENT=str(venv)),
        check=True,
        timeout=120,
    )
    made_on = (venv / "bin" / "python").resolve()
    expected = system_python(PINNED)
    if expected is not None:
        assert made_on == expected.resolve()
    else:  # uv's own choice, of the pinned version
        assert made_on.name.startswith(f"python{PINNED}")


def sync_args(tmp_path: Path, python_version: str | None, **env: str) -> list[str]:
    """What a copy of the script, in a tree whose .python-version holds `python_version` (none:
    no such file), asks `uv` to do."""
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy2(SCRIPT, tree / "scripts" / "sync-venv")
    if python_version is not None:
        (tree / ".python-version").write_text(python_version)
    stand_in = tmp_path / "bin" / "uv"
    stand_in.parent.mkdir()
    calls = tmp_path / "calls"
    stand_in.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    stand_in.chmod(0o755)
    subprocess.run(
        [str(tree / "scripts" / "sync-venv"), "--quiet"],
        env=environment(PATH=f"{stand_in.parent}:{os.environ['PATH']}", **env),
        check=True,
        timeout=30,
    )
    (call,) = calls.read_text().splitlines()
    return call.split()


@pytest.mark.parametrize(
    "python_version",
    [PINNED, f"{PINNED}\n", f"{PINNED}.99\n", f"# the services' interpreter\n{PINNED}\n"],
    ids=["bare", "line", "with-patch", "after-a-comment"],
)
def test_the_pinned_version_is_read_as_major_minor(tmp_path: Path, python_version: str) -> None:
    expected = system_python(PINNED)
    chosen = ["--python", str(expected)] if expected is not None else []
    assert sync_args(tmp_path, python_version) == [
        "sync",
        "--frozen",
        "--all-packages",
        *chosen,
        "--quiet",
    ]


def test_without_a_pinned_version_uv_chooses(tmp_path: Path) -> None:
    assert sync_args(tmp_path, None) == ["sync", "--frozen", "--all-packages", "--quiet"]


def test_uv_python_chooses_instead(tmp_path: Path) -> None:
    # uv reads UV_PYTHON itself; a --python from the script would override it.
    args = sync_args(tmp_path, PINNED, UV_PYTHON="/opt/python/bin/python3.11")
    assert args == ["sync", "--frozen", "--all-packages", "--quiet"]
