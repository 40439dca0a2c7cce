"""`kubectl agenttask COMMAND`: arguments, dispatch, error messages and exit codes.

Exit codes (docs/kubectl-plugin.md):
  0  success (for `logs -f`: the task Succeeded)
  1  an error: not found, forbidden, the API server unreachable or refusing, a refused action
  2  usage: unknown command or flag, bad arguments
  3  `logs -f` only: the task finished Failed (any reason, Cancelled included)
  130 interrupted (Ctrl-C)
Errors are one line on stderr starting with `error:` (like kubectl), never a traceback.

Flags follow kubectl's: `-n/--namespace`, `-A/--all-namespaces`, `--context`, `--kubeconfig`,
`-o/--output`, `-l/--selector`; they may come before or after the command's arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

import pydantic

from ..api import Phase
from . import actions, view
from .client import AlreadyExists, Client, Forbidden, NotFound, PluginError
from .follow import DaytonaFollower, StatusTailFollower, daytona_credentials

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_TASK_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
_RERUN_TRIES = 100


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


def _common(parser: argparse.ArgumentParser, *, output: Sequence[str] = ()) -> None:
    parser.add_argument("-n", "--namespace", help="namespace (default: the context's, else 'default')")
    parser.add_argument("--context", help="kubeconfig context to use (default: the current context)")
    parser.add_argument("--kubeconfig", help="kubeconfig file(s) (default: $KUBECONFIG, else ~/.kube/config)")
    if output:
        parser.add_argument("-o", "--output", choices=list(output), help="output format")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kubectl agenttask", description="Work with AgentTasks (agenttask.io): follow an "
                     "agent's logs, describe, cancel, suspend, resume or re-run tasks.",
                     epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 the followed task failed (logs -f).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("list", aliases=["ls", "get"], help="list AgentTasks")
    _common(p, output=("json", "yaml", "wide", "name"))
    p.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    p.add_argument("-l", "--selector", help="label selector (e.g. agenttask.io/source=github-webhook)")
    p.add_argument("--phase", action="append", default=[], help="only this phase (repeatable, or comma-separated)")
    p.add_argument("--requester", help="only tasks whose spec.audit.requestedBy is this")

    p = sub.add_parser("describe", help="show one task: conditions, result, usage, pull request, events")
    _common(p, output=("json", "yaml"))
    p.add_argument("name")

    p = sub.add_parser("logs", help="print (or follow with -f) the agent's output")
    _common(p)
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true", help="follow until the task finishes; the exit code "
                   "is then its outcome (0 Succeeded, 3 Failed)")
    p.add_argument("--source", choices=["auto", "daytona", "status"], default="auto",
                   help="daytona: stream from Daytona (needs DAYTONA_API_KEY, optional DAYTONA_API_URL); status: "
                   "the task's status.logTail (kubectl permissions only); auto (default): daytona when "
                   "DAYTONA_API_KEY is set")

    for name, text in (("cancel", "cancel a task (it ends Failed/Cancelled; record and logs are kept)"),
                       ("suspend", "suspend a task (its sandbox is stopped and kept, its slot freed)"),
                       ("resume", "resume a suspended task in the same sandbox")):
        p = sub.add_parser(name, help=text)
        _common(p)
        p.add_argument("name")

    p = sub.add_parser("rerun", help="create a new AgentTask from a task's spec (like kubectl create job --from)")
    _common(p, output=("json", "yaml", "name"))
    p.add_argument("name")
    p.add_argument("--name", dest="new_name", help="name of the new task (default: <name>-rerun-<n>)")
    return parser


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _print(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _warn(text: str) -> None:
    sys.stderr.write(text)


async def _connect(args: argparse.Namespace) -> Client:
    return await Client.connect(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace)


async def _list(args: argparse.Namespace) -> int:
    client = await _connect(args)
    phases = [p.strip() for value in args.phase for p in value.split(",") if p.strip()]
    known = {p.value.lower() for p in Phase}
    unknown = [p for p in phases if p.lower() not in known]
    if unknown:
        raise _Usage(f"unknown phase {unknown[0]!r}; one of {', '.join(p.value for p in Phase)}")
    items = await client.list_tasks(all_namespaces=args.all_namespaces, selector=args.selector)
    items = sorted((o for o in items if view.matches(o, phases=phases, requester=args.requester)), key=view.sort_key)
    if args.output in ("json", "yaml"):
        _print(view.dump({"apiVersion": "v1", "kind": "List", "items": items}, args.output))
    elif args.output == "name":
        _print("".join(f"agenttask.agenttask.io/{o['metadata']['name']}\n" for o in items))
    elif not items:
        where = "any namespace" if args.all_namespaces else f"{client.namespace} namespace"
        sys.stderr.write(f"No resources found in {where}.\n")
    else:
        _print(view.list_table(items, now=_now(), all_namespaces=args.all_namespaces, wide=args.output == "wide"))
    return EXIT_OK


async def _describe(args: argparse.Namespace) -> int:
    client = await _connect(args)
    obj = await client.get(args.name)
    if args.output:
        _print(view.dump(obj, args.output))
        return EXIT_OK
    try:
        events = await client.events(obj)
    except Forbidden:
        events = []
        sys.stderr.write("warning: not allowed to list events in this namespace; Events are not shown\n")
    _print(view.describe(obj, events, now=_now()))
    return EXIT_OK


async def _logs(args: argparse.Namespace) -> int:
    client = await _connect(args)
    obj = await client.get(args.name)
    credentials = daytona_credentials()
    if args.source == "daytona" and credentials is None:
        raise PluginError("--source=daytona needs DAYTONA_API_KEY (and DAYTONA_API_URL unless Daytona's cloud)")
    follower: DaytonaFollower | StatusTailFollower
    if credentials is not None and args.source != "status":
        follower = DaytonaFollower(client, args.name, _print, api_url=credentials[0], api_key=credentials[1],
                                   target=credentials[2], warn=_warn)
    else:
        follower = StatusTailFollower(client, args.name, _print)
    result = await follower.run(obj, follow=args.follow)
    if args.follow and result == Phase.FAILED:
        return EXIT_TASK_FAILED
    return EXIT_OK


async def _patch(args: argparse.Namespace) -> int:
    client = await _connect(args)
    obj = await client.get(args.name)
    if args.command == "cancel":
        patch, done = actions.cancel_patch(obj), "cancelled"
    else:
        suspend = args.command == "suspend"
        patch, done = actions.suspend_patch(obj, suspend=suspend), "suspended" if suspend else "resumed"
    if patch is None:
        _print(f"agenttask.agenttask.io/{args.name} already {done}\n")
        return EXIT_OK
    await client.patch_spec(args.name, patch)
    _print(f"agenttask.agenttask.io/{args.name} {done}\n")
    return EXIT_OK


async def _rerun(args: argparse.Namespace) -> int:
    client = await _connect(args)
    old = await client.get(args.name)
    created: dict[str, Any] | None = None
    for n in range(1, _RERUN_TRIES + 1):
        name = args.new_name or actions.rerun_name(args.name, n)
        try:
            created = await client.create(actions.rerun_body(old, name=name))
            break
        except AlreadyExists:
            if args.new_name:
                raise
    if created is None:
        created = await client.create(actions.rerun_body(old, generate=True))
    if args.output in ("json", "yaml"):
        _print(view.dump(created, args.output))
    elif args.output == "name":
        _print(f"agenttask.agenttask.io/{created['metadata']['name']}\n")
    else:
        _print(f"agenttask.agenttask.io/{created['metadata']['name']} created (rerun of {args.name})\n")
    return EXIT_OK


class _Usage(Exception):
    pass


_HANDLERS = {"list": _list, "ls": _list, "get": _list, "describe": _describe, "logs": _logs, "cancel": _patch,
             "suspend": _patch, "resume": _patch, "rerun": _rerun}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # kr8s warns on every connection to an apiserver newer than the versions it was tested with
    warnings.filterwarnings("ignore", message="Kubernetes version .* is not supported", category=UserWarning)
    try:
        return asyncio.run(_HANDLERS[args.command](args))
    except _Usage as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    except NotFound as exc:
        sys.stderr.write(f"Error from server (NotFound): {exc}\n")
        return EXIT_ERROR
    except Forbidden as exc:
        sys.stderr.write(f"Error from server (Forbidden): {exc}\n")
        return EXIT_ERROR
    except (PluginError, actions.Refused) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_ERROR
    except pydantic.ValidationError as exc:
        sys.stderr.write(f"error: the AgentTask does not have the expected shape: {exc.errors()[0]['msg']}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `kubectl agenttask logs x | head`
        return EXIT_OK

