"""The embedded Daytona-compatible sandbox server (``agenttask sandbox-server``).

An aiohttp server answering Daytona's REST API, its Socket.IO event channel and the toolbox
daemon's API the way Daytona does, failures included, so the operator runs locally without a
Daytona account (docs/localsandbox.md compares it with Daytona behaviour by behaviour). Each
sandbox is a directory plus the process groups of its commands. See `server` for the Python
API, `cli` for the command line, `settings` and `faults` for what can be tuned and forced,
`states`/`actions` for the lifecycle and `api`/`toolbox`/`files`/... for the endpoints.

Imports nothing from the rest of ``controller`` and nothing from the Daytona SDK.
"""

from .faults import Faults
from .server import LocalSandboxServer, ObservedResponse, ResponseObserver

__all__ = ["Faults", "LocalSandboxServer", "ObservedResponse", "ResponseObserver"]
