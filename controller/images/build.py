"""Build the project's images with podman, once per content: operator, agent and the node's pause.

An image is tagged `localhost/agenttask-<name>:<hash>`, where the hash covers its Dockerfile, every
file of its build context (`context.py`), the ids of the base images and the recipe; the same
inputs never build twice, and a changed file always does. `:dev` points at the newest build.
`archive()` writes the docker-archive that the node's containerd imports. After a build only the
newest `KEEP_VERSIONS` builds of that image are kept.

Builds reach the package indexes (PyPI, npm, Debian) through the host network (`--network host`,
no bridge is created) and never a registry (`--pull never`: every base is local, see `bases.py`).
The host's TLS trust and pip configuration are mounted read-only into the build containers
while they run (`BUILD_MOUNTS`): a mount is not a layer, so nothing of them ends up in an image.
Concurrent builders serialise on a lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import bases, context
from .podman import Podman, PodmanError

ROOT = Path(__file__).resolve().parents[2]
RECIPE_VERSION = "1"
KEEP_VERSIONS = 3  # builds kept per image (the newest); older ones are removed after a build
# host file -> path in the build container, mounted read-only when the host has it
BUILD_MOUNTS = (
    ("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-certificates.crt"),
    ("/etc/pip.conf", "/etc/pip.conf"),
)


@dataclass(frozen=True)
class Recipe:
    name: str
    dockerfile: str  # relative to the context
    bases: dict[str, str] = field(default_factory=dict)  # build ARG -> local base (bases.BASES)

    @property
    def repository(self) -> str:
        return f"localhost/agenttask-{self.name}"


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("operator", "Dockerfile", {"PYTHON_IMAGE": "python-build", "RUNTIME_IMAGE": "python-runtime"}),
    Recipe("agent", "images/agent/Dockerfile.slim",
           {"PYTHON_IMAGE": "python-build", "NODE_IMAGE": "node", "BASE_IMAGE": "debian"}),
    Recipe("pause", "images/pause/Dockerfile"),
)}


@dataclass(frozen=True)
class Built:
    name: str
    ref: str
    size: int
    seconds: float  # 0 when it was already there
    built: bool


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def mounts(available: Callable[[str], bool] = lambda p: Path(p).is_file()) -> list[str]:
    return [f"--volume={host}:{inside}:ro" for host, inside in BUILD_MOUNTS if available(host)]


def build_argv(recipe: Recipe, *, ref: str, context_dir: Path, base_refs: dict[str, str],
               volumes: list[str]) -> list[str]:
    argv = ["build", "--pull=never", "--network=host", "--layers", "--force-rm",
            f"--file={context_dir / recipe.dockerfile}"]
    argv += [f"--build-arg={arg}={base_refs[arg]}" for arg in sorted(base_refs)]
    argv += volumes
    return [*argv, f"--tag={ref}", f"--tag={recipe.repository}:dev", str(context_dir)]


def _pause_context(tmp: Path) -> Path:
    """The pause image's context: its Dockerfile and the static binary built from images/pause."""
    go = shutil.which("go")
    if go is None:
        raise PodmanError("the Go toolchain builds the node's pause binary (go not on PATH)")
    ctx = tmp / "pause"
    (ctx / "images" / "pause").mkdir(parents=True)
    shutil.copy(ROOT / "images" / "pause" / "Dockerfile", ctx / "images" / "pause" / "Dockerfile")
    done = subprocess.run([go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(ctx / "pause"), "."],
                          cwd=ROOT / "images" / "pause",
                          env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"},
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PodmanError(f"go build of images/pause failed:\n{done.stderr[-3000:]}")
    return ctx


def _ref(podman: Podman, recipe: Recipe, base_refs: dict[str, str], root: Path) -> str:
    base_ids = [f"{arg}={podman.image_id(ref)}" for arg, ref in sorted(base_refs.items())]
    pause = recipe.name == "pause"
    digest = context.digest(root / "images" / "pause" if pause else root,
                            dockerfile="Dockerfile" if pause else recipe.dockerfile,
                            extra=[RECIPE_VERSION, *base_ids])[:16]
    return f"{recipe.repository}:{digest}"


def ensure_image(name: str, *, podman: Podman | None = None, log: Callable[[str], None] = lambda _m: None,
                 root: Path = ROOT) -> Built:
    """The image `name` (operator, agent, pause), built first when its content changed."""
    podman = podman or Podman.default()
    recipe = RECIPES[name]
    # without the lock when nothing is to be built, so a running build elsewhere does not block this
    known = {arg: bases.existing_base(podman, base) for arg, base in recipe.bases.items()}
    if all(known.values()):
        ref = _ref(podman, recipe, {arg: str(r) for arg, r in known.items()}, root)
        if podman.exists(ref):
            podman.run("tag", ref, f"{recipe.repository}:dev")
            return Built(name, ref, podman.size(ref), 0.0, False)
    with _lock(podman.root / ".build.lock"):
        base_refs = {arg: bases.ensure_base(podman, base, log=log) for arg, base in recipe.bases.items()}
        ref = _ref(podman, recipe, base_refs, root)
        if podman.exists(ref):
            podman.run("tag", ref, f"{recipe.repository}:dev")
            return Built(name, ref, podman.size(ref), 0.0, False)
        digest = ref.rsplit(":", 1)[1]
        logs = podman.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        logfile = logs / f"{name}-{digest}.log"
        log(f"building {ref} from {recipe.dockerfile} (log: {logfile})")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=podman.root, prefix=".ctx-") as tmp:
            ctx = _pause_context(Path(tmp)) if name == "pause" else root
            podman.run(*build_argv(recipe, ref=ref, context_dir=ctx, base_refs=base_refs, volumes=mounts()),
                       log=logfile)
        seconds = time.monotonic() - started
        size = podman.size(ref)
        log(f"built {ref} in {seconds:.0f}s: {size / 1e6:.0f} MB")
        prune(podman, recipe, keep=KEEP_VERSIONS)
        return Built(name, ref, size, seconds, True)


def prune(podman: Podman, recipe: Recipe, *, keep: int) -> list[str]:
    """Remove all but the newest `keep` builds of `recipe` (and their archives); what was removed.
    Build-stage layers stay: they are the cache that makes the next build fast."""
    listing = json.loads(podman.run("images", "--format=json", f"--filter=reference={recipe.repository}"))
    versions: dict[str, int] = {}
    for image in listing:
        for tag in image.get("Names") or []:
            if tag.startswith(f"{recipe.repository}:") and not tag.endswith(":dev"):
                versions[tag] = int(image.get("Created") or 0)
    old = sorted(versions, key=lambda t: versions[t], reverse=True)[keep:]
    for tag in old:
        podman.run("rmi", "--force", tag)
        _archive_path(podman, tag).unlink(missing_ok=True)
    return old


def _archive_path(podman: Podman, ref: str) -> Path:
    return podman.root / "archives" / (ref.removeprefix("localhost/").replace(":", "-").replace("/", "-") + ".tar")


def archive(ref: str, *, podman: Podman | None = None) -> Path:
    """A docker-archive of `ref` (for `ctr images import`), written once per tag."""
    podman = podman or Podman.default()
    target = _archive_path(podman, ref)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    podman.run("save", "--format=docker-archive", f"--output={partial}", ref)
    partial.rename(target)
    return target
