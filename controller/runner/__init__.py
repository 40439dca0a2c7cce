"""The in-sandbox runner: checkout, run the coding agent on an issue, push a branch, open a PR.

Standard library only (Python >= 3.11) and importing nothing else from `controller`: the
operator packs these modules into a zipapp (`pack.build_zipapp`) and runs it in the sandbox as
`python3 <context dir>/runner.pyz`; `python -m controller.runner` runs the same code.
Importing this package does nothing.

Contract with the operator
--------------------------
Environment:
  AGENTTASK_CONTEXT_DIR     context directory, absolute or relative to the runner's cwd
                            (resolved once at start-up); default `agenttask`.
  AGENTTASK_GIT_TOKEN       optional secret: token for git clone/push (via askpass) and the
                            GitHub API. Never passed to the agent, never in argv/URLs/config/logs.
  AGENTTASK_GITHUB_API_URL  optional GitHub REST base URL (e.g. https://api.github.com);
                            absent -> no GitHub API calls at all.
  AGENTTASK_GIT_USERNAME    optional username for git's askpass prompt; default
                            `x-access-token` (what GitHub App installation tokens need).
  anything else             passed through to the agent (minus AGENTTASK_GIT_TOKEN,
                            GITHUB_TOKEN, GH_TOKEN).

<ctx>/task.json:
  {"task": {"namespace", "name", "uid", "attempt"},
   "repository": {"url", "baseBranch", "dir"},            # dir may be relative to cwd
   "issue": {"number", "title", "url", "author"} | null,
   "agent": {"command": [argv...] | null, "workingDir": str | null},
   "pullRequest": {"create": bool, "draft": bool, "branchPrefix": str},
   "github": {"owner", "repo"} | null}
  `issue`, `agent`, `pullRequest`, `github` may be omitted (null / CRD defaults: create and
  draft true, prefix `agenttask/`). A relative workingDir is taken relative to the checkout.
  An http(s) repository.url carrying user info is rejected (64).
<ctx>/issue.md   the issue title + body, arbitrary bytes (required when `issue` is set).
<ctx>/prompt.md  the full prompt, fed to the agent on stdin (required).
<ctx>/summary.md optional, written by the agent; wins over its stdout as the summary.

Steps:
  1. read task.json (and check prompt.md / issue.md exist);
  2. use repository.dir if it has `.git`, else `git clone --branch <baseBranch>` into it;
  3. create branch `<branchPrefix><issue>-<uid[:8]>` (`<branchPrefix>task-<uid[:8]>` without
     an issue) at HEAD;
  4. run the agent (default `claude -p --output-format text --permission-mode acceptEdits`),
     cwd = workingDir or the checkout, stdin = prompt.md, env + AGENTTASK_PROMPT_FILE,
     AGENTTASK_ISSUE_FILE, AGENTTASK_SUMMARY_FILE, AGENTTASK_CONTEXT_DIR (absolute); its
     stdout/stderr stream through (redacted); the last 4 KiB of stdout is its answer;
  5. agent exit != 0 -> result `Failed` with agentExitCode, exit with that code;
  6. changes (dirty tree incl. untracked files, or commits the agent made) -> commit
     `Fix #<n>: <title>` + summary, push `+HEAD:refs/heads/<branch>` to repository.url, then
     with GitHub configured and pullRequest.create open a (draft) PR -> `PullRequestOpened`,
     else `ChangesPushed`;
  7. no changes -> with GitHub configured and an issue, comment the answer -> `NoChanges`;
  8. write <ctx>/result.json atomically: {"outcome", "branch", "commit", "pullRequestUrl",
     "summary" (<= 4 KiB), "changedFiles", "agentExitCode", "error"}.
"GitHub configured" means AGENTTASK_GITHUB_API_URL is set and task.json has `github`.

Exit codes (result.json is written in every case the context dir exists):
  0     success: PullRequestOpened, ChangesPushed or NoChanges
  N     the agent's own non-zero exit code (127 not found, 126 not executable, 128+S when
        killed by signal S); result.json has agentExitCode = N
  64    bad or missing context (task.json, prompt.md, issue.md, workingDir, branch name)
  69    GitHub API failure (after bounded retries for 5xx/429/rate limits)
  70    internal error (a bug)
  74    git failure (clone, branch, commit, push)
An agent exiting 64/69/70/74 is told apart by `agentExitCode` in result.json.

Logging: plain lines on stderr prefixed `agenttask-runner:`; every line, the agent's streamed
output and every text sent to GitHub or written to result.json passes through a redactor that
replaces the token (and `x-access-token:…`, `ghp_…`-style, `Authorization:` patterns) with `***`.
See docs/runner.md for the security notes.
"""
