"""Build the runner zipapp the operator uploads as `<context dir>/runner.pyz`.

The archive holds this package's modules as the top-level package `agenttask_runner` (a name
that cannot collide with a `controller` package in the repository under work) and a root
`__main__.py` that runs it, so `python3 runner.pyz` is the whole command. Bytes are
deterministic: sorted entries, fixed timestamps and permissions, so the operator can hash the
archive. Standard library only: the operator imports this module, the sandbox never does.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

PACKAGE = "agenttask_runner"
SHEBANG = b"#!/usr/bin/env python3\n"
_EPOCH = (1980, 1, 1, 0, 0, 0)
_MAIN = f"from {PACKAGE}.main import main\n\nraise SystemExit(main())\n".encode()


def build_zipapp() -> bytes:
    """The runner as a zipapp: `python3 runner.pyz` runs `controller.runner.main.main()`."""
    source = Path(__file__).resolve().parent
    entries = {"__main__.py": _MAIN}
    for module in source.glob("*.py"):
        entries[f"{PACKAGE}/{module.name}"] = module.read_bytes()
    buffer = io.BytesIO()
    buffer.write(SHEBANG)
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, whatever builds it
            info.external_attr = 0o644 << 16
            archive.writestr(info, entries[name])
    return buffer.getvalue()
