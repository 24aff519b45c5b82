"""The README's snippets run as written: its Python blocks saved as scripts, after `parla demo`
(the first set-up command), and its test command is the one .ci/run runs. A path under /tmp in
a snippet (its fresh `cache_dir`) is moved into the test's own temporary folder: tests write
nowhere else."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import parla

REPO = Path(__file__).resolve().parents[1]
SRC = str(Path(parla.__file__).resolve().parents[1])
README = (REPO / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def in_folder(code: str, folder: Path) -> str:
    """``code`` with each "/tmp/NAME" string naming FOLDER/NAME instead."""
    return re.sub(r'"/tmp/([^"]+)"', lambda match: repr(str(folder / match[1])), code)


def test_the_test_command_is_the_one_ci_runs() -> None:
    commands = [b.strip() for b in blocks("bash") if "pytest" in b]
    assert len(commands) == 1
    assert f"#   {commands[0]}" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


@pytest.mark.slow
def test_the_python_snippets_run_as_scripts(tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": SRC, "PARLA_DISABLE_PROGRESS": "1"}
    demo = subprocess.run([sys.executable, "-m", "parla", "demo", "-q"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr
    snippets = blocks("python")
    assert len(snippets) >= 2
    for number, code in enumerate(snippets):
        script = tmp_path / f"snippet_{number}.py"
        script.write_text(in_folder(code, tmp_path), encoding="utf-8")
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"README snippet {number} failed:\n{code}\n{done.stderr}"
    assert not any('"/tmp/' in in_folder(code, tmp_path) for code in snippets)


def test_a_snippet_s_temporary_folder_is_moved_into_the_test_s(tmp_path: Path) -> None:
    code = 'load("x", cache_dir="/tmp/fresh-cache")'
    assert in_folder(code, tmp_path) == f"load(\"x\", cache_dir={str(tmp_path / 'fresh-cache')!r})"
