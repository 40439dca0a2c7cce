"""``GET /sandbox`` query parsing, filtering, ordering and cursor pagination (pure).

Does: parse the query Daytona's ``ListSandboxesQueryDto`` accepts (``dto/list-sandboxes-query.dto.ts``):
``labels`` (JSON object; bad JSON -> 400 ``Invalid labels JSON format``), ``states`` (repeated or
comma-separated; ``destroyed`` and unknown states are refused with class-validator's message),
``id``/``name`` case-insensitive prefixes, ``snapshots``, ``regionIds``, ``sandboxClasses``,
``includeErroredDeleted``, ``minCpu``/``maxCpu``/``minMemoryGiB``/``maxMemoryGiB``/``minDiskGiB``/
``maxDiskGiB`` (integers >= 1), ``isPublic``, ``isRecoverable``, ``createdAtAfter``/``Before``,
``lastEventAfter``/``Before`` (dates), ``sort`` (default ``lastActivityAt``), ``order`` (default
``desc``), ``limit`` 1..200 (default 100) and ``cursor``; every invalid parameter is reported,
joined with ", ", in one 400 as Daytona's exception filter does. Filters follow
``adapters/sandbox-typeorm-search.adapter.ts``: destroyed sandboxes never show, errored ones
whose desired state is ``destroyed`` only with ``includeErroredDeleted``. The cursor is an
opaque token naming the last item's sort key, so pages stay consistent when sandboxes come and
go; ``nextCursor`` is null on the last page.

Does not: know about HTTP or the store; callers pass the query items and the records.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .errors import bad_request
from .models import SandboxRecord
from .states import ERROR_STATES, SANDBOX_STATES

DEFAULT_LIMIT = 100
MAX_LIMIT = 200
SORT_FIELDS = ("name", "cpu", "memoryGib", "diskGib", "lastActivityAt", "createdAt")
LISTABLE_STATES = tuple(s for s in SANDBOX_STATES if s != "destroyed")
SANDBOX_CLASSES = ("container", "android", "windows")
_RANGES = (("minCpu", "cpu", 1), ("maxCpu", "cpu", -1), ("minMemoryGiB", "memory", 1),
           ("maxMemoryGiB", "memory", -1), ("minDiskGiB", "disk", 1), ("maxDiskGiB", "disk", -1))  # fmt: skip
_DATES = (("createdAtAfter", "created_at", 1), ("createdAtBefore", "created_at", -1),
          ("lastEventAfter", "last_activity_at", 1), ("lastEventBefore", "last_activity_at", -1))  # fmt: skip


@dataclass(frozen=True)
class ListQuery:
    """A parsed list request."""

    labels: dict[str, str] | None = None
    states: frozenset[str] | None = None
    id_prefix: str | None = None
    name_prefix: str | None = None
    snapshots: frozenset[str] | None = None
    regions: frozenset[str] | None = None
    classes: frozenset[str] | None = None
    include_errored_deleted: bool = False
    ranges: tuple[tuple[str, int, int], ...] = ()  # (record attribute, bound, +1 min / -1 max)
    dates: tuple[tuple[str, float, int], ...] = ()  # (record attribute, epoch seconds, +1 after / -1 before)
    public: bool | None = None
    recoverable: bool | None = None
    limit: int = DEFAULT_LIMIT
    cursor: tuple[Any, int] | None = None
    sort: str = "lastActivityAt"
    descending: bool = True


def _multi(items: Sequence[tuple[str, str]], key: str) -> list[str] | None:
    values = [part for k, v in items if k in (key, f"{key}[]") for part in v.split(",") if part]
    return values or None


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


def _integer(text: str, name: str, problems: list[str], *, minimum: int, maximum: int | None = None) -> int | None:
    try:
        value = int(text)
    except ValueError:
        problems.append(f"{name} must be an integer number")
        return None
    if value < minimum:
        problems.append(f"{name} must not be less than {minimum}")
    elif maximum is not None and value > maximum:
        problems.append(f"{name} must not be greater than {maximum}")
    return value


def _date(text: str, name: str, problems: list[str]) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        problems.append(f"{name} must be a Date instance")
        return None


def _bool(text: str | None) -> bool | None:
    return None if text is None else text == "true"


def _enum(values: list[str] | None, allowed: tuple[str, ...], name: str, problems: list[str], *, each: bool) -> None:
    if values is not None and any(v not in allowed for v in values):
        prefix = "each value" if each else name
        problems.append(f"{prefix} must be one of the following values: {', '.join(allowed)}")


def parse_list_query(items: Sequence[tuple[str, str]]) -> ListQuery:
    """Parse the query-string items of ``GET /sandbox`` (400 listing every invalid parameter)."""
    single = dict(items)
    problems: list[str] = []
    labels: dict[str, str] | None = None
    if single.get("labels"):
        try:
            parsed = json.loads(single["labels"])
        except ValueError as exc:
            raise bad_request("Invalid labels JSON format") from exc
        if not isinstance(parsed, dict):
            raise bad_request("Invalid labels JSON format")
        labels = {str(k): v for k, v in parsed.items()}
    limit = DEFAULT_LIMIT
    if single.get("limit"):
        limit = _integer(single["limit"], "limit", problems, minimum=1, maximum=MAX_LIMIT) or DEFAULT_LIMIT
    states = _multi(items, "states")
    _enum(states, LISTABLE_STATES, "states", problems, each=True)
    classes = _multi(items, "sandboxClasses")
    _enum(classes, SANDBOX_CLASSES, "sandboxClasses", problems, each=True)
    ranges = []
    for key, attr, sign in _RANGES:
        if single.get(key):
            bound = _integer(single[key], key, problems, minimum=1)
            if bound is not None:
                ranges.append((attr, bound, sign))
    dates = []
    for key, attr, sign in _DATES:
        if single.get(key):
            when = _date(single[key], key, problems)
            if when is not None:
                dates.append((attr, when, sign))
    sort = single.get("sort") or "lastActivityAt"
    _enum([sort], SORT_FIELDS, "sort", problems, each=False)
    order = single.get("order") or "desc"
    _enum([order], ("asc", "desc"), "order", problems, each=False)
    if problems:
        raise bad_request(", ".join(problems))
    snapshots, regions = _multi(items, "snapshots"), _multi(items, "regionIds")
    return ListQuery(
        labels=labels,
        states=frozenset(states) if states else None,
        id_prefix=single.get("id") or None,
        name_prefix=single.get("name") or None,
        snapshots=frozenset(snapshots) if snapshots else None,
        regions=frozenset(regions) if regions else None,
        classes=frozenset(classes) if classes else None,
        include_errored_deleted=single.get("includeErroredDeleted") == "true",
        ranges=tuple(ranges),
        dates=tuple(dates),
        public=_bool(single.get("isPublic")),
        recoverable=_bool(single.get("isRecoverable")),
        limit=limit,
        cursor=decode_cursor(single["cursor"]) if single.get("cursor") else None,
        sort=sort,
        descending=order == "desc",
    )


_SORT_ATTRS = {"name": "name", "cpu": "cpu", "memoryGib": "memory", "diskGib": "disk", "createdAt": "created_at"}


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
    return rec.created_at


def matches(rec: SandboxRecord, q: ListQuery) -> bool:
    """Whether `rec` passes the filters of `q`."""
    if rec.state == "destroyed":
        return False
    if rec.state in ERROR_STATES and rec.desired == "destroyed" and not q.include_errored_deleted:
        return False
    if q.states is not None and rec.state not in q.states:
        return False
    if q.labels and any(rec.labels.get(k) != v for k, v in q.labels.items()):
        return False
    if q.id_prefix and not rec.id.lower().startswith(q.id_prefix.lower()):
        return False
    if q.name_prefix and not rec.name.lower().startswith(q.name_prefix.lower()):
        return False
    if q.snapshots is not None and rec.snapshot not in q.snapshots:
        return False
    if q.regions is not None and rec.target not in q.regions:
        return False
    if q.classes is not None and "container" not in q.classes:
        return False
    if q.public is not None and rec.public != q.public:
        return False
    if q.recoverable:  # no local sandbox is recoverable (Daytona: only errored ones with a backup)
        return False
    for attr, bound, sign in q.ranges:
        if (getattr(rec, attr) - bound) * sign < 0:
            return False
    for attr, when, sign in q.dates:
        value = getattr(rec, attr) or rec.created_at
        if (value - when) * sign < 0:
            return False
    return True


def _keyed(records: Iterable[SandboxRecord], field: str) -> list[tuple[Any, int, SandboxRecord]]:
    """(sort value, sequence, record) of every record (`sort_key` inlined: this runs for every
    sandbox). Records never compare: (sort value, sequence) is unique."""
    if field == "lastActivityAt":
        return [(r.last_activity_at or r.created_at, r.seq, r) for r in records]
    attr = _SORT_ATTRS.get(field, "created_at")
    return [(getattr(r, attr), r.seq, r) for r in records]


@dataclass
class Ordered:
    """The records matching one query (cursor and limit aside) in ascending (sort value,
    sequence) order, as of store `generation`; `page` cuts any page of the query out of it."""

    query: ListQuery
    generation: int | None
    keys: list[tuple[Any, int]]
    records: list[SandboxRecord]

    @classmethod
    def of(cls, records: Iterable[SandboxRecord], q: ListQuery, generation: int | None = None) -> Ordered:
        keyed = sorted(k for k in _keyed(records, q.sort) if matches(k[2], q))
        return cls(_unpaged(q), generation, [(v, seq) for v, seq, _ in keyed], [r for _, _, r in keyed])

    def page(self, q: ListQuery) -> tuple[list[SandboxRecord], str | None]:
        """The records of the page `q` asks for, and the cursor of the next page (None at the end)."""
        keys, limit = self.keys, q.limit
        try:
            if q.descending:
                end = len(keys) if q.cursor is None else bisect.bisect_left(keys, tuple(q.cursor))
                window = self.records[max(0, end - limit - 1):end][::-1]
                window_keys = keys[max(0, end - limit - 1):end][::-1]
            else:
                start = 0 if q.cursor is None else bisect.bisect_right(keys, tuple(q.cursor))
                window, window_keys = self.records[start:start + limit + 1], keys[start:start + limit + 1]
        except TypeError as exc:  # a cursor from another sort order
            raise bad_request("cursor does not match the sort order") from exc
        next_cursor = encode_cursor(*window_keys[limit - 1]) if len(window) > limit and limit else None
        return window[:limit], next_cursor


def _unpaged(q: ListQuery) -> ListQuery:
    return replace(q, cursor=None, limit=DEFAULT_LIMIT)


def page(records: Iterable[SandboxRecord], q: ListQuery) -> tuple[list[SandboxRecord], str | None]:
    """The records of the page `q` asks for, and the cursor of the next page (None at the end)."""
    return Ordered.of(records, q).page(q)


class PageCache:
    """The ordered matches of the last few list queries, reused for their next pages while the
    store has not changed since (`generation`: the store counts every change a list can show).

    Paging through N sandboxes in pages of L then costs one ordering of the matches and
    O(log N + L) a page, instead of a pass over all N records for every page. With generation
    None (a lagging list index, whose view changes by itself) nothing is cached. Does not: copy
    records (a page shows each record as it is when the page is served, as without the cache)."""

    SIZE = 4

    def __init__(self) -> None:
        self._entries: list[Ordered] = []

    def page(self, records: Iterable[SandboxRecord], q: ListQuery, *,
             generation: int | None) -> tuple[list[SandboxRecord], str | None]:
        if generation is None:
            return page(records, q)
        base = _unpaged(q)
        entry = next((e for e in self._entries if e.generation == generation and e.query == base), None)
        if entry is None:
            entry = Ordered.of(records, q, generation)
            current = [e for e in self._entries if e.generation == generation]
            self._entries = [entry, *current[: self.SIZE - 1]]
        return entry.page(q)
