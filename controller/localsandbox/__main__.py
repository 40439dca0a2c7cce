"""``python -m controller.localsandbox``: the same as ``agenttask sandbox-server``."""

from __future__ import annotations

import argparse
import sys

from . import cli


def main() -> int:
    """Parse the sandbox-server flags and serve."""
    parser = argparse.ArgumentParser(prog="python -m controller.localsandbox")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_parser(sub, "serve")
    return cli.run(parser.parse_args(["serve", *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
