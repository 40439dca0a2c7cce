"""The code interpreter's worker: one per interpreter context, run as ``python3 -u <this file>``.

Stdlib only; it runs inside the sandbox, started by `interpreter`. It reads one JSON request per
line on stdin (``{"id", "code", "envs"}``), runs the code in one namespace that lives as long as
the process (so variables, imports and functions persist between executions), lets the code's
stdout and stderr go to the worker's own (the server streams them), and reports on the file
descriptor named by ``$LOCALSANDBOX_INTERPRETER_FD``: ``{"id", "type": "error", "name", "value",
"traceback"}`` when the code raised, then ``{"id", "type": "done"}``. Before each ``done`` it
writes the request's end marker (``\\x00<token>:<id>\\x00``, token from
``$LOCALSANDBOX_INTERPRETER_TOKEN``) to stdout and stderr, so the server knows both streams are
complete.

Does not: restrict the code in any way (the sandbox is the boundary).
"""

from __future__ import annotations

import json
import os
import sys
import traceback

TOKEN = os.environ.pop("LOCALSANDBOX_INTERPRETER_TOKEN", "")
CONTROL = os.fdopen(int(os.environ.pop("LOCALSANDBOX_INTERPRETER_FD", "3")), "w", buffering=1)
NAMESPACE: dict[str, object] = {"__name__": "__main__", "__builtins__": __builtins__}


def run(code: str) -> None:
    """Execute `code` in the context's namespace (a final expression's value is not printed)."""
    exec(compile(code, "<stdin>", "exec"), NAMESPACE)  # noqa: S102 - running the client's code is the job


def user_traceback(exc: BaseException) -> str:
    """The traceback without the worker's own frames."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)] if frames else []
    return "".join([*lines, *traceback.format_exception_only(type(exc), exc)])


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        os.environ.update(request.get("envs") or {})
        try:
            run(request["code"])
        except BaseException as exc:  # everything the code raises, SystemExit included, is its result
            CONTROL.write(json.dumps({"id": request["id"], "type": "error", "name": type(exc).__name__,
                                      "value": str(exc), "traceback": user_traceback(exc)}) + "\n")
        marker = f"\x00{TOKEN}:{request['id']}\x00"
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            stream.write(marker)
            stream.flush()
        CONTROL.write(json.dumps({"id": request["id"], "type": "done"}) + "\n")


if __name__ == "__main__":
    main()
