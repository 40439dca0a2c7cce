"""What a stopped dev-cluster node may not leave behind: processes, mounts, cgroups, namespaces,
fixed-path directories, changed kernel tunables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from controller.devcluster import hoststate
from controller.devcluster.netns import processes_in

FIXED_DIRS = hoststate.LEFTOVER_DIRS


def snapshot() -> dict[str, Any]:
    """What the host looks like before a node starts."""
    return {"sysctls": hoststate.SysctlGuard("probe").read(),
            "dirs": [d for d in FIXED_DIRS if os.path.isdir(d)]}


def leftovers(state_dir: Path, recorded: dict[str, Any], before: dict[str, Any]) -> list[str]:
    state_dir = state_dir.resolve()
    found = []
    inode = recorded.get("netns_inode")
    if isinstance(inode, int) and (pids := processes_in(inode)):
        found.append(f"processes still in the node's network namespace: {pids}")
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(state_dir) in cmdline:
                found.append(f"process {entry} still runs: {cmdline[:200]}")
    found += [f"still mounted: {m}" for m in hoststate.mounts_below(state_dir)]
    found += [f"cgroup left: {p}" for p in hoststate.cgroup_paths(f"agenttask-{recorded['node_id']}")]
    found += [f"directory left: {d}" for d in FIXED_DIRS if os.path.isdir(d) and d not in before["dirs"]]
    now = hoststate.SysctlGuard("probe").read()
    found += [f"kernel tunable {k} is {now.get(k)}, was {v}" for k, v in before["sysctls"].items() if now.get(k) != v]
    return found
