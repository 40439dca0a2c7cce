"""`agenttask images build|sizes`: the project's images, built locally with podman.

`build [NAME...]` builds (or finds, by content hash) the operator and agent images (and `pause`,
the node's pod sandbox image, when named) and prints `<NAME>_IMAGE=<ref>` per image on stdout;
progress and sizes go to stderr. `sizes REF` prints where the image's bytes go.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .build import RECIPES, archive, ensure_image
from .podman import Podman, PodmanError
from .sizes import layers, tree


def add_parser(sub: Any, name: str) -> None:
    parser = sub.add_parser(name, help="build the operator and agent images with podman (local Debian bases)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="build what changed and print <NAME>_IMAGE=<ref>")
    build.add_argument("names", nargs="*", metavar="NAME",
                       help=f"images to build: {', '.join(RECIPES)} (default: operator agent)")
    build.add_argument("--archive", action="store_true",
                       help="also write a docker-archive per image (printed as <NAME>_ARCHIVE=<path>)")
    sizes = actions.add_parser("sizes", help="where an image's bytes go (layers and directories)")
    sizes.add_argument("ref")
    sizes.add_argument("--depth", type=int, default=3, help="directory depth to group by (default: 3)")
    sizes.add_argument("--top", type=int, default=20, help="largest directories to list (default: 20)")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    podman = Podman.default()
    try:
        if args.action == "sizes":
            for layer in layers(podman, args.ref):
                if layer.size:
                    _say(f"layer {layer.size / 1e6:8.1f} MB  {layer.created_by[:110]}")
            for path, size in tree(podman, args.ref, depth=args.depth).most_common(args.top):
                print(f"{size / 1e6:8.1f} MB  {path}")
            return 0
        names = args.names or ["operator", "agent"]
        unknown = [n for n in names if n not in RECIPES]
        if unknown:
            _say(f"agenttask images: unknown image {', '.join(unknown)} (choose from {', '.join(RECIPES)})")
            return 2
        for name in names:
            built = ensure_image(name, podman=podman, log=_say)
            how = f"built in {built.seconds:.0f}s" if built.built else "unchanged"
            _say(f"{name}: {built.ref}, {built.size / 1e6:.0f} MB ({how})")
            print(f"{name.upper()}_IMAGE={built.ref}", flush=True)
            if args.archive:
                print(f"{name.upper()}_ARCHIVE={archive(built.ref, podman=podman)}", flush=True)
        return 0
    except PodmanError as exc:
        _say(f"agenttask images: {exc}")
        return 1
