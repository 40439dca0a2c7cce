"""`agenttask demo`, the README's first command, end to end on a clean checkout."""

from __future__ import annotations

import re
import subprocess
import sys

from ..conftest import ROOT


def test_demo_exits_zero_and_shows_transitions_and_result() -> None:
    done = subprocess.run([sys.executable, "-m", "controller.cli", "demo"], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    phases = [m[1] for line in out.splitlines() if (m := re.match(r"\s+\[\s*[\d.]+s\] (\w+)", line))]
    assert phases[-1] == "Succeeded"
    assert "Running" in phases
    assert "outcome:       ChangesPushed" in out
    assert "changed files: greet.py" in out
    assert '+    return f"Hello, {name}!"' in out
    assert "control plane stopped" in out
