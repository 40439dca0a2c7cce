"""`Supervisor.step`'s every exception path, with in-memory stand-ins for the two adapters.

The stand-ins keep the contract that matters here: `patch_status` refuses a stale
resourceVersion with `Conflict` (as the apiserver does) and bumps it on success; every
Daytona call can be made to raise a chosen error once. What the tests assert is what a user
sees on the task: its phase, reason, conditions and lastError, and that the loop goes on.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, cast

import pytest

from controller import plan
from controller.admission import AdmissionQueue
from controller.api import AgentTask
from controller.errors import AttemptLost, Cause, Fatal, OperatorError, OperatorWide, Retryable, SecretMissing
from controller.kube import Conflict
from controller.runtime import Runtime
from controller.sandboxes import Sandboxes
from controller.settings import Settings
from controller.statuspatch import apply_merge_patch
from controller.supervisor import Supervisor

UID = "9d2b7f0e-0000-4000-8000-000000000001"
NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


class FakeKube:
    def __init__(self, body: dict[str, Any]):
        self.body = copy.deepcopy(body)
        self.writes = 0
        self.gets = 0
        self.fail_next_write: OperatorError | None = None
        self.secrets: dict[tuple[str, str], str] = {}

    def _rv(self) -> str:
        return str(self.body["metadata"]["resourceVersion"])

    async def get_task(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets += 1
        return dict(self.body)

    async def patch_status(self, namespace: str, name: str, *, resource_version: str | None,
                           status: dict[str, Any]) -> dict[str, Any] | None:
        if self.fail_next_write is not None:
            error, self.fail_next_write = self.fail_next_write, None
            raise error
        if resource_version is not None and resource_version != self._rv():
            raise Conflict(f"stale resourceVersion {resource_version} (now {self._rv()})", status=409)
        self.writes += 1
        merged = apply_merge_patch(self.body.get("status") or {}, status)
        meta = {**self.body["metadata"], "resourceVersion": str(int(self._rv()) + 1)}
        self.body = {**self.body, "metadata": meta, "status": merged}
        return dict(self.body)

    async def read_secret_key(self, namespace: str, name: str, key: str, *, optional: bool = False) -> str | None:
        value = self.secrets.get((name, key))
        if value is None and not optional:
            raise SecretMissing(f"Secret {namespace}/{name} not found")
        return value

    async def delete_task(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        return True


@dataclass
class Box:
    id: str
    name: str
    state: str
    error_reason: str | None = None


class FakeSandboxes:
    observe = staticmethod(Sandboxes.observe)

    def __init__(self) -> None:
        self.boxes: dict[str, Box] = {}
        self.raise_on: dict[str, OperatorError | Exception] = {}
        self.calls: list[str] = []

    def _maybe_raise(self, operation: str) -> None:
        self.calls.append(operation)
        error = self.raise_on.pop(operation, None)
        if error is not None:
            raise error

    async def find(self, name: str) -> Box | None:
        self._maybe_raise("get")
        return self.boxes.get(name)

    async def ensure(self, spec: Any) -> tuple[Box, bool]:
        self._maybe_raise("create")
        created = spec.name not in self.boxes
        box = self.boxes.setdefault(spec.name, Box(id=f"id-{spec.name}", name=spec.name, state="started"))
        return box, created

    async def command(self, sandbox: Any, session_id: str) -> tuple[bool, plan.CommandObs | None]:
        self._maybe_raise("session_get")
        return False, None

    async def upload(self, sandbox: Any, files: Any) -> None:
        self._maybe_raise("upload")

    async def exec(self, sandbox: Any, command: str, *, timeout: int = 60) -> tuple[int, str]:
        self._maybe_raise("exec")
        return 1, ""

    async def clone(self, sandbox: Any, **_: Any) -> None:
        self._maybe_raise("git_clone")

    async def start_command(self, sandbox: Any, session_id: str, command: str, *, session: Any = None) -> str:
        self._maybe_raise("session_exec")
        return "cmd-1"

    async def delete_if_exists(self, name_or_sandbox: Any) -> bool:
        self._maybe_raise("delete")
        return True

    async def follow_logs(self, sandbox: Any, session_id: str, command_id: str, on_output: Any) -> None:
        self._maybe_raise("logs_follow")
        await asyncio.Event().wait()  # a stream that stays open (the agent runs on)

    def creates(self, state: str) -> None:
        """The next create returns its sandbox in `state`."""
        name = plan.sandbox_name(UID, 1)
        self.boxes.pop(name, None)
        original = self.ensure

        async def ensure(spec: Any) -> tuple[Box, bool]:
            box, created = await original(spec)
            box.state = state
            return box, created

        self.ensure = ensure  # type: ignore[method-assign]


def body(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "t", "namespace": "ns", "uid": UID, "generation": 1, "resourceVersion": "10",
                         "creationTimestamp": (NOW - dt.timedelta(minutes=1)).isoformat()},
            "spec": {"repository": {"url": "https://example.test/r.git"}, **spec},
            "status": status or {}}


def provisioning() -> dict[str, Any]:
    name = plan.sandbox_name(UID, 1)
    return {"phase": "Provisioning", "reason": "Provisioning", "attempts": 1, "startTime": NOW.isoformat(),
            "sandbox": {"name": name, "state": "creating"}}


def make(raw: dict[str, Any]) -> tuple[Supervisor, FakeKube, FakeSandboxes, list[tuple[str, str]]]:
    kube, boxes = FakeKube(raw), FakeSandboxes()
    events: list[tuple[str, str]] = []
    settings = Settings(retry_base_seconds=1.0, retry_max_seconds=60.0, replica_id="me")
    rt = Runtime(settings=settings, kube=cast(Any, kube), sandboxes=cast(Any, boxes),
                 queue=AdmissionQueue(limit=5), runner=b"runner",
                 post_event=lambda _b, type_, reason, _m: events.append((type_, reason)), clock=lambda: NOW)
    return Supervisor(rt, body=raw, logger=logging.getLogger("test")), kube, boxes, events


def status(kube: FakeKube) -> AgentTask:
    return AgentTask.from_body(kube.body)


def step(sup: Supervisor) -> float | None:
    return asyncio.run(sup.step())


def test_retryable_waits_at_least_what_the_server_asked_and_records_last_error() -> None:
    sup, kube, boxes, _ = make(body(provisioning()))
    boxes.raise_on["get"] = Retryable("daytona get failed (HTTP 429): slow down", retry_after=42.0, status=429)
    delay = step(sup)
    assert delay is not None and delay >= 42.0
    task = status(kube)
    assert task.status.phase == "Provisioning"
    assert "slow down" in (task.status.last_error or "")


@pytest.mark.parametrize("cause", [Cause.DAYTONA_AUTH, Cause.DAYTONA_QUOTA])
def test_operator_wide_fault_makes_the_task_wait_not_fail(cause: Cause) -> None:
    sup, kube, boxes, events = make(body(provisioning()))
    boxes.raise_on["create"] = OperatorWide(f"daytona create failed: {cause}", cause=cause, status=400)
    delay = step(sup)
    assert delay is not None and 0 < delay <= 60
    task = status(kube)
    assert task.status.phase == "Provisioning"
    assert task.status.reason == cause
    reconciling = task.status.condition("Reconciling")
    assert reconciling is not None and reconciling.reason == cause
    assert ("Warning", str(cause)) in events  # one event when the wait starts
    assert step(sup) is not None  # cleared: it proceeds (creates the sandbox, starts the agent)
    assert (status(kube).status.phase, status(kube).status.reason) == ("Running", "AgentStarted")


def test_attempt_lost_during_an_action_is_looked_at_again_soon() -> None:
    raw = body({**provisioning(), "sandbox": {"name": plan.sandbox_name(UID, 1), "id": "x", "state": "started"}})
    sup, kube, boxes, _ = make(raw)
    boxes.boxes[plan.sandbox_name(UID, 1)] = Box(id="x", name=plan.sandbox_name(UID, 1), state="started")
    boxes.raise_on["upload"] = AttemptLost("daytona upload failed (HTTP 404): not found", status=404)
    assert step(sup) == sup.rt.config.missing_recheck_seconds
    assert status(kube).status.phase == "Provisioning"


def test_task_fault_fails_the_task_with_the_fresh_resource_version() -> None:
    """The step's first write (the StartAgent intent) succeeded before the Secret was found
    missing: the failure is written on top of it, not rejected as stale."""
    raw = body({**provisioning(), "sandbox": {"name": plan.sandbox_name(UID, 1), "id": "x", "state": "started"}},
               agent={"env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]})
    sup, kube, boxes, events = make(raw)
    boxes.boxes[plan.sandbox_name(UID, 1)] = Box(id="x", name=plan.sandbox_name(UID, 1), state="started")
    assert step(sup) == 0
    task = status(kube)
    assert task.status.phase == "Failed" and task.status.reason == "SecretNotFound"
    assert kube.writes == 2
    assert ("Warning", "SecretNotFound") in events


def test_conflict_on_the_main_write_rereads_and_goes_on() -> None:
    sup, kube, boxes, _ = make(body(provisioning()))
    kube.body["metadata"]["resourceVersion"] = "11"  # someone wrote since the supervisor's copy
    assert step(sup) == 0
    assert sup.current["metadata"]["resourceVersion"] == "11"
    assert step(sup) is not None  # the next step works from the fresh copy
    assert plan.sandbox_name(UID, 1) in boxes.boxes
    # it created the sandbox and started the agent in one step, and recorded what that returned
    assert status(kube).status.phase == "Running" and status(kube).status.intent is None
    box = status(kube).status.sandbox
    assert box is not None and box.id == f"id-{plan.sandbox_name(UID, 1)}"
    after_create = boxes.calls[boxes.calls.index("create"):]
    assert after_create == ["create", "upload", "git_clone", "session_exec", "logs_follow"]  # no look-up again


def test_a_conflict_while_recording_an_error_never_escapes() -> None:
    sup, kube, boxes, _ = make(body(provisioning()))
    boxes.raise_on["create"] = OperatorWide("401", cause=Cause.DAYTONA_AUTH, status=401)
    kube.fail_next_write = None
    # the create intent is written first (ok), then the wait write conflicts
    original = kube.patch_status
    calls = {"n": 0}

    async def second_write_conflicts(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Conflict("changed", status=409)
        return await original(*args, **kwargs)

    kube.patch_status = second_write_conflicts  # type: ignore[method-assign]
    assert step(sup) is not None
    assert status(kube).status.phase == "Provisioning"


def test_refusals_that_are_not_the_tasks_fault_never_fail_it() -> None:
    sup, kube, boxes, _ = make(body(provisioning()))
    boxes.raise_on["create"] = Fatal("daytona create failed (HTTP 418): teapot")
    delay = step(sup)
    assert delay is not None and delay >= 0
    assert status(kube).status.phase == "Provisioning"
    assert "teapot" in (status(kube).status.last_error or "")


def test_an_unexpected_exception_backs_off_instead_of_crashing() -> None:
    sup, kube, boxes, _ = make(body(provisioning()))
    for failures in (1, 2):
        boxes.raise_on["get"] = KeyError("surprise")
        delay = step(sup)
        assert delay is not None and delay >= 0
        assert sup.backoff.failures == failures
    assert step(sup) is not None and sup.backoff.failures == 0  # a step that works resets the backoff
    assert status(kube).status.phase == "Running"


def test_last_error_writes_are_throttled() -> None:
    sup, kube, boxes, _ = make(body(provisioning()))
    for _ in range(3):
        boxes.raise_on["get"] = Retryable("busy")
        step(sup)
    assert kube.writes == 1



# ------------------------------------------------- the launch step (create, start, Running)


def test_an_admitted_task_is_running_after_one_step_of_two_writes_and_one_event() -> None:
    """Admission, the create and the agent's start happen in one step; what the create and the
    start returned is written as Running without looking at the sandbox or the session again."""
    sup, kube, boxes, events = make(body())
    assert step(sup) is not None
    task = status(kube)
    assert (task.status.phase, task.status.reason) == ("Running", "AgentStarted")
    assert task.status.sandbox is not None and task.status.sandbox.id == f"id-{plan.sandbox_name(UID, 1)}"
    assert task.status.agent is not None and task.status.agent.command_id == "cmd-1"
    assert task.status.running_time == NOW and task.status.intent is None
    assert kube.writes == 2  # Provisioning (the create intent, before the create), then Running
    assert boxes.calls == ["create", "upload", "git_clone", "session_exec", "logs_follow"]
    assert events == [("Normal", "AgentStarted")]  # one event for the phase the step ended in


def test_a_create_that_returns_a_sandbox_not_ready_leaves_the_start_to_the_next_look() -> None:
    sup, kube, boxes, events = make(body())
    boxes.creates("starting")
    assert step(sup) == 0
    assert status(kube).status.phase == "Provisioning"
    assert boxes.calls == ["create"]  # nothing uploaded into a sandbox that cannot run commands
    assert events == [("Normal", "Provisioning")]


def test_a_sandbox_lost_during_the_launch_is_recorded_so_that_its_loss_counts() -> None:
    """The create returned it (so it existed), then it vanished under the upload: its id is
    written, and the next looks that miss it count a lost attempt instead of creating it again
    under the same attempt."""
    sup, kube, boxes, events = make(body())
    boxes.raise_on["upload"] = AttemptLost("daytona upload failed (HTTP 404): not found", status=404)
    assert step(sup) == sup.rt.config.missing_recheck_seconds
    box = status(kube).status.sandbox
    assert box is not None and box.id == f"id-{plan.sandbox_name(UID, 1)}"
    del boxes.boxes[plan.sandbox_name(UID, 1)]
    step(sup)  # missing once: looked at again
    assert status(kube).status.attempts == 1
    step(sup)  # missing twice: attempt 1 is lost, attempt 2 launched in the same step
    task = status(kube)
    assert task.status.attempts == 2 and task.status.sandbox is not None
    assert task.status.sandbox.name == plan.sandbox_name(UID, 2) and task.status.phase == "Running"
    assert events[-1] == ("Warning", "SandboxLost")  # the step's warning is not hidden by its Running


def test_the_first_write_waits_for_kopfs_finalizer_instead_of_racing_it() -> None:
    """kopf adds its finalizer while the daemon starts: a first write from the body before it
    would be refused (409) and cost a re-read; the supervisor waits for the event that has it."""
    raw = body()
    sup, kube, _, _ = make(raw)
    sup.finalizer = "agenttask.io/sandbox-cleanup"
    finalized = copy.deepcopy(raw)
    finalized["metadata"].update(resourceVersion="11", finalizers=[sup.finalizer])
    kube.body = copy.deepcopy(finalized)

    async def scenario() -> None:
        class Stopped:
            def is_set(self) -> bool:
                return False

        waiting = asyncio.create_task(sup._await_finalizer(Stopped()))
        await asyncio.sleep(0)  # (let it start waiting)
        assert not waiting.done()
        sup.saw(finalized)  # the watch event of kopf's patch
        await asyncio.wait_for(waiting, 5)
        await sup.step()

    asyncio.run(scenario())
    assert kube.gets == 0 and status(kube).status.phase == "Running"  # no 409, no re-read


def test_a_recheck_of_a_streaming_agent_is_one_session_look_up_in_the_sandbox_it_runs_in() -> None:
    """Once stream_recheck_seconds have passed, the look asks only whether the command still runs,
    in the sandbox the agent was seen running in (no sandbox get); a session that is gone there
    brings the full look back."""
    sup, kube, boxes, _ = make(body())

    async def running(sandbox: Any, session_id: str) -> tuple[bool, plan.CommandObs | None]:
        boxes.calls.append("session_get")
        return True, plan.CommandObs(id="cmd-1", exit_code=None)

    async def scenario() -> tuple[list[str], list[str]]:
        await sup.step()  # launched: Running, following the log stream
        await asyncio.sleep(0)
        boxes.command = running  # type: ignore[method-assign]
        assert sup.observed_at is not None
        sup.observed_at -= sup.rt.settings.stream_recheck_seconds + 1  # the recheck is due
        calls = len(boxes.calls)
        await sup.step()
        recheck = boxes.calls[calls:]
        del boxes.command  # the session is gone (the fake's own answer): look at the sandbox itself
        sup.observed_at -= sup.rt.settings.stream_recheck_seconds + 1
        calls = len(boxes.calls)
        await sup.step()
        return recheck, boxes.calls[calls:]

    recheck, gone = asyncio.run(scenario())
    assert recheck == ["session_get"]
    assert status(kube).status.phase == "Running"
    assert gone[:3] == ["session_get", "get", "session_get"]


def test_while_the_log_stream_is_open_daytona_is_asked_only_every_stream_recheck() -> None:
    """The stream's end wakes the supervisor at the exit, so a running agent is re-observed from
    Daytona every stream_recheck_seconds, not at the plan's polls; a step in between (new output
    for the log tail) makes no Daytona call; a stream that failed brings the plan's polling back."""
    sup, kube, boxes, _ = make(body())

    async def scenario() -> tuple[float | None, list[str], float]:
        first = await sup.step()  # launched: Running, following the log stream
        await asyncio.sleep(0)  # (the follower's task starts)
        calls = len(boxes.calls)
        await sup.step()  # e.g. woken by new output
        between = boxes.calls[calls:]
        sup.follower.failures = 1  # type: ignore[union-attr]
        broken = sup._streaming_wait(AgentTask.from_body(kube.body), 2.0)
        return first, between, broken

    first, between, broken = asyncio.run(scenario())
    assert first == pytest.approx(sup.rt.settings.stream_recheck_seconds, abs=1)
    assert between == []  # nothing asked of Daytona
    assert status(kube).status.phase == "Running"
    assert broken == 2.0
