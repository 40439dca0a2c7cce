"""The `agenttask` command line: one sub-command per product entry point.

Each sub-command lives in the module that owns it and exposes `add_parser(subparsers)`
plus a `run(args) -> int` function; this module only wires them together, so that
importing the CLI does not import the operator, the sandbox server and the dev cluster
all at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# sub-command name -> module exposing add_parser() and run()
_COMMANDS: dict[str, str] = {
    "run": "controller.operator",
    "demo": "controller.demo",
    "dev-cluster": "controller.devcluster.cli",
    "images": "controller.images.cli",
    "sandbox-server": "controller.localsandbox.cli",
    "snapshot": "controller.snapshots_cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agenttask", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in _COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_parser(sub, name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(_COMMANDS[args.command])
    code: int = module.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
