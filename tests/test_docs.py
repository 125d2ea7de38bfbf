"""README.md and RUNBOOK.md stay true to the CLIs: every option their command lines use exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

COMMANDS = ("tts-export", "tts-validate", "tts-run", "tts-build-trt", "tts-serve")


def command_lines():
    for doc in ("README.md", "RUNBOOK.md"):
        text = (REPO / doc).read_text()
        for block in re.findall(r"```(?:sh|bash)?\n(.*?)```", text, re.S):
            for line in block.splitlines():
                line = line.split(" #")[0]  # trailing comments
                for part in line.split("|"):  # pipelines: each side may be a command
                    words = part.split()
                    if words and words[0] in COMMANDS:
                        yield doc, words[0], words[1:]


def help_text(cmd: str) -> str:
    exe = Path(sys.executable).parent / cmd
    return subprocess.run(
        [str(exe), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"},
    ).stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_documented_options_exist(cmd):
    lines = [(doc, args) for doc, c, args in command_lines() if c == cmd]
    assert lines, f"{cmd} is not documented"
    text = help_text(cmd)
    for doc, args in lines:
        for opt in (a.split("=")[0] for a in args if a.startswith("--")):
            assert opt in text, f"{doc}: {cmd} {opt} is not an option ({' '.join(args)})"
