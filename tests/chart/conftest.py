"""Fixtures for the shipping tests: the real helm binary (built once by hack/tools.sh into the
user's cache) and a renderer that returns the chart's manifests as parsed objects."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "agenttask-operator"
VALUES_ALL = Path(__file__).resolve().parent / "values-all.yaml"


def tool_path(name: str) -> Path:
    """Build/install the tool if it is missing (cached), then return its path from hack/tools.sh."""
    subprocess.run([str(ROOT / "hack" / "tools.sh"), name], check=True, cwd=ROOT, timeout=1200)
    out = subprocess.run([str(ROOT / "hack" / "tools.sh"), "paths"], check=True, cwd=ROOT, capture_output=True,
                         text=True).stdout
    paths = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    path = Path(paths[name.upper()])
    if not path.is_absolute():
        path = ROOT / path
    assert path.exists(), f"{name} not found at {path}"
    return path


@pytest.fixture(scope="session")
def helm() -> Path:
    return tool_path("helm")


Render = Callable[..., list[dict[str, Any]]]


def run_helm(helm: Path, *args: str, check: bool = True, kubeconfig: Path | None = None,
             ) -> subprocess.CompletedProcess[str]:
    env_args = [f"--kubeconfig={kubeconfig}"] if kubeconfig else []
    done = subprocess.run([str(helm), *args, *env_args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="session")
def render(helm: Path) -> Render:
    def _render(*values_files: Path, sets: tuple[str, ...] = (), namespace: str = "agenttask-system",
                release: str = "agenttask-operator") -> list[dict[str, Any]]:
        args = ["template", release, str(CHART), "--namespace", namespace]
        for f in values_files:
            args += ["-f", str(f)]
        for s in sets:
            args += ["--set", s]
        out = run_helm(helm, *args).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    return _render


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def values_paths() -> list[str]:
    """Dotted paths of values.yaml keys that carry a `# --` comment (the documented ones)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[str] = []
    paths, commented = [], False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            commented = True
            continue
        match = re.match(r"^(\s*)([A-Za-z][\w-]*):", line)
        if not match:
            if not stripped:
                commented = False
            continue
        stack = [*stack[: len(match.group(1)) // 2], match.group(2)]
        if commented:
            paths.append(".".join(stack))
        commented = False
    return paths
