"""``POST /toolbox/{id}/process/code-run``: run a snippet of code once (``process.code_run``).

Does: what the daemon's ``coderun`` handler does (``apps/daemon/pkg/toolbox/process/coderun``):
``python`` runs the code with ``python3 -u -`` and ``javascript`` with ``node -`` (after
``process.argv.splice(1, 1)``, so ``process.argv`` looks as it would for a file), the code fed on
stdin and ``argv`` appended, ``envs`` added to the environment; stdout and stderr are combined;
a ``timeout`` kills the process group and answers 408; lines starting with Daytona's artifact
marker are taken out of the result and parsed as chart artifacts. Unlike the daemon, which joins
``argv`` into a shell line, the arguments are passed as a list (no shell expansion).

Does not: run TypeScript (the daemon uses ``npx ts-node``, which is not installed here: the answer
is exit code 1 with a message saying so), or wrap matplotlib (charts appear only if the code
prints the marker lines itself).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from .context import Route, ctx, json_body, json_response
from .errors import daemon_error
from .isolation import build_argv
from .processes import ExecTimeout

PREFIX = "/toolbox/{sandbox}"
ARTIFACT_MARKER = "dtn_artifact_k39fd2:"
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LANGUAGES = ("python", "javascript", "typescript")


def parse_artifacts(output: str) -> tuple[str, dict[str, Any] | None]:
    """``ParseArtifacts``: the output without marker lines, and the charts they carried."""
    charts: list[Any] = []
    kept = []
    for line in output.split("\n"):
        if not line.startswith(ARTIFACT_MARKER):
            kept.append(line)
            continue
        try:
            artifact = json.loads(line[len(ARTIFACT_MARKER) :].strip() or "null")
        except ValueError:
            continue
        if isinstance(artifact, dict) and artifact.get("type") == "chart" and isinstance(artifact.get("value"), dict):
            charts.append(artifact["value"])
    return "\n".join(kept), ({"charts": charts} if charts else None)


def program(language: str, code: str, argv: list[str]) -> tuple[list[str], bytes] | None:
    """(argv, stdin) running `code`; None for a language that cannot run here."""
    if language == "python":
        return ["python3", "-u", "-", *argv], code.encode()
    if language == "javascript":
        return ["node", "-", *argv], ("process.argv.splice(1, 1);\n" + code).encode()
    return None


async def code_run(request: web.Request) -> web.StreamResponse:
    c = ctx(request)
    rec, procs = c.store.running(request.match_info["sandbox"])
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        raise daemon_error(400, "code is required", "INVALID_REQUEST_BODY")
    language = body.get("language") or "python"
    if language not in LANGUAGES:
        raise daemon_error(400, f"unsupported language: {language}")
    argv = body.get("argv") or []
    envs = body.get("envs") or {}
    timeout = body.get("timeout")
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise daemon_error(400, "argv must be a list of strings", "INVALID_REQUEST_BODY")
    if not isinstance(envs, dict) or not all(isinstance(v, str) and _ENV_KEY.match(k) for k, v in envs.items()):
        raise daemon_error(400, "envs must map valid variable names to strings")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0):
        raise daemon_error(400, "timeout must be a non-negative integer", "INVALID_REQUEST_BODY")
    run = program(language, body["code"], argv)
    if run is None:
        return json_response({"exitCode": 1, "result": f"{language} code-run needs ts-node, which the embedded "
                              "sandbox server does not install"})  # fmt: skip
    launch = build_argv(c.isolation, c.store.launch_context(rec, c.store.home(rec), envs), run[0])
    try:
        code, output = await procs.execute(launch, float(timeout) if timeout else None, stdin=run[1])
    except ExecTimeout:
        raise daemon_error(408, "command execution timeout", "REQUEST_TIMEOUT") from None
    result, artifacts = parse_artifacts(output)
    answer: dict[str, Any] = {"exitCode": code, "result": result}
    if artifacts is not None:
        answer["artifacts"] = artifacts
    return json_response(answer)


ROUTES: list[Route] = [Route("POST", PREFIX + "/process/code-run", "code_run", code_run)]
