"""Sandboxes that run in a container of their snapshot's image (``--isolation container``).

Does: for a sandbox created from a snapshot whose ``imageName`` is in the local podman store,
create a podman container of that image (``podman create``, never started, labelled with the
server's root so leftovers of a crashed server are found again) and mount its root filesystem
(``podman mount``: the image's layers plus the container's own writable layer, kept across stop
and start, as a Daytona sandbox's filesystem is). Every command of the sandbox then runs in that
root filesystem through bubblewrap (`isolation`), as the image's ``USER`` (a user namespace maps
it to the server's uid, so files the server writes into the sandbox are the user's own inside)
with the image's ``Env`` and the sandbox directories bound over ``/home``, ``/workspace`` and
``/tmp``. ``remove`` unmounts and removes a sandbox's container; ``remove_all`` every container
of this server (at start, the leftovers of a crash; at stop, all).

Does not: pull images (there is no registry here: an image missing locally fails the create with
a reason naming it), start the container with podman's runtime (bubblewrap runs each command, so
process groups, signals, PTYs and pipes behave exactly as in the other modes), or decide which
sandboxes use a container (`actions`).

Known limits: podman's overlay mount needs root; the container's processes share the host's
network namespace unless the sandbox's network settings give it one of its own (`network`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

log = logging.getLogger("controller.localsandbox")

LABEL = "io.agenttask.localsandbox.root"
_PODMAN_TIMEOUT = 120.0


class ContainerError(RuntimeError):
    """podman failed or the image cannot back a sandbox (the message says why)."""


@dataclass(frozen=True)
class Container:
    """A sandbox's container: where its root filesystem is and whom commands run as."""

    name: str
    image: str
    rootfs: str
    uid: int
    gid: int
    env: dict[str, str] = field(default_factory=dict)


def parse_env(pairs: list[str] | None) -> dict[str, str]:
    """An image's ``Config.Env`` (``KEY=value`` strings) as a dict."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if sep and key:
            out[key] = value
    return out


def _passwd_lookup(path: str, name: str, field_index: int) -> int | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.rstrip("\n").split(":")
                if len(parts) > field_index and parts[0] == name and parts[field_index].isdigit():
                    return int(parts[field_index])
    except OSError:
        return None
    return None


def resolve_user(spec: str | None, rootfs: str) -> tuple[int, int]:
    """uid and gid of an image's ``USER`` (``name``, ``uid``, ``uid:gid``, ``name:group``),
    names looked up in the image's own ``/etc/passwd`` and ``/etc/group``; empty means root."""
    if not spec:
        return 0, 0
    user, _, group = spec.partition(":")
    passwd, groups = os.path.join(rootfs, "etc/passwd"), os.path.join(rootfs, "etc/group")
    uid = int(user) if user.isdigit() else _passwd_lookup(passwd, user, 2)
    if uid is None:
        raise ContainerError(f"the image's USER {spec!r} is not in its /etc/passwd")
    if group:
        gid = int(group) if group.isdigit() else _passwd_lookup(groups, group, 2)
        if gid is None:
            raise ContainerError(f"the image's USER {spec!r}: group not in its /etc/group")
    else:
        by_name = _passwd_lookup(passwd, user, 3) if not user.isdigit() else None
        gid = by_name if by_name is not None else uid
    return uid, gid


class Containers:
    """The podman side of container mode for one server (`root` labels its containers)."""

    def __init__(self, root: str, env: Mapping[str, str] | None = None, podman: str = "podman") -> None:
        self._root = root
        self._env = dict(env) if env is not None else dict(os.environ)
        self._podman = podman

    async def _run(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            self._podman, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self._env,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(), _PODMAN_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise ContainerError(f"podman {args[0]} timed out") from None
        if proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            raise ContainerError(f"podman {' '.join(args[:2])}: {lines[-1] if lines else f'exit {proc.returncode}'}")
        return out.decode()

    @staticmethod
    def container_name(sandbox_id: str) -> str:
        """The podman container of a sandbox."""
        return f"localsandbox-{sandbox_id}"

    async def create(self, sandbox_id: str, image: str) -> Container:
        """Create and mount the container of `sandbox_id` from local `image`."""
        try:
            inspected = json.loads(await self._run("image", "inspect", image))
        except ContainerError:
            raise ContainerError(
                f"image {image} is not in the local podman store (build it first, e.g. `agenttask images build agent`)"
            ) from None
        config = (inspected[0].get("Config") or {}) if inspected else {}
        name = self.container_name(sandbox_id)
        await self._run("create", "--name", name, "--label", f"{LABEL}={self._root}", "--pull=never",
                        "--network=none", image, "true")  # fmt: skip
        try:
            rootfs = (await self._run("mount", name)).strip()
            uid, gid = resolve_user(config.get("User"), rootfs)
        except ContainerError:
            await self.remove(sandbox_id)
            raise
        return Container(name, image, rootfs, uid, gid, parse_env(config.get("Env")))

    async def remove(self, sandbox_id: str) -> None:
        """Unmount and remove the container of `sandbox_id` (nothing if it has none)."""
        name = self.container_name(sandbox_id)
        try:
            await self._run("rm", "--force", "--ignore", name)
        except ContainerError as exc:
            log.warning("localsandbox: could not remove container %s: %s", name, exc)

    async def remove_all(self) -> int:
        """Remove every container labelled with this server's root; how many there were."""
        try:
            listed = await self._run("ps", "--all", "--filter", f"label={LABEL}={self._root}", "--format", "{{.Names}}")
        except ContainerError as exc:
            log.warning("localsandbox: could not list this server's containers: %s", exc)
            return 0
        names = [n for n in listed.split() if n]
        if names:
            try:
                await self._run("rm", "--force", "--ignore", *names)
            except ContainerError as exc:
                log.warning("localsandbox: could not remove containers %s: %s", names, exc)
        return len(names)
