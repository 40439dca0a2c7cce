"""`python -m bench.server [--live 1000] [--samples 300]`: the embedded sandbox server on its own.

Starts ``agenttask sandbox-server`` as a subprocess with no injected latency and every transition
lasting 0 s (``--transition-seconds 0``), then measures

* create latency: ``POST /api/sandbox`` answered (raw HTTP, one request at a time), and the real
  async SDK's ``create`` (which, as against Daytona, refreshes the sandbox once because the create
  answers it as ``creating``), p50/p95 over `samples` creates each;
* memory: the server's RSS with `live` sandboxes alive (created 50 at a time), and the RSS per
  sandbox above the idle server;
* list: ``GET /api/sandbox?limit=200`` over the `live` sandboxes (p50 per page).

It writes the figures into its own section of ``docs/performance.md``, between the
``<!-- localsandbox-server -->`` markers (added at the end if missing; the rest of the page is
left alone) and into ``bench/results/server.json``. A benchmark, never a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from daytona import AsyncDaytona, CreateSandboxFromSnapshotParams, DaytonaConfig

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- localsandbox-server:begin -->", "<!-- localsandbox-server:end -->"
KEY = "bench-server-key-0001"


def quantiles(values: list[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds."""
    q = statistics.quantiles(values, n=100)
    return q[49] * 1000, q[94] * 1000


async def measure(args: argparse.Namespace, root: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controller.cli", "sandbox-server", "--port", "0", "--api-key", KEY, "--root", root,
        "--transition-seconds", "0", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    api_url = (await proc.stdout.readline()).decode().strip().split("=", 1)[1]
    server = psutil.Process(proc.pid)
    out: dict[str, Any] = {}
    try:
        headers = {"Authorization": f"Bearer {KEY}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            for _ in range(20):  # warm up (first snapshot use, imports)
                async with http.post(f"{api_url}/sandbox", json={"labels": {"bench": "warm"}}) as resp:
                    await resp.read()
            out["rss_idle_mib"] = server.memory_info().rss / 2**20
            raw = []
            for _ in range(args.samples):
                started = time.perf_counter()
                async with http.post(f"{api_url}/sandbox", json={"labels": {"bench": "raw"}}) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                raw.append(time.perf_counter() - started)
            out["create_http_p50_ms"], out["create_http_p95_ms"] = quantiles(raw)
            async with AsyncDaytona(DaytonaConfig(api_url=api_url, api_key=KEY)) as d:
                sdk = []
                for _ in range(args.samples):
                    started = time.perf_counter()
                    await d.create(CreateSandboxFromSnapshotParams(labels={"bench": "sdk"}))
                    sdk.append(time.perf_counter() - started)
            out["create_sdk_p50_ms"], out["create_sdk_p95_ms"] = quantiles(sdk)
            alive = 20 + 2 * args.samples
            while alive < args.live:
                batch = min(50, args.live - alive)

                async def one() -> None:
                    async with http.post(f"{api_url}/sandbox", json={"labels": {"bench": "live"}}) as resp:
                        await resp.read()

                await asyncio.gather(*(one() for _ in range(batch)))
                alive += batch
            async with http.get(api_url.removesuffix("/api") + "/_admin/stats") as resp:
                out["sandboxes_alive"] = (await resp.json())["sandboxes_alive"]
            out["rss_live_mib"] = server.memory_info().rss / 2**20
            out["kib_per_sandbox"] = (out["rss_live_mib"] - out["rss_idle_mib"]) * 1024 / max(1, out["sandboxes_alive"])
            pages = []
            for _ in range(20):
                started = time.perf_counter()
                async with http.get(f"{api_url}/sandbox", params={"limit": "200"}) as resp:
                    await resp.read()
                pages.append(time.perf_counter() - started)
            out["list_page_p50_ms"], _ = quantiles(pages)
    finally:
        proc.terminate()
        await proc.wait()
    return out


def section(r: dict[str, Any], args: argparse.Namespace) -> str:
    return "\n".join([
        BEGIN,
        "## The embedded sandbox server on its own",
        "",
        f"Measured by `python -m bench.server --live {args.live} --samples {args.samples}` on {r['when']} "
        f"({r['machine']}): `agenttask sandbox-server` with no injected latency and every transitional "
        "state lasting 0 s (`--transition-seconds 0`; the default is 0.05 s per state).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| create, `POST /api/sandbox` answered (p50 / p95) | {r['create_http_p50_ms']:.1f} ms / "
        f"{r['create_http_p95_ms']:.1f} ms |",
        f"| create through the async Python SDK, incl. its one refresh (p50 / p95) | {r['create_sdk_p50_ms']:.1f} ms / "
        f"{r['create_sdk_p95_ms']:.1f} ms |",
        f"| server RSS idle / with {r['sandboxes_alive']} live sandboxes | {r['rss_idle_mib']:.0f} MiB / "
        f"{r['rss_live_mib']:.0f} MiB ({r['kib_per_sandbox']:.1f} KiB per sandbox) |",
        f"| `GET /api/sandbox?limit=200` over them (p50) | {r['list_page_p50_ms']:.1f} ms |",
        "",
        "The SDK's create is slower than the request because Daytona's create answers the sandbox as it "
        "was inserted (`creating`), so the SDK refreshes it once; with a transition time above 0 it "
        "also waits that long.",
        END,
    ])


def write_section(text: str) -> None:
    doc = DOC.read_text()
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + text + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    DOC.write_text(doc)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.server")
    parser.add_argument("--live", type=int, default=1000, help="sandboxes alive for the memory figure")
    parser.add_argument("--samples", type=int, default=300, help="creates per latency figure")
    parser.add_argument("--no-doc", action="store_true", help="print, do not write docs/performance.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-server-") as root:
        results = asyncio.run(measure(args, root))
    results["when"] = dt.date.today().isoformat()
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    print(json.dumps(results, indent=1, sort_keys=True))
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "server.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    if not args.no_doc:
        write_section(section(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
