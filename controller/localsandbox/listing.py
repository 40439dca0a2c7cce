"""``GET /sandbox`` query parsing, filtering, ordering and cursor pagination (pure).

Does: turn the query string the SDK sends (``labels`` as a JSON string, ``states`` repeated
or comma-separated, ``id``/``name`` case-insensitive prefixes, ``snapshots``, ``sort``,
``order``, ``limit`` 1..200 (default 100), ``cursor``) into a `ListQuery`, and cut one page
out of the records. The cursor is an opaque token naming the last item's sort key, so pages
stay consistent when sandboxes are created or deleted between requests; ``nextCursor`` is
null on the last page.

Does not: know about HTTP or the store; callers pass the query items and the records.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import bad_request
from .models import SandboxRecord

DEFAULT_LIMIT = 100
MAX_LIMIT = 200
SORT_FIELDS = frozenset({"createdAt", "name", "lastActivityAt", "cpu", "memoryGib", "diskGib"})


@dataclass(frozen=True)
class ListQuery:
    """A parsed list request."""

    labels: dict[str, str] | None = None
    states: frozenset[str] | None = None
    id_prefix: str | None = None
    name_prefix: str | None = None
    snapshots: frozenset[str] | None = None
    limit: int = DEFAULT_LIMIT
    cursor: tuple[Any, int] | None = None
    sort: str = "createdAt"
    descending: bool = True


def _multi(items: Sequence[tuple[str, str]], key: str) -> frozenset[str] | None:
    values = [part for k, v in items if k == key for part in v.split(",") if part]
    return frozenset(values) if values else None


def encode_cursor(key: Any, seq: int) -> str:
    """An opaque cursor for "after the item with sort key `key` and sequence `seq`"."""
    return base64.urlsafe_b64encode(json.dumps([key, seq]).encode()).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[Any, int]:
    """Inverse of `encode_cursor`; raises a 400 `ApiError` on garbage."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        key, seq = json.loads(raw)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise bad_request("invalid cursor") from exc
    if not isinstance(seq, int):
        raise bad_request("invalid cursor")
    return key, seq


def parse_list_query(items: Sequence[tuple[str, str]]) -> ListQuery:
    """Parse the query-string items of ``GET /sandbox``."""
    single = dict(items)
    labels: dict[str, str] | None = None
    if single.get("labels"):
        try:
            parsed = json.loads(single["labels"])
        except ValueError as exc:
            raise bad_request("labels must be a JSON object") from exc
        if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
            raise bad_request("labels must be a JSON object of strings")
        labels = parsed
    limit = DEFAULT_LIMIT
    if single.get("limit"):
        try:
            limit = int(single["limit"])
        except ValueError as exc:
            raise bad_request("limit must be an integer") from exc
        if not 1 <= limit <= MAX_LIMIT:
            raise bad_request(f"limit must be between 1 and {MAX_LIMIT}")
    sort = single.get("sort") or "createdAt"
    if sort not in SORT_FIELDS:
        raise bad_request(f"sort must be one of {sorted(SORT_FIELDS)}")
    order = single.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise bad_request("order must be asc or desc")
    return ListQuery(
        labels=labels,
        states=_multi(items, "states"),
        id_prefix=(single.get("id") or None),
        name_prefix=(single.get("name") or None),
        snapshots=_multi(items, "snapshots"),
        limit=limit,
        cursor=decode_cursor(single["cursor"]) if single.get("cursor") else None,
        sort=sort,
        descending=order == "desc",
    )


def sort_key(rec: SandboxRecord, field: str) -> Any:
    """The value `rec` is ordered by for sort `field` (ties broken by creation sequence)."""
    if field == "name":
        return rec.name
    if field == "lastActivityAt":
        return rec.last_activity_at or rec.created_at
    if field == "cpu":
        return rec.cpu
    if field == "memoryGib":
        return rec.memory
    if field == "diskGib":
        return rec.disk
    return rec.seq


def matches(rec: SandboxRecord, q: ListQuery) -> bool:
    """Whether `rec` passes the filters of `q`."""
    if rec.state == "destroyed":
        return False
    if q.labels and any(rec.labels.get(k) != v for k, v in q.labels.items()):
        return False
    if q.states is not None and rec.state not in q.states:
        return False
    if q.id_prefix and not rec.id.lower().startswith(q.id_prefix.lower()):
        return False
    if q.name_prefix and not rec.name.lower().startswith(q.name_prefix.lower()):
        return False
    return not (q.snapshots is not None and rec.snapshot not in q.snapshots)


def page(records: Iterable[SandboxRecord], q: ListQuery) -> tuple[list[SandboxRecord], str | None]:
    """The records of the page `q` asks for, and the cursor of the next page (None at the end)."""
    keyed = [((sort_key(r, q.sort), r.seq), r) for r in records if matches(r, q)]
    keyed.sort(key=lambda kr: kr[0], reverse=q.descending)
    if q.cursor is not None:
        cursor = (q.cursor[0], q.cursor[1])
        try:
            keyed = [kr for kr in keyed if (kr[0] < cursor if q.descending else kr[0] > cursor)]
        except TypeError as exc:  # a cursor from another sort order
            raise bad_request("cursor does not match the sort order") from exc
    chunk = keyed[: q.limit]
    next_cursor = None
    if len(keyed) > q.limit and chunk:
        (key, seq), _ = chunk[-1]
        next_cursor = encode_cursor(key, seq)
    return [r for _, r in chunk], next_cursor
