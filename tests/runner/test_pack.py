"""The zipapp: deterministic bytes, the expected layout, and a runner that needs only the stdlib."""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import controller.runner
from controller.runner.pack import PACKAGE, build_zipapp

RUNNER_DIR = Path(controller.runner.__file__).parent


def test_build_is_deterministic() -> None:
    assert build_zipapp() == build_zipapp()


def test_layout() -> None:
    data = build_zipapp()
    archive = zipfile.ZipFile(io.BytesIO(data))
    names = archive.namelist()

    assert data.startswith(b"#!/usr/bin/env python3\n")
    assert names == sorted(names)
    assert names[0] == "__main__.py"
    assert {f"{PACKAGE}/{p.name}" for p in RUNNER_DIR.glob("*.py")} == set(names[1:])
    assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert b"raise SystemExit(main())" in archive.read("__main__.py")


def test_runner_imports_only_the_standard_library() -> None:
    for module in RUNNER_DIR.glob("*.py"):
        tree = ast.parse(module.read_text(), filename=str(module))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level in (0, 1), f"{module.name}: imports from outside the package"
                tops = [] if node.level else [(node.module or "").split(".")[0]]
            else:
                continue
            for top in tops:
                assert top in sys.stdlib_module_names or top == "__future__", f"{module.name} imports {top}"


def test_zipapp_runs_without_site_packages(tmp_path: Path) -> None:
    pyz = tmp_path / "runner.pyz"
    pyz.write_bytes(build_zipapp())

    done = subprocess.run([sys.executable, "-I", "-S", str(pyz)], cwd=tmp_path, capture_output=True,
                          timeout=30, check=False)

    assert done.returncode == 64, done.stderr.decode()
    assert done.stderr.startswith(b"agenttask-runner: failed: ")
