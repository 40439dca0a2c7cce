"""How sandbox commands are launched: plain host processes, bubblewrap (``bwrap``), or bubblewrap
in a container's root filesystem (``container``).

Does: probe once at start whether bubblewrap is installed *and* works here (user namespaces
are often unavailable in containers) by running a real command through the exact argv
`build_launch` produces; choose ``bwrap`` or ``plain``; and build the argv/env/cwd of a
command for either mode. Commands always run as ``bash -c <command>`` (``sh`` if there is no
bash): running a shell command is what the exec/session APIs are for.

* plain: the command runs on the host as the server's user, in ``<root>/<id>/<cwd>``, with
  ``HOME=<root>/<id>/home/<user>`` and ``TMPDIR=<root>/<id>/tmp``; it sees host paths, so
  in-sandbox absolute paths (``/workspace``) are NOT remapped for it (file APIs do remap).
  Network settings are enforced by `network` (namespaces) where the machine allows it.
* bwrap: system directories are bound read-only, every top-level entry of the sandbox
  directory is bound at ``/<entry>`` (so ``/home/<user>``, ``/workspace``, ``/tmp`` are the
  sandbox's), PID/IPC/UTS namespaces are private, ``networkBlockAll`` unshares the network.

The environment is built from scratch (PATH, LANG, HOME, USER, TMPDIR, DAYTONA_SANDBOX_*,
then the sandbox env, then per-request env): the server's own environment (which may hold
API keys) is never passed through.

Does not: start or track processes (see `processes`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from .containers import Container

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/opt")
_RESERVED_TOP = frozenset({"usr", "bin", "sbin", "lib", "lib32", "lib64", "etc", "proc", "dev", "sys", "opt"})


@dataclass(frozen=True)
class Isolation:
    """The chosen launch mode and why."""

    mode: str  # "plain" | "bwrap" | "container"
    reason: str
    bwrap: str | None = None

    def describe(self) -> str:
        """One line for the startup notice."""
        return f"isolation={self.mode} ({self.reason})"


@dataclass(frozen=True)
class LaunchContext:
    """Everything about the sandbox a command needs to be launched."""

    sandbox_id: str
    root: str  # host directory of the sandbox
    user: str
    cwd: str  # in-sandbox path, already validated
    env: dict[str, str] = field(default_factory=dict)
    snapshot: str | None = None
    network_block_all: bool = False
    netwrap: Callable[[list[str]], list[str]] | None = None  # runs argv in the sandbox's network (`network`)
    container: Container | None = None  # container mode: the sandbox's container
    binds: tuple[tuple[str, str], ...] = ()  # (host, in-sandbox) directories the server shares with it


def sees_sandbox_paths(iso: Isolation, container: Container | None) -> bool:
    """Whether a sandbox's processes see in-sandbox paths (``/tmp`` is its own) or host paths."""
    if iso.bwrap is None:
        return False
    return iso.mode == "bwrap" or (iso.mode == "container" and container is not None)


@dataclass(frozen=True)
class Launch:
    """argv, environment and host working directory of one process."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    mounts: tuple[tuple[str, str], ...] = ()  # (host, in-sandbox) directories bound for the process

    def seen(self, host_path: str) -> str:
        """How the process sees `host_path` (a path under one of `mounts`, else unchanged)."""
        for host, virtual in self.mounts:
            if host_path == host or host_path.startswith(host.rstrip("/") + "/"):
                return virtual + host_path[len(host.rstrip("/")):]
        return host_path


def shell() -> str:
    """The shell commands run under."""
    return shutil.which("bash") or "/bin/sh"


def home_of(user: str) -> str:
    """In-sandbox home directory of `user`."""
    return "/root" if user == "root" else f"/home/{user}"


def _base_env(ctx: LaunchContext, home: str, tmp: str, image_env: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    env.update(image_env or {})  # a container's image: its PATH, LANG and ENV lines
    env |= {
        "HOME": home,
        "USER": ctx.user,
        "LOGNAME": ctx.user,
        "TMPDIR": tmp,
        "DAYTONA_SANDBOX_ID": ctx.sandbox_id,
        "DAYTONA_SANDBOX_USER": ctx.user,
    }
    if ctx.snapshot:
        env["DAYTONA_SANDBOX_SNAPSHOT"] = ctx.snapshot
    env.update(ctx.env)
    return env


def _host(root: str, virtual: str) -> str:
    return os.path.join(root, virtual.lstrip("/"))


def build_launch(iso: Isolation, ctx: LaunchContext, command: str | None) -> Launch:
    """The argv/env/cwd that run `command` in the sandbox described by `ctx` (None: a shell
    reading its commands from stdin, for sessions)."""
    return build_argv(iso, ctx, [shell(), "-c", command] if command is not None else [shell()])


def build_argv(iso: Isolation, ctx: LaunchContext, run: list[str]) -> Launch:
    """The argv/env/cwd that run the program `run` (an argv list, no shell) in the sandbox."""
    launch = _build_argv(iso, ctx, run)
    if ctx.netwrap is not None:
        launch = Launch(ctx.netwrap(launch.argv), launch.env, launch.cwd, launch.mounts)
    return launch


def _build_argv(iso: Isolation, ctx: LaunchContext, run: list[str]) -> Launch:
    home = home_of(ctx.user)
    if not sees_sandbox_paths(iso, ctx.container):
        env = _base_env(ctx, _host(ctx.root, home), os.path.join(ctx.root, "tmp"))
        return Launch(run, env, _host(ctx.root, ctx.cwd))
    assert iso.bwrap is not None  # sees_sandbox_paths checked it
    argv = [iso.bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    if ctx.network_block_all:
        argv.append("--unshare-net")
    box = ctx.container
    if box is None:
        for path in _SYSTEM_DIRS:
            argv += ["--ro-bind-try", path, path]
    else:
        argv += ["--bind", box.rootfs, "/"]
        if box.uid != 0 or box.gid != 0:
            argv += ["--unshare-user", "--uid", str(box.uid), "--gid", str(box.gid)]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    try:
        entries = sorted(os.listdir(ctx.root))
    except OSError:
        entries = []
    for entry in entries:
        if entry not in _RESERVED_TOP and os.path.isdir(os.path.join(ctx.root, entry)):
            argv += ["--bind", os.path.join(ctx.root, entry), "/" + entry]
    for host, virtual in ctx.binds:
        argv += ["--bind-try", host, virtual]  # (absent until the sandbox first needs it)
    argv += ["--chdir", ctx.cwd, "--", *run]
    env = _base_env(ctx, home, "/tmp", box.env if box is not None else None)  # noqa: S108 - its own /tmp
    return Launch(argv, env, ctx.root, ctx.binds)


def _probe_bwrap(bwrap: str) -> str | None:
    """None if bwrap can run a command the way `build_launch` does, else why not."""
    with tempfile.TemporaryDirectory(prefix="localsandbox-probe-") as root:
        os.makedirs(os.path.join(root, "home", "probe"))
        os.makedirs(os.path.join(root, "tmp"))
        iso = Isolation("bwrap", "probe", bwrap)
        ctx = LaunchContext(sandbox_id="probe", root=root, user="probe", cwd="/home/probe")
        launch = build_launch(iso, ctx, 'echo ok > "$HOME/probe.txt"')
        try:
            proc = subprocess.run(
                launch.argv, env=launch.env, cwd=launch.cwd, capture_output=True, timeout=15, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bwrap probe failed: {exc}"
        marker = os.path.join(root, "home", "probe", "probe.txt")
        if proc.returncode != 0 or not os.path.exists(marker):
            detail = proc.stderr.decode(errors="replace").strip().splitlines()
            return f"bwrap probe failed: {detail[-1] if detail else f'exit {proc.returncode}'}"
    return None


MODES = ("auto", "plain", "bwrap", "container")


def choose_isolation(requested: str = "plain", *, bwrap: str | None = None) -> Isolation:
    """Pick the launch mode: ``auto`` uses bwrap when it works, ``plain``/``bwrap``/``container``
    force one (`bwrap`: the bubblewrap binary to use instead of the one on PATH).

    ``plain`` is the default everywhere, so the server behaves the same on every machine: in a
    namespaced mode a sandbox no longer sees host paths, so a task whose repository is a local
    path (the demo's, most tests') cannot push to it, and whether bubblewrap happened to be
    installed (flatpak brings it) decided whether `agenttask demo` worked.

    Forcing ``bwrap`` or ``container`` when it cannot work raises `RuntimeError`; ``container``
    also needs podman and root (podman's overlay mounts).
    """
    if requested not in MODES:
        raise ValueError(f"isolation must be one of {', '.join(MODES)}")
    if requested == "plain":
        return Isolation("plain", "host processes")
    bwrap = bwrap or shutil.which("bwrap")
    problem = "bwrap not installed" if bwrap is None else _probe_bwrap(bwrap)
    if requested == "container":
        if problem is None and shutil.which("podman") is None:
            problem = "podman not installed"
        if problem is None and os.geteuid() != 0:
            problem = "container mode needs root (podman mounts the containers' filesystems)"
        if problem is not None:
            raise RuntimeError(f"isolation=container: {problem}")
        return Isolation("container", "podman + bubblewrap", bwrap)
    if problem is None:
        return Isolation("bwrap", "bubblewrap works", bwrap)
    if requested == "bwrap":
        raise RuntimeError(problem)
    return Isolation("plain", problem)
