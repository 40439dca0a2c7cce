"""Request values resolved and validated exactly as Daytona's API does (pure functions).

Does:

* intervals (``services/sandbox.service.ts`` ``resolveAutoStopInterval`` /
  ``resolveAutoArchiveInterval``): a negative auto-stop or auto-archive interval is a 400;
  auto-archive 0 means the maximum (``maxAutoArchiveInterval``, 43200 minutes) and larger
  values are clamped to it; auto-delete is stored as given (negative = off, 0 = ephemeral);
* ``networkAllowList`` (``utils/network-validation.util.ts``): comma-separated IPv4 CIDRs,
  each with a prefix length, at most 10 entries (empty entries are skipped but counted, and
  the prefix is read with JavaScript ``parseInt`` semantics, as there);
* ``domainAllowList``: hostnames, optionally ``*.``-prefixed, at most 10;
* parsing an allow list into networks for enforcement (`allowed_networks`).

Does not: touch records or enforce anything (see `network`).
"""

from __future__ import annotations

import ipaddress
import re

from .errors import bad_request

_DOMAIN_RE = re.compile(r"^(\*\.)?([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,}$")
_OCTET = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]\d|\d)"
_IPV4_RE = re.compile(rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$")
_PARSE_INT_RE = re.compile(r"^\s*([+-]?\d+)")
MAX_ALLOW_LIST = 10


def resolve_auto_stop(minutes: int) -> int:
    """``resolveAutoStopInterval``."""
    if minutes < 0:
        raise bad_request("Auto-stop interval must be non-negative")
    return minutes


def resolve_auto_archive(minutes: int, maximum: int) -> int:
    """``resolveAutoArchiveInterval``: 0 is the maximum, larger values are clamped to it."""
    if minutes < 0:
        raise bad_request("Auto-archive interval must be non-negative")
    if minutes == 0:
        return maximum
    return min(minutes, maximum)


def _parse_int(text: str) -> int | None:
    """JavaScript ``parseInt(text, 10)``; None for NaN."""
    match = _PARSE_INT_RE.match(text)
    return int(match.group(1)) if match else None


def validate_network_allow_list(value: str) -> str:
    """``validateNetworkAllowList``; returns the list unchanged or raises Daytona's 400."""
    networks = [n.strip() for n in value.split(",")]
    for network in networks:
        if not network:
            continue
        parts = network.split("/")
        address = parts[0]
        if not _IPV4_RE.match(address):
            raise bad_request(
                f'Invalid IP address: "{address}" in network "{network}". Must be a valid IPv4 address'
            )
        if len(parts) < 2 or not parts[1]:
            raise bad_request(f'Invalid network format: "{network}". Missing CIDR prefix length (e.g., /24)')
        prefix = _parse_int(parts[1])
        if prefix is not None and not 0 <= prefix <= 32:
            raise bad_request(f"Invalid CIDR prefix length: {network}. Prefix must be between 0 and 32")
    if len(networks) > MAX_ALLOW_LIST:
        raise bad_request("Network allow list cannot contain more than 10 networks")
    return value


def validate_domain_allow_list(value: str) -> str:
    """``validateDomainAllowList``; returns the list unchanged or raises Daytona's 400."""
    domains = [d.strip() for d in value.split(",")]
    for domain in domains:
        if domain and not _DOMAIN_RE.match(domain):
            raise bad_request(f'Invalid domain: "{domain}". Must be a valid domain name')
    if len(domains) > MAX_ALLOW_LIST:
        raise bad_request("Domain allow list cannot contain more than 10 domains")
    return value


def allowed_networks(value: str | None) -> list[ipaddress.IPv4Network]:
    """The networks of an already validated allow list (host bits cleared; NaN prefixes as /32)."""
    out: list[ipaddress.IPv4Network] = []
    for network in (n.strip() for n in (value or "").split(",")):
        if not network:
            continue
        address, _, prefix_text = network.partition("/")
        prefix = _parse_int(prefix_text.split("/")[0])
        out.append(ipaddress.IPv4Network(f"{address}/{32 if prefix is None else prefix}", strict=False))
    return out
