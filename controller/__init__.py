"""AgentTask operator: runs AI coding agents on GitHub issues inside Daytona sandboxes.

The package is laid out one concept per module (see docs/architecture.md). This top-level
module only carries the version; it imports nothing so that `controller.runner` and
`controller.localsandbox` stay importable on their own.
"""

__version__ = "0.1.0"
