"""`kubectl agenttask`: the users' command line for AgentTasks (a kubectl plugin).

Installed with the package as the console script `kubectl-agenttask`, so with the virtualenv's
`bin/` on PATH kubectl's plugin mechanism runs it for `kubectl agenttask ...`. It talks to the
apiserver with kr8s (kubeconfig handling as kubectl: `KUBECONFIG` lists, current context,
in-cluster service account) and, for `logs`, to Daytona with the official SDK when the user has
Daytona credentials.

Modules: `cli` (arguments, exit codes, error messages), `client` (the API calls), `view` (pure
rendering of tables and descriptions), `actions` (pure: the patches and the rerun object),
`follow` (logs from Daytona or from the watched `status.logTail`).

It only reads AgentTasks and events and writes `spec.cancel` / `spec.suspend` or a new
AgentTask; it never writes status and never imports the operator's runtime.
"""
