"""The time-to-running plot of docs/performance.md (matplotlib, the `bench` extra).

One panel per N: the empirical distribution (CDF) of submission -> running for the baseline and
the operator, so both the queueing (the slope) and the per-task overhead (the gap) show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import report


def time_to_running(runs: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        for who, style in (("baseline", "-"), ("operator", "--")):
            values = sorted(run[who]["to_running"])
            if not values:
                continue
            share = [(i + 1) / len(values) for i in range(len(values))]
            p50 = report.percentile(values, 50) or 0.0
            ax.step(values, share, style, where="post", label=f"{who} (p50 {p50:.1f} s)")
        ax.set_title(f"N = {run['n']}, {run['concurrency']} at a time")
        ax.set_xlabel("submission → agent running (s)")
        ax.set_ylabel("share of tasks")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
