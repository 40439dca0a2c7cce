"""Pure parts of the image builds (controller/images) and the node's host bridge."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.devcluster.bridge import socat_argv
from controller.images import bases, context, podman, sizes


def test_host_mirrors_from_deb822_and_one_line_sources() -> None:
    deb822 = """Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://mirror.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: https://third-party.example/node_20.x
Suites: nodistro
Components: main

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""
    one_line = "deb [arch=amd64] http://other.example/debian bookworm main # comment\n# deb http://x bookworm main\n"
    got = bases.host_mirrors([("debian.sources", deb822), ("extra.list", one_line)])
    assert got == (
        "deb http://mirror.example/debian bookworm main",
        "deb http://mirror.example/debian bookworm-updates main",
        "deb http://mirror.example/debian-security bookworm-security main",
        "deb http://other.example/debian bookworm main",
    )


def test_no_debian_sources_means_the_default_mirrors(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    assert bases.read_host_mirrors(tmp_path) == bases.DEFAULT_MIRRORS


def test_base_key_changes_with_what_makes_the_base() -> None:
    spec = bases.BASES["python-runtime"]
    key = bases.base_key(spec, bases.DEFAULT_MIRRORS)
    assert key == bases.base_key(spec, bases.DEFAULT_MIRRORS)
    assert key != bases.base_key(spec, bases.DEFAULT_MIRRORS[:1])
    assert key != bases.base_key(bases.BASES["python-build"], bases.DEFAULT_MIRRORS)


def test_mmdebstrap_argv_trims_and_merges_usr() -> None:
    argv = bases.mmdebstrap_argv(bases.BASES["python-runtime"], mirrors=["deb http://m/debian bookworm main"],
                                 target=Path("/t/rootfs.tar"), merged_usr_hooks=Path("/hooks"))
    assert argv[:2] == ["mmdebstrap", "--variant=essential"]
    assert "--include=python3,python-is-python3,ca-certificates,passwd" in argv
    assert "--hook-dir=/hooks" in argv
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in argv
    assert argv[-3:] == ["bookworm", "/t/rootfs.tar", "deb http://m/debian bookworm main"]


DOCKERIGNORE = """# only what the Dockerfiles COPY
*
!pyproject.toml
!controller/
**/__pycache__
**/*.pyc
"""


def test_dockerignore_semantics() -> None:
    rules = context.parse_dockerignore(DOCKERIGNORE)
    assert context.included("pyproject.toml", rules)
    assert context.included("controller/runner/main.py", rules)
    assert not context.included("README.md", rules)
    assert not context.included("tests/unit/x.py", rules)
    assert not context.included("controller/__pycache__/x.cpython-311.pyc", rules)
    assert not context.included("controller/runner/__pycache__/y.pyc", rules)
    assert not context.included("controller/z.pyc", rules)
    # `*` stays within one path segment: a nested name is not matched by a top-level glob
    only_top = context.parse_dockerignore("*.md\n")
    assert not context.included("README.md", only_top) and context.included("docs/a.md", only_top)


def test_digest_follows_context_content_only(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text(DOCKERIGNORE)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "controller").mkdir()
    (tmp_path / "controller" / "a.py").write_text("A = 1\n")
    first = context.digest(tmp_path, dockerfile="Dockerfile")
    (tmp_path / "notes.txt").write_text("not in the context")
    (tmp_path / "controller" / "__pycache__").mkdir()
    (tmp_path / "controller" / "__pycache__" / "a.pyc").write_bytes(b"\0")
    assert context.digest(tmp_path, dockerfile="Dockerfile") == first
    (tmp_path / "controller" / "a.py").write_text("A = 2\n")
    assert context.digest(tmp_path, dockerfile="Dockerfile") != first
    assert context.digest(tmp_path, dockerfile="Dockerfile", extra=["base=sha256:1"]) != \
        context.digest(tmp_path, dockerfile="Dockerfile", extra=["base=sha256:2"])


def test_ulimits_never_exceed_the_hard_limits() -> None:
    assert podman.ulimits(nofile_hard=20000, nproc_hard=96365) == ["nofile=20000:20000", "nproc=32768:32768"]
    unlimited = podman.ulimits(nofile_hard=podman.resource.RLIM_INFINITY, nproc_hard=podman.resource.RLIM_INFINITY)
    assert unlimited == ["nofile=1048576:1048576", "nproc=32768:32768"]


def test_podman_configs_keep_everything_under_the_cache(tmp_path: Path) -> None:
    files = podman.render_configs(tmp_path, limits=["nofile=1:1"])
    assert f'graphroot = "{tmp_path}/storage"' in files["storage.conf"]
    assert 'runtime = "runc"' in files["containers.conf"] and 'cgroup_manager = "cgroupfs"' in files["containers.conf"]
    assert files["registries.conf"].strip() == "unqualified-search-registries = []"


def test_size_grouping() -> None:
    entries = [("usr/lib/python3.11/a.py", 10), ("usr/lib/python3.11/json/b.py", 5), ("usr/bin/python3", 7),
               ("etc/passwd", 1), ("top", 2)]
    got = sizes.group(entries, depth=3)
    assert got == {"/usr/lib/python3.11": 15, "/usr/bin": 7, "/etc": 1, "/": 2}


def test_bridge_command_refuses_paths_socat_would_split() -> None:
    argv = socat_argv(netns_file=Path("/tmp/state/netns/net"), listen_port=1234, target_host="127.0.0.1",
                      target_port=6443)
    assert argv[1] == "TCP-LISTEN:1234,bind=127.0.0.1,fork,reuseaddr"
    assert argv[2] == "EXEC:nsenter --net=/tmp/state/netns/net socat STDIO TCP\\:127.0.0.1\\:6443"
    for bad in ("/tmp/a b/net", "/tmp/a,fork/net", "/tmp/a:b/net", "/tmp/$(x)/net"):
        with pytest.raises(ValueError, match="must be plain"):
            socat_argv(netns_file=Path(bad), listen_port=1, target_host="127.0.0.1", target_port=2)
