"""The in-sandbox runner: checkout, run the coding agent on an issue, push a branch, open a PR.

Standard library only (Python >= 3.11) and importing nothing else from `controller`: the
operator packs these modules into a zipapp (`pack.build_zipapp`) and runs it in the sandbox as
`python3 <context dir>/runner.pyz`; `python -m controller.runner` runs the same code.
Importing this package does nothing. The full contract is docs/runner.md; in short:

Environment: AGENTTASK_CONTEXT_DIR (default `agenttask`), AGENTTASK_GIT_TOKEN,
AGENTTASK_GITHUB_API_URL, AGENTTASK_GIT_USERNAME; anything else goes to the agent minus the
token variables. The operator sends the agent's environment (secrets included) as
<ctx>/env.json, which the runner reads, deletes and redacts every value of.

<ctx>/task.json: {"task", "repository", "issue", "agent", "pullRequest", "github"}, where
`agent` holds `command` (null: Claude Code), `workingDir` and the options model, maxTurns,
allowedTools, disallowedTools, appendSystemPrompt, mcpConfig, maxCostUsd, timeoutSeconds,
deadline. <ctx>/prompt.md is the agent's stdin; <ctx>/issue.md and <ctx>/summary.md as before;
<ctx>/git-token and <ctx>/github-token, when present, are read at every use (refreshable).

Steps: context -> clone -> branch -> agent (Claude Code headless with stream-json parsed into
readable progress and a report; stopped at its time limit or cost limit; everything it left
running killed) -> failure class, or commit/push -> PR or comment -> result.json.

result.json: outcome, branch, commit, pullRequestUrl, summary, changedFiles, agentExitCode,
error, failureClass, agent {isError, sessionId, numTurns, durationMs, model, models, costUsd,
usage, permissionDenials} (null unless Claude Code printed its result).

Exit codes, one per failure class (`errors.FailureClass`): 0 ok, 64 BadContext, 65 AgentFailed,
66 AgentTimedOut, 67 LimitReached, 68 ModelAuthFailed, 69 GitHubFailed, 70 RunnerBug,
71 ModelUnavailable, 73 GitFailed, 74 GitPushFailed.

Modules: context (task.json), credentials (tokens, fresh at each use), git, claude (argv and
env of the default agent), agent (running and stopping it), stream (stream-json), classify
(failure class), github (REST), result (result.json), log (redaction), main (the sequence).
"""
