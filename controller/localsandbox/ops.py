"""Operation names: what stats count and fault settings key on, and which throttler guards each.

Every route has one operation name (``api.ROUTES``, ``toolbox.ROUTES``, ... declare it); a
unit test keeps these sets and the routes in step. `throttler_of` names the NestJS throttler
Daytona's API applies to an operation (``apps/api/src/app.module.ts`` throttlers,
``@ThrottlerScope`` on ``controllers/sandbox.controller.ts``): ``sandbox-create`` for create,
``sandbox-lifecycle`` for delete/start/stop/archive/recover, ``authenticated`` for the rest.
The toolbox is served by Daytona's proxy, which has no throttler of its own; a 429 injected on a
toolbox operation uses the API's ``authenticated`` name.

Does not: know about handlers or HTTP.
"""

from __future__ import annotations

MAIN_OPS = frozenset({
    "create", "get", "list", "delete", "start", "stop", "archive", "labels", "autostop",
    "autoarchive", "autodelete", "ttl", "toolbox_url", "network_settings", "public", "build_logs_url", "build_logs",
    "snapshot_list", "snapshot_get", "snapshot_create", "snapshot_delete", "snapshot_activate",
    "warm_pool_list", "warm_pool_create", "warm_pool_update", "warm_pool_delete",
    "volume_list", "volume_create", "volume_get", "volume_get_by_name", "volume_delete",
})  # fmt: skip
TOOLBOX_OPS = frozenset({
    "exec", "code_run", "session_create", "session_list", "session_get", "session_delete",
    "session_exec", "command_get", "command_logs", "command_logs_follow", "command_input",
    "upload", "download", "file_upload", "file_download", "folder_create", "file_delete",
    "file_list", "file_info", "file_find", "file_search", "file_replace", "file_move",
    "file_permissions", "git_clone", "git_status", "git_add", "git_commit", "git_branches",
    "git_branch_create", "git_branch_delete", "git_checkout", "git_pull", "git_push",
    "home_dir", "work_dir", "version",
    "interpreter_context_create", "interpreter_context_list", "interpreter_context_delete",
    "interpreter_execute", "pty_create", "pty_list", "pty_get", "pty_delete", "pty_resize",
    "pty_connect", "pty_create_connect",
})  # fmt: skip
INTERNAL_OPS = frozenset({"pool_create", "unknown", "socketio"})
OPERATIONS = MAIN_OPS | TOOLBOX_OPS | INTERNAL_OPS
LIFECYCLE_OPS = frozenset({"delete", "start", "stop", "archive"})


def throttler_of(op: str) -> str:
    """The Daytona throttler whose ``Retry-After-<name>`` header a 429 on `op` carries."""
    if op == "create":
        return "sandbox-create"
    if op in LIFECYCLE_OPS:
        return "sandbox-lifecycle"
    return "authenticated"
