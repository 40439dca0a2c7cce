"""The project's container images, built locally with podman: `agenttask images build`.

`podman.py` (the project's own podman configuration and storage under the user's cache),
`bases.py` (Debian bases made with mmdebstrap when no registry is reachable), `context.py` (the
build context's content hash), `build.py` (build once per content, docker-archives for the node),
`sizes.py` (where the bytes go), `cli.py`. Imports nothing from the operator.
"""
