"""The embedded Daytona-compatible sandbox server (``agenttask sandbox-server``).

An aiohttp server implementing the subset of Daytona's REST and toolbox APIs that the
official ``daytona`` SDK uses, so the operator runs locally without a Daytona account. Each
sandbox is a directory plus the process groups of its commands. See `server` for the Python
API, `cli` for the command line, `faults` for fault injection and `api`/`toolbox`/`files`
for the endpoints.

Imports nothing from the rest of ``controller`` and nothing from the Daytona SDK.
"""

from .faults import Faults
from .server import LocalSandboxServer, ObservedResponse, ResponseObserver

__all__ = ["Faults", "LocalSandboxServer", "ObservedResponse", "ResponseObserver"]
