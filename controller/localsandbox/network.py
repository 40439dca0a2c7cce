"""Network isolation of sandboxes: ``networkBlockAll``, ``networkAllowList`` and linked sandboxes.

Does, when the server may manage network namespaces (``ip netns`` works: root, iproute2):

* a sandbox with ``networkBlockAll`` runs its processes in a network namespace of its own
  (``lsb-<id>``) that has only a loopback interface: nothing outside it is reachable, not even
  the host's loopback;
* a sandbox with a ``networkAllowList`` gets such a namespace plus a veth link to the host
  (host side ``10.213.x.1/30``, sandbox side ``.2``) and a route for each allowed network via
  that link, and nothing else: destinations outside the list are unreachable ("Network is
  unreachable"). There is no NAT and no forwarding, so traffic never leaves this machine;
  what is reachable is the host's own addresses inside the allowed networks (for example a
  server listening on the host side of the link);
* a sandbox with neither shares the host's network, as today (the operator's local services
  are on the host's loopback);
* a linked sandbox (``linkedSandbox``) resolves its owner's name and id to the owner's address
  through its own ``/etc/hosts``: in the owner's namespace when the owner has one (via
  ``/etc/netns/<ns>/hosts``, which ``ip netns exec`` mounts), else on the host network through a
  private mount namespace (``unshare --mount``) over a per-sandbox hosts file.

`wrap` prefixes a command's argv accordingly; `release` removes the namespace, its link and its
files when the sandbox goes (and `close` at server stop). Without these capabilities the
settings are accepted and stored but not enforced (`mode` says so; the server logs it).

Does not: filter by domain (``domainAllowList`` is validated and stored only), or touch any
interface or route outside the namespaces it created.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import shutil
import subprocess
from dataclasses import dataclass, field

from .validation import allowed_networks

log = logging.getLogger("controller.localsandbox")
POOL = ipaddress.IPv4Network("10.213.0.0/16")
NETNS_ETC = "/etc/netns"


@dataclass
class Namespace:
    """One sandbox's network namespace."""

    name: str
    index: int | None = None  # /30 of the veth link, when there is one
    routes: list[str] = field(default_factory=list)

    @property
    def host_ip(self) -> str | None:
        """The host side of the veth link."""
        return str(POOL.network_address + 4 * self.index + 1) if self.index is not None else None

    @property
    def sandbox_ip(self) -> str | None:
        """The sandbox side of the veth link."""
        return str(POOL.network_address + 4 * self.index + 2) if self.index is not None else None


def probe() -> str:
    """``netns`` if network namespaces can be managed here, else ``none`` (with the reason logged)."""
    ip = shutil.which("ip")
    if ip is None or os.geteuid() != 0:
        return "none"
    name = f"lsb-probe-{os.getpid()}"
    try:
        subprocess.run([ip, "netns", "add", name], check=True, capture_output=True, timeout=15)
        subprocess.run([ip, "netns", "del", name], check=True, capture_output=True, timeout=15)
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("localsandbox: network namespaces unavailable (%s): network settings are not enforced", exc)
        return "none"
    return "netns"


async def _ip(*args: str, check: bool = True) -> int:
    pipe = asyncio.subprocess
    proc = await asyncio.create_subprocess_exec("ip", *args, stdin=pipe.DEVNULL, stdout=pipe.DEVNULL, stderr=pipe.PIPE)
    _, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {err.decode(errors='replace').strip()}")
    return proc.returncode or 0


class Network:
    """The namespaces of one server."""

    def __init__(self, mode: str, state_dir: str) -> None:
        self.mode = mode
        self._dir = state_dir
        self._spaces: dict[str, Namespace] = {}  # sandbox id -> namespace
        self._hosts: dict[str, str] = {}  # sandbox id -> private hosts file (host network)
        self._free = list(range(POOL.num_addresses // 4 - 1, 0, -1))

    @property
    def enforced(self) -> bool:
        """Whether block-all and allow lists are enforced."""
        return self.mode == "netns"

    def namespace(self, sandbox_id: str) -> Namespace | None:
        """The namespace of a sandbox, if it has one."""
        return self._spaces.get(sandbox_id)

    async def apply(self, sandbox_id: str, *, block_all: bool, allow_list: str | None) -> None:
        """Make the sandbox's namespace match its settings (created, re-routed or removed)."""
        if not self.enforced:
            return
        wants = block_all or bool(allow_list)
        space = self._spaces.get(sandbox_id)
        if not wants:
            if space is not None:
                await self.release(sandbox_id)
            return
        if space is None:
            space = Namespace(f"lsb-{sandbox_id[:8]}{sandbox_id[9:13]}")
            await _ip("netns", "add", space.name)
            self._spaces[sandbox_id] = space
            await _ip("-n", space.name, "link", "set", "lo", "up")
        networks = [] if block_all else [str(n) for n in allowed_networks(allow_list)]
        if networks and space.index is None:
            await self._link(space)
        for route in space.routes:
            await _ip("-n", space.name, "route", "del", route, check=False)
        space.routes = []
        for net in networks:
            if space.host_ip is not None and ipaddress.IPv4Address(space.host_ip) in ipaddress.IPv4Network(net) and (
                ipaddress.IPv4Network(net).prefixlen >= 30
            ):
                continue  # the link's own /30 is connected already
            await _ip("-n", space.name, "route", "add", net, "via", str(space.host_ip))
            space.routes.append(net)

    async def _link(self, space: Namespace) -> None:
        # a random /30, so that servers running side by side on one machine rarely pick the same
        space.index = self._free.pop(random.randrange(len(self._free)))
        host_if, ns_if = f"{space.name[:11]}h", f"{space.name[:11]}s"
        await _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        await _ip("link", "set", ns_if, "netns", space.name)
        await _ip("addr", "add", f"{space.host_ip}/30", "dev", host_if)
        await _ip("link", "set", host_if, "up")
        await _ip("-n", space.name, "addr", "add", f"{space.sandbox_ip}/30", "dev", ns_if)
        await _ip("-n", space.name, "link", "set", ns_if, "up")

    def link_hosts(self, sandbox_id: str, owner_id: str, names: list[str]) -> None:
        """Let a linked sandbox resolve its owner's `names` (see the module docstring)."""
        owner_space = self._spaces.get(owner_id)
        entries = "".join(f"127.0.0.1\t{n}\n" for n in names)
        base = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        if owner_space is not None:
            self._spaces[sandbox_id] = owner_space  # the follower joins the owner's namespace
            path = os.path.join(NETNS_ETC, owner_space.name)
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, "hosts"), "a") as fh:
                fh.write(base + entries)
            return
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            return
        os.makedirs(self._dir, exist_ok=True)
        hosts = os.path.join(self._dir, f"{sandbox_id}.hosts")
        with contextlib.suppress(OSError), open("/etc/hosts") as fh:
            base = fh.read()
        with open(hosts, "w") as fh:
            fh.write(base.rstrip("\n") + "\n" + entries)
        self._hosts[sandbox_id] = hosts

    def wrap(self, sandbox_id: str, argv: list[str]) -> list[str]:
        """`argv` run in the sandbox's network (and, for linked sandboxes, with its hosts file)."""
        space = self._spaces.get(sandbox_id)
        if space is not None:
            return ["ip", "netns", "exec", space.name, *argv]
        hosts = self._hosts.get(sandbox_id)
        if hosts is not None:
            script = 'mount --bind "$0" /etc/hosts && exec "$@"'
            return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, hosts, *argv]
        return argv

    async def release(self, sandbox_id: str) -> None:
        """Remove what the sandbox used: its namespace (unless a linked sandbox shares it), link, files."""
        hosts = self._hosts.pop(sandbox_id, None)
        if hosts is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(hosts)
        space = self._spaces.pop(sandbox_id, None)
        if space is None or any(s is space for s in self._spaces.values()):
            return
        if space.index is not None:
            await _ip("link", "del", f"{space.name[:11]}h", check=False)
            self._free.append(space.index)
        await _ip("netns", "del", space.name, check=False)
        shutil.rmtree(os.path.join(NETNS_ETC, space.name), ignore_errors=True)

    async def close(self) -> None:
        """Remove every namespace and file this server made."""
        for sandbox_id in list({**self._spaces, **self._hosts}):
            await self.release(sandbox_id)

