"""The sandbox records of one server: lookup, state bookkeeping, usage and the automatic timers.

Does: own every `SandboxRecord` (by id, and by name while it is not being deleted: a delete
renames the sandbox ``DESTROYED_<name>_<ms>`` as Daytona's soft delete does, so the name is
free again at once while ``GET`` by id keeps answering until the sandbox is ``destroyed``);
its `SandboxProcesses`; record every state and desired-state change (``updatedAt``, and
``lastActivityAt`` on each state change, as Daytona's repository does) and tell the listeners
(the Socket.IO gateway, the list index); sum the organisation's usage for `quota`; and run the
automatic lifecycle (auto-stop, auto-archive, auto-delete, TTL; see `lifecycle`), handing due
actions to `actions`.

Does not: decide whether a request is accepted or drive transitions (`states`, `actions`), or
parse HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import Awaitable, Callable

from .catalog import Catalog
from .containers import Containers
from .errors import ApiError, not_found
from .faults import FaultInjector
from .isolation import Isolation, LaunchContext, home_of, sees_sandbox_paths
from .layout import log_dir, remove_tree, sandbox_dir
from .lifecycle import collect_due
from .models import SandboxRecord
from .network import Network
from .processes import SandboxProcesses
from .quota import Usage, usage
from .settings import Settings
from .states import RUNNING_STATES, hidden, pending_for
from .stats import Stats

# (event, record, old value, new value): "sandbox.created", "sandbox.state.updated",
# "sandbox.desired-state.updated", "sandbox.updated" (labels, intervals, network), "sandbox.gone"
SERVER_DIR = "/.localsandbox"  # where a namespaced sandbox sees its server-side directory
TIMER_COALESCE = 0.02  # seconds; automatic actions are minutes apart, a scan costs O(sandboxes)
# the pause before a scan is also at least this many times the last scan's duration: with many
# sandboxes changing at once (thousands deleted by a sweep) the scans take at most a tenth of
# the server's time instead of most of it; a due action waits at most that pause longer
TIMER_BACKOFF = 10
Listener = Callable[[str, SandboxRecord, str | None, str | None], None]
AutoAction = Callable[[SandboxRecord, str], Awaitable[None]]


class SandboxStore:
    """All sandboxes of one server."""

    def __init__(
        self,
        root: str,
        *,
        minute_seconds: float,
        isolation: Isolation,
        faults: FaultInjector,
        stats: Stats,
        catalog: Catalog,
        org_id: str,
        target: str,
        settings: Settings,
        network: Network,
        containers: Containers | None = None,
    ) -> None:
        self.root = root
        self.minute_seconds = minute_seconds
        self.isolation = isolation
        self.faults = faults
        self.stats = stats
        self.catalog = catalog
        self.org_id = org_id
        self.target = target
        self.settings = settings
        self.network = network
        self.containers = containers  # container mode only
        self.records: dict[str, SandboxRecord] = {}
        self.procs: dict[str, SandboxProcesses] = {}
        self.listeners: list[Listener] = []
        self.auto_action: AutoAction | None = None
        self._names: dict[str, str] = {}
        self._followers: dict[str, set[str]] = {}  # linked sandbox id -> ids of the sandboxes linked to it
        self._seq = 0
        # bumped by every change a list can show (records, states, names, labels, activity):
        # `listing.PageCache` reuses an ordering only while it stands still
        self.generation = 0
        self._wake = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self._in_flight: set[str] = set()
        self._closing = False
        self.background: set[asyncio.Task[None]] = set()

    # lookup ----------------------------------------------------------------------------

    def find(self, id_or_name: str) -> SandboxRecord | None:
        """A sandbox GET can see, by id, else by (current) name."""
        rec = self.records.get(id_or_name)
        if rec is None and id_or_name in self._names:
            rec = self.records.get(self._names[id_or_name])
        if rec is None or hidden(rec):
            return None
        return rec

    def get(self, id_or_name: str) -> SandboxRecord:
        """A sandbox by id or name, or Daytona's 404."""
        rec = self.find(id_or_name)
        if rec is None:
            raise not_found(f"Sandbox with ID or name {id_or_name} not found")
        return rec

    def followers(self, owner_id: str) -> list[SandboxRecord]:
        """The sandboxes linked to `owner_id` (created with it as their linked sandbox)."""
        found = [self.records[i] for i in self._followers.get(owner_id, ()) if i in self.records]
        return sorted(found, key=lambda r: r.seq)  # in creation order

    def name_taken(self, name: str) -> bool:
        """Whether a live sandbox carries `name`."""
        return name in self._names

    def running(self, sandbox_id: str) -> tuple[SandboxRecord, SandboxProcesses]:
        """A sandbox that can serve toolbox calls (404 unknown, 409 not started); marks activity."""
        rec = self.get(sandbox_id)
        if rec.state not in RUNNING_STATES or rec.desired == "destroyed":
            raise ApiError(409, f"Sandbox {rec.id} is not running (state: {rec.state})")
        self.touch(rec)
        return rec, self.procs[rec.id]

    def launch_context(self, rec: SandboxRecord, cwd: str, env: dict[str, str] | None = None) -> LaunchContext:
        """What `isolation.build_launch` needs to run a command in `rec` at in-sandbox `cwd`
        (every launch goes through here: from now on the sandbox's processes are looked for by
        their environment too when it stops or goes, see `SandboxProcesses.kill_all`)."""
        procs = self.procs.get(rec.id)
        if procs is not None:
            procs.launched = True
        return LaunchContext(
            sandbox_id=rec.id,
            root=sandbox_dir(self.root, rec.id),
            user=rec.user,
            cwd=cwd,
            env={**rec.env, **(env or {})},
            snapshot=rec.snapshot,
            network_block_all=rec.network_block_all,
            netwrap=functools.partial(self.network.wrap, rec.id),
            container=rec.container,
            binds=((log_dir(self.root, rec.id), SERVER_DIR),),  # session FIFOs and scripts
        )

    def sees_sandbox_paths(self, rec: SandboxRecord) -> bool:
        """Whether `rec`'s processes see in-sandbox paths (its own ``/tmp``) rather than host paths."""
        return sees_sandbox_paths(self.isolation, rec.container)

    def user_ids(self, rec: SandboxRecord) -> dict[str, int]:
        """Host ids that stand for the sandbox's own user and group names (chown, file owners)."""
        del rec
        return {}

    def home(self, rec: SandboxRecord) -> str:
        """In-sandbox home directory of the sandbox user."""
        return home_of(rec.user)

    def usage(self, exclude: str | None = None) -> Usage:
        """The organisation's usage (every sandbox not yet destroyed)."""
        return usage((r for r in self.records.values() if r.state != "destroyed"), exclude)

    # changes ---------------------------------------------------------------------------

    def _emit(self, event: str, rec: SandboxRecord, old: str | None = None, new: str | None = None) -> None:
        self.generation += 1
        for listener in self.listeners:
            listener(event, rec, old, new)

    def touch(self, rec: SandboxRecord) -> None:
        """Record activity (it postpones auto-stop, auto-archive and auto-delete)."""
        self.generation += 1
        rec.last_activity_at = time.time()
        rec.activity_mono = time.monotonic()

    def insert(self, rec: SandboxRecord) -> None:
        """Add a new sandbox (the caller checked that its name is free)."""
        self._seq += 1
        rec.seq = self._seq
        self.records[rec.id] = rec
        self._names[rec.name] = rec.id
        if rec.linked_sandbox_id:
            self._followers.setdefault(rec.linked_sandbox_id, set()).add(rec.id)
        self.procs[rec.id] = SandboxProcesses(log_dir(self.root, rec.id), rec.id)
        self.stats.sandbox_created(rec.name)
        self._emit("sandbox.created", rec)
        self._wake.set()

    def set_state(self, rec: SandboxRecord, new: str, error_reason: str | None = None) -> None:
        """Move `rec` to state `new` (keeping Daytona's pending invariant)."""
        old = rec.state
        self.generation += 1
        if error_reason is not None:
            rec.error_reason = error_reason
        rec.state = new
        rec.pending = pending_for(new, rec.desired, rec.pending)
        rec.updated_at = time.time()
        if old != new:
            self.touch(rec)
            self._emit("sandbox.state.updated", rec, old, new)
        self._wake.set()

    def set_desired(self, rec: SandboxRecord, desired: str) -> None:
        """Set the desired state (a lifecycle request was accepted); pending follows."""
        old = rec.desired
        self.generation += 1
        rec.desired = desired
        rec.pending = pending_for(rec.state, desired, True)
        rec.updated_at = time.time()
        if old != desired:
            self._emit("sandbox.desired-state.updated", rec, old, desired)
        self._wake.set()

    def changed(self, rec: SandboxRecord) -> None:
        """Something other than the state changed (labels, intervals, network settings)."""
        rec.updated_at = time.time()
        self._emit("sandbox.updated", rec)
        self._wake.set()

    def changed_settings(self) -> None:
        """The settings changed: recompute timer deadlines."""
        self._wake.set()

    def soft_delete(self, rec: SandboxRecord) -> None:
        """Daytona's soft delete: desired ``destroyed``, renamed ``DESTROYED_<name>_<ms>``."""
        if self._names.get(rec.name) == rec.id:
            del self._names[rec.name]
        self.generation += 1
        rec.name = f"DESTROYED_{rec.name}_{int(time.time() * 1000)}"
        self.set_desired(rec, "destroyed")

    def forget(self, rec: SandboxRecord, reason: str = "delete") -> SandboxProcesses | None:
        """Take `rec` out of the store and SIGKILL its processes; the caller removes its files."""
        if self.records.get(rec.id) is not rec:
            return None
        procs = self.procs.pop(rec.id)
        procs.kill_all("sandbox destroyed")
        del self.records[rec.id]
        if self._names.get(rec.name) == rec.id:
            del self._names[rec.name]
        self._followers.get(rec.linked_sandbox_id or "", set()).discard(rec.id)
        self.stats.sandbox_gone(reason)
        self._emit("sandbox.gone", rec)
        self.spawn(procs.close())
        self.spawn(self.network.release(rec.id))
        if rec.container is not None and self.containers is not None:
            self.spawn(self.containers.remove(rec.id))
        return procs

    def remove_files(self, sandbox_id: str) -> None:
        """Remove a sandbox's directory and logs (volume mounts are links: the volumes stay)."""
        self.catalog.volumes.unmount(sandbox_dir(self.root, sandbox_id))
        remove_tree(sandbox_dir(self.root, sandbox_id))
        remove_tree(log_dir(self.root, sandbox_id))

    def lose(self, id_or_name: str) -> bool:
        """Destroy a sandbox behind the client's back (fault injection); False if unknown."""
        rec = self.find(id_or_name)
        if rec is None:
            return False
        if rec.task is not None:
            rec.task.cancel()
        if self.forget(rec, "lost") is None:
            return False
        rec.state = "destroyed"
        self.remove_files(rec.id)
        return True

    def spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        """Run `coro` in the background; `close` waits for it."""

        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    # timers ----------------------------------------------------------------------------

    def start_timers(self) -> None:
        """Start the automatic-lifecycle task (call from the running loop)."""
        if self._timer is None:
            self._timer = asyncio.create_task(self._lifecycle())

    async def _act(self, rec: SandboxRecord, reason: str) -> None:
        try:
            if self.auto_action is not None and self.records.get(rec.id) is rec:
                await self.auto_action(rec, reason)
        except ApiError:
            pass  # the sandbox changed state meanwhile
        finally:
            self._in_flight.discard(rec.id)
            self._wake.set()

    async def _lifecycle(self) -> None:
        # ends on `_closing` rather than on cancellation: Python 3.11's wait_for can swallow a
        # cancel that arrives just as the event it waits for is set
        scan = 0.0
        while not self._closing:
            self._wake.clear()
            # coalesce bursts of changes: one scan of every sandbox per TIMER_COALESCE seconds at most
            await asyncio.sleep(max(TIMER_COALESCE, TIMER_BACKOFF * scan))
            started = time.monotonic()
            candidates = (r for r in self.records.values() if r.id not in self._in_flight)
            due, next_at = collect_due(candidates, started, self.minute_seconds)
            scan = time.monotonic() - started
            for item in due:
                rec = self.records.get(item.sandbox_id)
                if rec is None:
                    continue
                self._in_flight.add(rec.id)
                self.spawn(self._act(rec, item.reason))
            timeout = None if next_at is None else max(0.0, next_at - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def close(self) -> None:
        """Stop the timers and transitions, kill every process group, remove every sandbox."""
        if self._timer is not None:
            self._closing = True
            self._wake.set()
            await asyncio.gather(self._timer, return_exceptions=True)
            self._timer = None
        for rec in list(self.records.values()):
            if rec.task is not None:
                rec.task.cancel()
            self.forget(rec, "shutdown")
            self.remove_files(rec.id)
        while self.background:
            await asyncio.gather(*list(self.background), return_exceptions=True)
        await self.network.close()
        remove_tree(os.path.join(self.root, ".logs"))
