"""Running a sandbox through its transitional states (the mechanism under `actions`).

Does: `run_transition` moves a record through a list of `Step`s (each a state that lasts its
seconds while its work runs alongside) to a final state, in a background task of the store that
replaces any transition still in flight; a step whose work reports a failure ends the sandbox in
that step's failure state with the reason; the final state ``destroyed`` forgets the sandbox
and removes its files.

Does not: decide which steps a request needs (`actions`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .models import SandboxRecord
from .store import SandboxStore

Work = Callable[[], Awaitable[str | None]]  # returns a failure reason, or None


@dataclass(frozen=True)
class Step:
    """One transitional state: how long it lasts, what happens meanwhile, where a failure leads."""

    state: str
    seconds: float
    work: Work | None = None
    fails_to: str = "error"


def run_transition(store: SandboxStore, rec: SandboxRecord, steps: list[Step], final: str) -> asyncio.Task[None]:
    """Start moving `rec` through `steps` to `final`, replacing any transition in flight."""
    if rec.task is not None and not rec.task.done():
        rec.task.cancel()
    task = store.spawn(_drive(store, rec, steps, final))
    rec.task = task

    def done(t: asyncio.Task[None]) -> None:
        if rec.task is t:
            rec.task = None

    task.add_done_callback(done)
    return task


async def _drive(store: SandboxStore, rec: SandboxRecord, steps: list[Step], final: str) -> None:
    for step in steps:
        store.set_state(rec, step.state)
        jobs: list[Awaitable[Any]] = []
        if step.work is not None:
            jobs.append(step.work())
        if step.seconds > 0:
            jobs.append(asyncio.sleep(step.seconds))
        results = await asyncio.gather(*jobs) if jobs else []
        failure = results[0] if step.work is not None else None
        if failure:
            store.set_state(rec, step.fails_to, error_reason=failure)
            return
    if final == "destroyed":
        store.set_state(rec, "destroyed")
        if store.forget(rec, rec.gone_reason) is not None:
            await asyncio.to_thread(store.remove_files, rec.id)
        return
    store.set_state(rec, final)
