"""A loopback-only door into the node's network namespace for host tools (kubectl, helm, tests).

`socat` listens on 127.0.0.1:<port> of the host and, per connection, runs
`nsenter --net=<netns file> socat STDIO TCP:<host>:<port>` to reach a listener inside the
namespace. Nothing listens on any other host address. socat runs the command without a shell
(it splits the string on spaces), so the namespace path must be a plain path; it is checked.
"""

from __future__ import annotations

import re
from pathlib import Path

_PLAIN = re.compile(r"[A-Za-z0-9._/+-]+")


def socat_argv(*, netns_file: Path, listen_port: int, target_host: str, target_port: int) -> list[str]:
    path = str(netns_file)
    if not _PLAIN.fullmatch(path):
        raise ValueError(f"the state directory path must be plain (letters, digits, . _ / + -): {path!r}")
    if not re.fullmatch(r"[0-9.]+", target_host):
        raise ValueError(f"target host must be an IPv4 address: {target_host!r}")
    return ["socat", f"TCP-LISTEN:{int(listen_port)},bind=127.0.0.1,fork,reuseaddr",
            f"EXEC:nsenter --net={path} socat STDIO TCP\\:{target_host}\\:{int(target_port)}"]
