"""Base images made locally with mmdebstrap, for machines that reach Debian but no image registry.

The Dockerfiles default to registry images (`python:3.11-slim-bookworm`, `node:22-bookworm-slim`,
`debian:bookworm-slim`); `agenttask images build` passes these local stand-ins instead. Each is a
Debian bookworm root file system from the host's Debian mirror, imported into the project's
podman (`podman.py`) and tagged by a hash of everything that made it, so it is built once:

- `python-build`: minbase + python3 (also as `python`), venv and pip: the build stages (wheels, virtualenv, runner);
- `python-runtime`: only the Essential packages + python3 (also as `python`, which the virtualenv
  links to), ca-certificates and passwd (useradd):
  the operator's final stage, with no pip, no venv tooling and no apt;
- `debian`: minbase + ca-certificates (apt, for the agent image's `apt-get install`);
- `node`: minbase + Debian's nodejs and npm: only the stage that fetches Claude Code from npm.

All of them leave out documentation, man pages, locales and apt lists (dpkg path filters, which
also apply to packages installed later in a Dockerfile), keep no apt caches (as Docker's Debian
images: packages installed in a Dockerfile leave no .deb files behind), and merge /usr with directory symlinks
as Debian's own images do, instead of the `usrmerge` package (which pulls in 50 MB of perl).
This module does not build the project's images (`build.py`).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .podman import Podman, PodmanError

SUITE = "bookworm"
DEFAULT_MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/merged-usr")
TRIM = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
)
# what Docker's Debian images configure: apt keeps no downloaded packages and no binary caches
_CLEAN = '"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true";'
APT_CLEAN = (
    f"DPkg::Post-Invoke {{ {_CLEAN} }}",
    f"APT::Update::Post-Invoke {{ {_CLEAN} }}",
    'Dir::Cache::pkgcache ""',
    'Dir::Cache::srcpkgcache ""',
)
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RECIPE_VERSION = "1"  # bump to rebuild every base


@dataclass(frozen=True)
class BaseSpec:
    name: str
    variant: str
    include: tuple[str, ...]
    cmd: tuple[str, ...]
    exclude: tuple[str, ...] = ()  # more dpkg path filters


BASES: dict[str, BaseSpec] = {b.name: b for b in (
    BaseSpec("python-build", "minbase",
             ("python3", "python-is-python3", "python3-venv", "python3-pip", "ca-certificates"), ("python3",)),
    # glibc's iconv modules (8 MB): Python's codecs do not use them
    BaseSpec("python-runtime", "essential", ("python3", "python-is-python3", "ca-certificates", "passwd"), ("python3",),
             ("path-exclude=/usr/lib/*/gconv/*", "path-include=/usr/lib/*/gconv/gconv-modules*")),
    # ca-certificates already here: the build mounts the host's bundle over its file, which the
    # package's postinst could not replace ("Device or resource busy")
    BaseSpec("debian", "minbase", ("ca-certificates",), ("bash",)),
    BaseSpec("node", "minbase", ("nodejs", "npm", "ca-certificates"), ("node",)),
)}


def host_mirrors(texts: Iterable[tuple[str, str]], suite: str = SUITE) -> tuple[str, ...]:
    """One-line `deb URI SUITE main` entries for `suite`, -updates and -security found in apt
    sources (pairs of file name and text: `*.list` one-line style or `*.sources` deb822)."""
    wanted = {suite, f"{suite}-updates", f"{suite}-security"}
    found: list[str] = []

    def add(types: list[str], uris: list[str], suites: list[str], components: list[str]) -> None:
        if "deb" not in types or "main" not in components:
            return
        for uri in uris:
            for s in suites:
                entry = f"deb {uri} {s} main"
                if s in wanted and entry not in found:
                    found.append(entry)

    for name, text in texts:
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, list[str]] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[0].isspace():
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.split()
                if fields.get("enabled", ["yes"])[0].lower() == "no":
                    continue
                add(fields.get("types", []), fields.get("uris", []), fields.get("suites", []),
                    fields.get("components", []))
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()  # drop [options]
                if len(words) >= 4:
                    add([words[0]], [words[1]], [words[2]], words[3:])
    return tuple(found)


def read_host_mirrors(etc: Path = Path("/etc/apt")) -> tuple[str, ...]:
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list")),
             *sorted((etc / "sources.list.d").glob("*.sources"))]
    texts = [(p.name, p.read_text(errors="replace")) for p in files if p.is_file()]
    return host_mirrors(texts) or DEFAULT_MIRRORS


def mmdebstrap_argv(spec: BaseSpec, *, mirrors: Iterable[str], target: Path, merged_usr_hooks: Path | None
                    ) -> list[str]:
    argv = ["mmdebstrap", f"--variant={spec.variant}", '--aptopt=Acquire::Languages "none"',
            *(f"--aptopt={opt}" for opt in APT_CLEAN)]
    if spec.include:
        argv.append(f"--include={','.join(spec.include)}")
    if merged_usr_hooks is not None:
        argv.append(f"--hook-dir={merged_usr_hooks}")
    argv += [f"--dpkgopt={opt}" for opt in (*TRIM, *spec.exclude)]
    return [*argv, SUITE, str(target), *mirrors]


def base_key(spec: BaseSpec, mirrors: Iterable[str]) -> str:
    blob = json.dumps({"v": RECIPE_VERSION, "spec": spec.__dict__, "mirrors": list(mirrors), "trim": TRIM,
                       "apt": APT_CLEAN},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def base_ref(spec: BaseSpec, mirrors: Iterable[str]) -> str:
    return f"localhost/agenttask-base-{spec.name}:{base_key(spec, mirrors)}"


def existing_base(podman: Podman, name: str, *, mirrors: tuple[str, ...] | None = None) -> str | None:
    """The reference of local base `name` if it was made already."""
    ref = base_ref(BASES[name], mirrors or read_host_mirrors())
    return ref if podman.exists(ref) else None


def ensure_base(podman: Podman, name: str, *, log: Callable[[str], None] = lambda _m: None,
                mirrors: tuple[str, ...] | None = None) -> str:
    """The reference of local base `name`, made with mmdebstrap first if it is not there."""
    spec = BASES[name]
    mirrors = mirrors or read_host_mirrors()
    ref = base_ref(spec, mirrors)
    if podman.exists(ref):
        return ref
    if shutil.which("mmdebstrap") is None:
        raise PodmanError("mmdebstrap is not installed (run ./hack/node-deps.sh)")
    hooks = MERGED_USR_HOOKS if MERGED_USR_HOOKS.is_dir() else None
    logs = podman.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    logfile = logs / f"base-{spec.name}.log"
    started = time.monotonic()
    log(f"making base {ref} with mmdebstrap ({spec.variant} + {', '.join(spec.include) or 'nothing'})")
    with tempfile.TemporaryDirectory(dir=podman.root, prefix=".base-") as tmp:
        target = Path(tmp) / "rootfs.tar"
        with logfile.open("wb") as out:
            done = subprocess.run(mmdebstrap_argv(spec, mirrors=mirrors, target=target, merged_usr_hooks=hooks),
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            tail = logfile.read_text(errors="replace")[-3000:]
            raise PodmanError(f"mmdebstrap for {spec.name} failed ({done.returncode}); {logfile}:\n{tail}")
        changes = [f"ENV PATH={PATH_ENV}", "ENV LANG=C.UTF-8", f"CMD {json.dumps(list(spec.cmd))}"]
        podman.run("import", *[a for c in changes for a in ("--change", c)], str(target), ref)
    log(f"made base {ref} in {time.monotonic() - started:.0f}s, {podman.size(ref) / 1e6:.0f} MB")
    repository = ref.rsplit(":", 1)[0]
    for image in json.loads(podman.run("images", "--format=json", f"--filter=reference={repository}")):
        for tag in image.get("Names") or []:
            if tag.startswith(f"{repository}:") and tag != ref:  # an older recipe's base
                podman.run("rmi", "--force", tag)
    return ref
