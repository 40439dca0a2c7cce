"""Response contract: every body the sandbox server sends, checked against the SDK's own models.

`Contract.observe` is plugged into `LocalSandboxServer(response_observer=...)`. For each
response it picks the generated model the SDK would parse it with (by operation name and
status), parses it with ``Model.from_dict`` and additionally requires that

* every field the model declares as required is present as a key (the SDK tolerates some
  missing keys by reading ``None``; Daytona sends them, so the emulator must too), and
* no key is unknown to the model at any depth (the SDK would park it in
  ``additional_properties``: a sign the emulator drifted from the API).

Error responses must be the API shape ``{path, timestamp, statusCode, error, message}`` (Daytona's
``AllExceptionsFilter``) or, from the toolbox, the daemon's ``ErrorResponse``. Failures are
recorded, not raised, so the server keeps serving; the autouse fixture fails the test that
produced them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from daytona_api_client_async import models as api
from daytona_toolbox_api_client_async import models as tb
from pydantic import BaseModel

from controller.localsandbox import ObservedResponse
from controller.localsandbox.faults import MAIN_OPS, TOOLBOX_OPS

EMPTY = "empty"
STREAM = "stream"
STRINGS = "strings"  # a JSON object of strings (no generated model: {"message": ...}, {"version": ...})

# op -> (is a JSON list, model) or EMPTY / STREAM
SUCCESS: dict[str, Any] = {
    **{op: (False, api.Sandbox) for op in (
        "create", "get", "delete", "start", "stop", "archive", "autostop", "autoarchive", "autodelete", "ttl",
        "network_settings", "public")},
    "socketio": STREAM,
    "list": (False, api.ListSandboxesResponse),
    "labels": (False, api.SandboxLabels),
    "toolbox_url": (False, api.ToolboxProxyUrl),
    "snapshot_list": (False, api.PaginatedSnapshots),
    "snapshot_get": (False, api.SnapshotDto),
    "snapshot_create": (False, api.SnapshotDto),
    "snapshot_activate": (False, api.SnapshotDto),
    "snapshot_delete": EMPTY,
    "warm_pool_list": (True, api.WarmPool),
    "warm_pool_create": (False, api.WarmPool),
    "warm_pool_update": (False, api.WarmPool),
    "warm_pool_delete": EMPTY,
    "exec": (False, tb.ExecuteResponse),
    "session_create": EMPTY,
    "session_list": (True, tb.Session),
    "session_get": (False, tb.Session),
    "session_delete": EMPTY,
    "session_exec": (False, tb.SessionExecuteResponse),
    "command_get": (False, tb.Command),
    "command_logs": (False, tb.SessionCommandLogsResponse),
    "command_logs_follow": STREAM,
    "upload": (False, tb.UploadFilesResponse),
    "download": STREAM,
    "folder_create": EMPTY,
    "file_delete": EMPTY,
    "file_list": (True, tb.FileInfo),
    "file_info": (False, tb.FileInfo),
    "git_clone": EMPTY,
    "home_dir": (False, tb.UserHomeDirResponse),
    "work_dir": (False, tb.WorkDirResponse),
    "version": STRINGS,
    "build_logs_url": (False, api.Url),
    "build_logs": STREAM,
    "volume_list": (True, api.VolumeDto),
    **{op: (False, api.VolumeDto) for op in ("volume_create", "volume_get", "volume_get_by_name")},
    "volume_delete": EMPTY,
    "code_run": (False, tb.CodeRunResponse),
    "command_input": EMPTY,
    "file_download": STREAM,
    "file_find": (True, tb.Match),
    "file_search": (False, tb.SearchFilesResponse),
    "file_replace": (True, tb.ReplaceResult),
    **{op: EMPTY for op in ("file_move", "file_permissions", "file_upload", "git_add", "git_checkout", "git_pull",
                            "git_push", "git_branch_create", "git_branch_delete")},
    "git_commit": (False, tb.GitCommitResponse),
    "git_status": (False, tb.GitStatus),
    "git_branches": (False, tb.ListBranchResponse),
    "interpreter_context_create": (False, tb.InterpreterContext),
    "interpreter_context_list": (False, tb.ListContextsResponse),
    "interpreter_context_delete": STRINGS,
    "interpreter_execute": STREAM,
    "pty_create": (False, tb.PtyCreateResponse),
    "pty_list": (False, tb.PtyListResponse),
    "pty_get": (False, tb.PtySessionInfo),
    "pty_resize": (False, tb.PtySessionInfo),
    "pty_delete": STRINGS,
    "pty_connect": STREAM,
    "pty_create_connect": STREAM,
}
API_ERROR_KEYS = {"path", "timestamp", "statusCode", "error", "message"}


def drift(model_cls: type[BaseModel], body: Any, where: str = "$") -> list[str]:
    """Problems with `body` as an instance of `model_cls` (empty list = conforms)."""
    if not isinstance(body, dict):
        return [f"{where}: expected an object, got {type(body).__name__}"]
    problems: list[str] = []
    aliases = {name: (f.serialization_alias or f.alias or name) for name, f in model_cls.model_fields.items()
               if name != "additional_properties"}
    for name, f in model_cls.model_fields.items():
        if name != "additional_properties" and f.is_required() and aliases[name] not in body:
            problems.append(f"{where}: required key {aliases[name]!r} missing")
    unknown = set(body) - set(aliases.values())
    if unknown:
        problems.append(f"{where}: keys unknown to {model_cls.__name__}: {sorted(unknown)}")
    try:
        instance = model_cls.from_dict(body)  # type: ignore[attr-defined]
    except Exception as exc:
        return [*problems, f"{where}: {model_cls.__name__}.from_dict failed: {exc}"]
    problems += _nested(instance, where)
    return problems


def _nested(instance: BaseModel, where: str) -> list[str]:
    problems: list[str] = []
    for name in type(instance).model_fields:
        value = getattr(instance, name)
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if isinstance(item, BaseModel):
                extra = getattr(item, "additional_properties", {})
                if extra:
                    problems.append(f"{where}.{name}[{i}]: unknown keys {sorted(extra)}")
                problems += _nested(item, f"{where}.{name}[{i}]")
    return problems


def check(resp: ObservedResponse) -> list[str]:
    """Problems with one observed response."""
    where = f"{resp.method} {resp.path} [{resp.op} {resp.status}]"
    if resp.op.startswith("admin_"):
        return [] if isinstance(resp.body, dict) else [f"{where}: admin response is not a JSON object"]
    if resp.status >= 400:
        return [f"{where}: {p}" for p in _check_error(resp)]
    expected = SUCCESS.get(resp.op)
    if expected is None:
        return [f"{where}: no contract for this operation"]
    if expected == STREAM:
        return [] if resp.streamed else [f"{where}: expected a streamed response"]
    if expected == EMPTY:
        return [] if not resp.raw else [f"{where}: expected an empty body, got {resp.raw[:80]!r}"]
    if expected == STRINGS:
        ok = isinstance(resp.body, dict) and resp.body and all(isinstance(v, str) for v in resp.body.values())
        return [] if ok else [f"{where}: expected a JSON object of strings"]
    is_list, model = expected
    if resp.content_type != "application/json":
        return [f"{where}: content type {resp.content_type}"]
    if is_list:
        if not isinstance(resp.body, list):
            return [f"{where}: expected a JSON list"]
        return [f"{where}: {p}" for i, item in enumerate(resp.body) for p in drift(model, item, f"$[{i}]")]
    return [f"{where}: {p}" for p in drift(model, resp.body)]


def _check_error(resp: ObservedResponse) -> list[str]:
    body = resp.body
    if not isinstance(body, dict):
        return ["error body is not a JSON object"]
    if resp.op == "upload" and "errors" in body:
        return drift(tb.UploadFilesResponse, body)
    if body.get("statusCode") != resp.status:
        return [f"statusCode {body.get('statusCode')} != HTTP status {resp.status}"]
    if resp.op in TOOLBOX_OPS and "source" in body:
        return drift(tb.ErrorResponse, body)
    if set(body) != API_ERROR_KEYS or not isinstance(body["message"], str) or not isinstance(body["error"], str):
        return [f"not the API error shape: {body}"]
    return []


@dataclass
class Contract:
    """Collects every response and the contract failures among them."""

    seen: list[ObservedResponse] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def observe(self, resp: ObservedResponse) -> None:
        self.seen.append(resp)
        self.failures += check(resp)


def uncovered_operations(covered: set[str] | None = None) -> set[str]:
    """Operations of the server not in `covered` (default: those with a success contract here)."""
    return (MAIN_OPS | TOOLBOX_OPS) - (set(SUCCESS) if covered is None else covered)
