"""docs/ stays true: every setting and Helm value is documented, the CRD reference is generated
from the CRD, links resolve, and the install commands of docs/install.md run as written against a
real kube-apiserver with the real helm and kubectl."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from controller.devcluster import DevCluster
from controller.settings import Settings

from .conftest import ROOT, values_paths
from .settings_map import env_names, helm_value

DOCS = ROOT / "docs"


def test_configuration_lists_every_operator_setting() -> None:
    text = (DOCS / "configuration.md").read_text()
    rows = {line for line in text.splitlines() if line.startswith("| `")}
    missing = []
    for field in Settings.model_fields:
        env = env_names(field)
        value = helm_value(field)
        row = [r for r in rows if r.startswith(f"| `{env[0]}`")]
        if not row or (value is not None and f"`{value}`" not in row[0]):
            missing.append(f"{field} ({env[0]}, Helm {value})")
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_configuration_lists_every_helm_value() -> None:
    text = (DOCS / "configuration.md").read_text()
    paths = values_paths()
    assert len(paths) > 60
    missing = [p for p in paths if f"| `{p}` |" not in text]
    assert not missing, f"Helm values missing from docs/configuration.md: {missing}"


def test_crd_reference_is_generated_from_the_crd() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "hack" / "gen-crd-docs.py")], capture_output=True, text=True,
                          check=True, timeout=60)
    assert (DOCS / "reference" / "agenttask.md").read_text() == done.stdout, (
        "docs/reference/agenttask.md is stale: run `python3 hack/gen-crd-docs.py --write`")
    crd = yaml.safe_load((ROOT / "crds" / "agenttask.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for field in spec:
        assert f"`spec.{field}`" in done.stdout


def test_relative_links_resolve() -> None:
    broken = []
    for page in DOCS.rglob("*.md"):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


# ------------------------------------------------------------------------- install, as documented


def install_blocks() -> dict[str, str]:
    """`<!-- test: NAME -->` followed by a ```sh block in docs/install.md."""
    text = (DOCS / "install.md").read_text()
    blocks = dict(re.findall(r"<!-- test: ([\w-]+) -->\n```sh\n(.*?)```", text, re.S))
    assert {"helm-install", "first-task", "template-apply"} <= set(blocks)  # local-node*: tests/node
    return blocks


@pytest.fixture(scope="module")
def fresh_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """An empty control plane: the docs start from nothing, and use fixed names."""
    cluster = DevCluster(state_dir=tmp_path_factory.mktemp("docs-controlplane"), owned=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_install_commands_run_as_written(fresh_cluster: DevCluster, helm: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "helm").symlink_to(helm)
    (bin_dir / "kubectl").symlink_to(fresh_cluster.kubectl)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "KUBECONFIG": str(fresh_cluster.kubeconfig),
           "DAYTONA_API_KEY": "dk-from-the-docs-test", "HOME": str(tmp_path)}
    work = tmp_path / "checkout"  # the commands run from a checkout; they write agenttask-operator.yaml there
    work.mkdir()
    for name in ("charts", "examples", "crds"):
        (work / name).symlink_to(ROOT / name)

    def run(script: str) -> str:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env, capture_output=True,
                              text=True, timeout=180)
        assert done.returncode == 0, f"documented commands failed:\n{script}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    blocks = install_blocks()
    out = run(blocks["helm-install"])
    assert "STATUS: deployed" in out
    assert "Next steps:" in out  # NOTES.txt
    assert out.rstrip().endswith("yes")  # the operator's ServiceAccount may write task status
    kubectl = [str(fresh_cluster.kubectl), f"--kubeconfig={fresh_cluster.kubeconfig}"]
    deployment = yaml.safe_load(subprocess.run([*kubectl, "-n", "agenttask-system", "get", "deployment",
                                                "agenttask-operator", "-o", "yaml"], capture_output=True,
                                               text=True, check=True).stdout)
    env_vars = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env_vars["DAYTONA_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "daytona", "key": "api-key"}
    assert env_vars["AGENTTASK_DEFAULT_SNAPSHOT"]["value"] == "agenttask-agent"
    secret = subprocess.run([*kubectl, "-n", "agenttask-system", "get", "secret", "daytona", "-o",
                             "jsonpath={.data.api-key}"], capture_output=True, text=True, check=True).stdout
    assert secret  # the key lives in the Secret the docs created, and nowhere in the release
    manifest = subprocess.run([str(helm), "get", "manifest", "agenttask-operator", "-n", "agenttask-system"],
                              capture_output=True, text=True, check=True, env=env).stdout
    assert "dk-from-the-docs-test" not in manifest

    out = run(blocks["first-task"])
    assert "fix-issue-1" in out

    subprocess.run([str(helm), "uninstall", "agenttask-operator", "-n", "agenttask-system"],
                   capture_output=True, text=True, check=True, env=env)
    out = run(blocks["template-apply"])
    assert "agenttask-operator" in out
    assert (work / "agenttask-operator.yaml").exists()
