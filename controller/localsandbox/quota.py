"""Organisation quotas as Daytona checks them on create and start (pure).

Does: ``validateOrganizationQuotas`` (``services/sandbox.service.ts``): first the per-sandbox
maxima (``CPU request 8 exceeds maximum allowed per sandbox (4).`` ...), then the organisation
totals against the usage of every other sandbox plus this request (``Total CPU limit exceeded.
Maximum allowed: 8.`` ...), each a 400 with Daytona's message and its trailing advice line.
Usage counts CPU and memory of sandboxes in a compute-consuming state and disk of those in a
disk-consuming state (`states.COMPUTE_STATES`, `states.DISK_STATES`): a stopped sandbox still
holds its disk, an archived one holds nothing. ``exhausted`` (a fault) makes the named total
fail whatever the usage.

Does not: know about records beyond the fields it sums, or keep state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .errors import bad_request
from .settings import Quota
from .states import COMPUTE_STATES, DISK_STATES

PER_SANDBOX_LIMIT_MESSAGE = (
    "Need higher resource limits per-sandbox? Contact us at support@daytona.io and let us know about your use case."
)
ARCHIVE_SANDBOXES_MESSAGE = "Consider archiving your unused Sandboxes to free up available storage."


def upgrade_tier_message(dashboard_url: str) -> str:
    """``UPGRADE_TIER_MESSAGE`` (``common/constants/error-messages.ts``)."""
    return f"To increase concurrency limits, upgrade your organization's Tier by visiting {dashboard_url}/limits."


@dataclass(frozen=True)
class Request:
    """The resources one create or start asks for."""

    cpu: int
    memory: int
    disk: int
    gpu: int = 0


@dataclass
class Usage:
    """Summed usage of an organisation's sandboxes."""

    cpu: int = 0
    memory: int = 0
    disk: int = 0
    gpu: int = 0


class Consumer(Protocol):
    """What `usage` reads from a sandbox (structural; `SandboxRecord` fits)."""

    id: str
    state: str
    cpu: int
    memory: int
    disk: int
    gpu: int


def usage(records: Iterable[Consumer], exclude: str | None = None) -> Usage:
    """Usage of `records`, leaving out the sandbox with id `exclude` (the one being started)."""
    total = Usage()
    for rec in records:
        if rec.id == exclude:
            continue
        if rec.state in COMPUTE_STATES:
            total.cpu += rec.cpu
            total.memory += rec.memory
            total.gpu += rec.gpu
        if rec.state in DISK_STATES:
            total.disk += rec.disk
    return total


def check(quota: Quota, used: Usage, req: Request, *, dashboard_url: str, exhausted: str | None = None) -> None:
    """Raise Daytona's 400 if `req` on top of `used` breaks `quota` (or the `exhausted` total)."""
    if quota.max_cpu_per_sandbox is not None and req.cpu > quota.max_cpu_per_sandbox:
        raise bad_request(f"CPU request {req.cpu} exceeds maximum allowed per sandbox "
                          f"({quota.max_cpu_per_sandbox}).\n{PER_SANDBOX_LIMIT_MESSAGE}")  # fmt: skip
    if quota.max_memory_per_sandbox is not None and req.memory > quota.max_memory_per_sandbox:
        raise bad_request(f"Memory request {req.memory}GB exceeds maximum allowed per sandbox "
                          f"({quota.max_memory_per_sandbox}GB).\n{PER_SANDBOX_LIMIT_MESSAGE}")  # fmt: skip
    if quota.max_disk_per_sandbox is not None and req.disk > quota.max_disk_per_sandbox:
        raise bad_request(f"Disk request {req.disk}GB exceeds maximum allowed per sandbox "
                          f"({quota.max_disk_per_sandbox}GB).\n{PER_SANDBOX_LIMIT_MESSAGE}")  # fmt: skip
    upgrade = upgrade_tier_message(dashboard_url)

    def over(kind: str, total: int | None, current: int, asked: int) -> bool:
        return exhausted == kind or (total is not None and current + asked > total)

    if over("cpu", quota.total_cpu, used.cpu, req.cpu):
        limit = quota.total_cpu if quota.total_cpu is not None else used.cpu
        raise bad_request(f"Total CPU limit exceeded. Maximum allowed: {limit}.\n{upgrade}")
    if over("memory", quota.total_memory, used.memory, req.memory):
        limit = quota.total_memory if quota.total_memory is not None else used.memory
        raise bad_request(f"Total memory limit exceeded. Maximum allowed: {limit}GiB.\n{upgrade}")
    if over("disk", quota.total_disk, used.disk, req.disk):
        limit = quota.total_disk if quota.total_disk is not None else used.disk
        raise bad_request(f"Total disk limit exceeded. Maximum allowed: {limit}GiB.\n"
                          f"{ARCHIVE_SANDBOXES_MESSAGE}\n{upgrade}")  # fmt: skip
