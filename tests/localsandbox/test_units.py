"""The pure parts of the sandbox server, tested directly (no HTTP, no processes)."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from daytona_api_client_async import models as api

from controller.localsandbox import ObservedResponse
from controller.localsandbox.coderun import parse_artifacts
from controller.localsandbox.containers import Container, ContainerError, parse_env, resolve_user
from controller.localsandbox.errors import ApiError
from controller.localsandbox.faults import (
    MAIN_OPS,
    TOOLBOX_OPS,
    FaultInjector,
    parse_error_flag,
    parse_faults,
    parse_latency_flag,
)
from controller.localsandbox.gitclone import check_ref, check_url, classify_failure, redact
from controller.localsandbox.gitops import parse_status
from controller.localsandbox.isolation import Isolation, LaunchContext, build_launch, choose_isolation
from controller.localsandbox.lifecycle import collect_due, next_action
from controller.localsandbox.listindex import ListIndex
from controller.localsandbox.listing import PageCache, page, parse_list_query
from controller.localsandbox.logstore import STDERR, STDOUT, LogWriter, read_records, read_snapshot
from controller.localsandbox.models import SandboxRecord, parse_create_request, sandbox_dto, sandbox_list_item
from controller.localsandbox.paths import PathError, virtual_path
from controller.localsandbox.quota import Request, check, usage
from controller.localsandbox.settings import FailedAuth, Quota, Settings, merge_settings
from controller.localsandbox.states import (
    check_archive,
    check_delete,
    check_start,
    check_stop,
    display_state,
    pending_for,
)
from controller.localsandbox.throttle import FailedAuthTracker
from controller.localsandbox.validation import (
    allowed_networks,
    resolve_auto_archive,
    validate_domain_allow_list,
    validate_network_allow_list,
)
from controller.localsandbox.volumes import mount_path_problems

from .contract import Contract, drift, uncovered_operations


def record(i: int, **kw: object) -> SandboxRecord:
    base: dict[str, Any] = dict(
        id=f"id-{i:03d}", name=f"sb-{i:03d}", organization_id="org", snapshot="daytona-small", user="daytona",
        env={}, labels={"k": "v" if i % 2 else "w"}, target="local", cpu=1, gpu=0, memory=1, disk=3, seq=i,
        created_at=1_700_000_000.0 + i, created_mono=100.0, activity_mono=100.0, state="started",
        desired="started", pending=False,
    )
    base.update(kw)
    return SandboxRecord(**base)


# faults ------------------------------------------------------------------------------------


def test_fault_settings_roundtrip_and_validation() -> None:
    spec = {"latency": {"create": 0.09, "*": 0.02}, "errors": {"create": {"rate": 0.3, "status": 503}},
            "rate_limit": {"rate": 0.2, "retry_after": 1}, "seed": 4}
    faults, lose = parse_faults({**spec, "lose": ["a"]})
    assert lose == ["a"]
    assert parse_faults(faults.to_json())[0] == faults
    assert faults.latency_for("get") == 0.02
    assert faults.latency_for("pool_create") == 0.02  # falls back to "*", never to "create"
    for bad in ({"latency": {"nope": 1}}, {"errors": {"get": {"rate": 2}}}, {"errors": {"get": {"status": 200}}},
                {"errors": {"get": {"state": "error"}}}, {"whatever": 1}, {"rate_limit": {"ops": ["x"]}}):
        with pytest.raises(ValueError):  # noqa: PT011 - each message is specific
            parse_faults(bad)
    assert parse_latency_flag("*=0.5") == ("*", 0.5)
    op, err = parse_error_flag("create=0.3:503")
    assert (op, err.rate, err.status) == ("create", 0.3, 503)


def test_seeded_decisions_are_reproducible_and_admin_is_never_faulted() -> None:
    faults, _ = parse_faults({"errors": {"*": {"rate": 0.5}}, "rate_limit": {"rate": 0.2}})

    def draws(seed: int) -> list[str]:
        inj = FaultInjector(faults, seed=seed)
        out = []
        for _ in range(50):
            d = inj.decide("get")
            out.append("429" if d.retry_after is not None else ("err" if d.error else "ok"))
        return out

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)
    assert {"429", "err", "ok"} == set(draws(7))
    assert FaultInjector(faults, seed=1).decide("admin_stats").error is None
    assert FaultInjector(faults, seed=1).decide("create").latency == 0.0  # create spends its own latency


# lifecycle ---------------------------------------------------------------------------------


def test_lifecycle_deadlines_count_from_last_activity_and_skip_archived() -> None:
    m = 0.5
    assert next_action(record(1, auto_stop=0), m) is None
    due = next_action(record(1, auto_stop=2), m)
    assert due is not None
    assert (due.reason, due.at) == ("auto_stop", 101.0)
    assert next_action(record(1, auto_stop=2, desired="stopped", pending=True), m) is None  # a stop is in flight
    stopped = record(2, state="stopped", desired="stopped", activity_mono=200.0, auto_delete=0, auto_archive=10)
    due = next_action(stopped, m)
    assert due is not None
    assert (due.reason, due.at) == ("auto_delete", 200.0)
    due = next_action(record(3, state="stopped", desired="stopped", activity_mono=200.0, auto_delete=-1,
                             auto_archive=3), m)  # fmt: skip
    assert due is not None
    assert (due.reason, due.at) == ("auto_archive", 201.5)
    archived = record(7, state="archived", desired="archived", activity_mono=200.0, auto_delete=0)
    assert next_action(archived, m) is None  # Daytona's auto-delete only picks stopped sandboxes
    due = next_action(record(4, ttl_minutes=1, auto_stop=100), m)
    assert due is not None
    assert (due.reason, due.at) == ("ttl", 100.5)
    items, next_at = collect_due([record(5, auto_stop=1), record(6, auto_stop=4)], now=100.6, minute_seconds=m)
    assert [d.sandbox_id for d in items] == ["id-005"]
    assert next_at == 102.0


# listing -----------------------------------------------------------------------------------


def test_list_query_parsing() -> None:
    q = parse_list_query([("labels", '{"k": "v"}'), ("states", "started"), ("states", "stopped,error"),
                          ("limit", "7"), ("sort", "name"), ("order", "asc")])
    assert q.labels == {"k": "v"}
    assert q.states == {"started", "stopped", "error"}
    assert (q.limit, q.sort, q.descending) == (7, "name", False)
    for bad in ([("labels", "[1]")], [("limit", "0")], [("limit", "201")], [("sort", "x")], [("cursor", "%%%")]):
        with pytest.raises(ApiError):
            parse_list_query(bad)


def test_cursor_pages_survive_deletions_between_pages() -> None:
    records = {i: record(i) for i in range(10)}
    q = parse_list_query([("limit", "4"), ("sort", "createdAt")])
    first, cursor = page(records.values(), q)
    assert [r.seq for r in first] == [9, 8, 7, 6]
    del records[5], records[9]  # one on a later page, one already returned
    more = [("limit", "4"), ("sort", "createdAt")]
    second, cursor = page(records.values(), parse_list_query([*more, ("cursor", cursor or "")]))
    assert [r.seq for r in second] == [4, 3, 2, 1]
    third, cursor = page(records.values(), parse_list_query([*more, ("cursor", cursor or "")]))
    assert ([r.seq for r in third], cursor) == ([0], None)
    only_v, _ = page(records.values(), parse_list_query([("labels", '{"k": "v"}')]))
    assert all(r.labels["k"] == "v" for r in only_v)
    assert [r.seq for r in only_v] == [7, 3, 1]  # odd ones, minus the deleted 5 and 9


def test_the_page_cache_pages_as_the_list_does_and_sees_every_change_of_generation() -> None:
    records = {i: record(i, last_activity_at=1_700_000_100.0 + (i * 7) % 10) for i in range(10)}
    cache = PageCache()
    for sort, order in (("lastActivityAt", "desc"), ("createdAt", "asc"), ("name", "desc")):
        base = [("limit", "3"), ("sort", sort), ("order", order), ("labels", '{"k": "v"}')]
        cursor: str | None = None
        while True:
            q = parse_list_query([*base, *([("cursor", cursor)] if cursor else [])])
            cached, next_cursor = cache.page(records.values(), q, generation=1)
            assert (cached, next_cursor) == page(records.values(), q)
            if next_cursor is None:
                break
            cursor = next_cursor
    q = parse_list_query([("limit", "4"), ("sort", "createdAt")])
    first, cursor = cache.page(records.values(), q, generation=2)
    assert [r.seq for r in first] == [9, 8, 7, 6]
    records[4].labels = {"k": "moved"}  # the store bumps its generation with every change
    del records[3]
    rest = [("limit", "4"), ("sort", "createdAt"), ("cursor", cursor or "")]
    w_only, _ = cache.page(records.values(), parse_list_query([*rest, ("labels", '{"k": "w"}')]), generation=3)
    assert [r.seq for r in w_only] == [2, 0]  # 4 no longer matches, 3 is gone
    every, _ = cache.page(records.values(), parse_list_query(rest), generation=3)
    assert [r.seq for r in every] == [5, 4, 2, 1]
    with pytest.raises(ApiError, match="cursor does not match"):
        cache.page(records.values(), parse_list_query([("sort", "name"), ("cursor", cursor or "")]), generation=3)


# paths, logs, git, isolation, models ---------------------------------------------------------


def test_virtual_paths() -> None:
    home = "/home/daytona"
    assert virtual_path("/workspace/repo", home) == "/workspace/repo"
    assert virtual_path("notes/a.txt", home) == "/home/daytona/notes/a.txt"
    assert virtual_path("../../etc/x", home) == "/etc/x"  # inside the sandbox's own /etc
    assert virtual_path("/a/./b/../c//d", home) == "/a/c/d"
    for bad in ("", "/../x", "../../../x", "/a/../../x", "a\x00b"):
        with pytest.raises(PathError):
            virtual_path(bad, home)


def test_log_records_offsets_and_snapshot(tmp_path: Path) -> None:
    path = str(tmp_path / "cmd.log")
    writer = LogWriter(path)
    writer.append(STDOUT, b"out1\n")
    writer.append(STDERR, b"err1\n")
    records, offset = read_records(path, 0)
    assert records == [(STDOUT, b"out1\n"), (STDERR, b"err1\n")]
    assert read_records(path, offset) == ([], offset)
    with open(path, "ab") as fh:  # half a record: not returned until complete
        fh.write(struct.pack(">BI", STDOUT, 7) + b"par")
    assert read_records(path, offset) == ([], offset)
    with open(path, "ab") as fh:
        fh.write(b"tial")
    writer.close()
    assert read_snapshot(path) == ("out1\nerr1\npartial", "out1\npartial", "err1\n")
    assert read_snapshot(path, cap=3) == ("ial", "ial", "r1\n")


def test_git_url_and_ref_checks() -> None:
    assert check_url("/srv/repo") == "local"
    assert check_url("file:///srv/repo") == "file"
    assert check_url("https://github.com/a/b.git") == "https"
    for bad in ("ssh://h/r", "git@h:r.git", "ext::sh -c x", "--upload-pack=x", "git://h/r", "rel/path", ""):
        with pytest.raises(ApiError) as caught:
            check_url(bad)
        assert caught.value.status == 400
    check_ref("feature/x-1.2", "branch")
    for bad in ("-b", "a..b", "a b", "$(x)"):
        with pytest.raises(ApiError):
            check_ref(bad, "branch")
    assert redact("fatal: https://alice:pw@h/r not found") == "fatal: https://***@h/r not found"
    assert classify_failure("fatal: Authentication failed for 'x'").daemon_code == "GIT_AUTH_FAILED"
    assert classify_failure("fatal: repository '/x' does not exist").daemon_code == "GIT_REPO_NOT_FOUND"
    assert classify_failure("warning: Remote branch nope not found in upstream").daemon_code == "GIT_BRANCH_NOT_FOUND"


def test_launch_environment_and_bwrap_argv(tmp_path: Path) -> None:
    os.makedirs(tmp_path / "home" / "daytona")
    os.makedirs(tmp_path / "workspace")
    ctx = LaunchContext(sandbox_id="sid", root=str(tmp_path), user="daytona", cwd="/workspace",
                        env={"A": "1"}, network_block_all=True)
    os.environ["SECRET_FOR_TEST"] = "x"
    try:
        plain = build_launch(Isolation("plain", "test"), ctx, "echo hi")
    finally:
        del os.environ["SECRET_FOR_TEST"]
    assert plain.argv[1:] == ["-c", "echo hi"]
    assert plain.cwd == str(tmp_path / "workspace")
    assert plain.env["HOME"] == str(tmp_path / "home" / "daytona")
    assert plain.env["A"] == "1"
    assert "SECRET_FOR_TEST" not in plain.env
    wrapped = build_launch(Isolation("bwrap", "test", "/usr/bin/bwrap"), ctx, "echo hi")
    joined = " ".join(wrapped.argv)
    assert wrapped.argv[0] == "/usr/bin/bwrap"
    assert "--unshare-net" in wrapped.argv
    assert f"--bind {tmp_path}/workspace /workspace" in joined
    assert f"--bind {tmp_path}/home /home" in joined
    assert "--chdir /workspace" in joined
    assert wrapped.env["HOME"] == "/home/daytona"
    assert choose_isolation("plain").mode == "plain"


def test_container_argv_runs_on_the_containers_root_as_the_images_user(tmp_path: Path) -> None:
    os.makedirs(tmp_path / "home" / "daytona")
    box = Container("localsandbox-sid", "localhost/agent:1", "/var/lib/c/merged", 1001, 1001,
                    {"PATH": "/usr/local/bin:/usr/bin", "HOME": "/image-home", "A": "image", "LANG": "C.UTF-8"})
    ctx = LaunchContext(sandbox_id="sid", root=str(tmp_path), user="daytona", cwd="/home/daytona",
                        env={"A": "sandbox"}, container=box)
    iso = Isolation("container", "test", "/usr/bin/bwrap")
    launch = build_launch(iso, ctx, "id -u")
    joined = " ".join(launch.argv)
    assert "--bind /var/lib/c/merged /" in joined and "--ro-bind-try /usr /usr" not in joined
    assert "--unshare-user --uid 1001 --gid 1001" in joined
    assert f"--bind {tmp_path}/home /home" in joined
    # the image's PATH, the sandbox's HOME, the sandbox's own variables over the image's
    assert (launch.env["PATH"], launch.env["HOME"], launch.env["A"]) == ("/usr/local/bin:/usr/bin", "/home/daytona",
                                                                         "sandbox")  # fmt: skip
    root_box = Container("c", "i", "/r", 0, 0)
    as_root = build_launch(iso, LaunchContext(sandbox_id="s", root=str(tmp_path), user="root", cwd="/root",
                                              container=root_box), "true")  # fmt: skip
    assert "--unshare-user" not in as_root.argv
    # a sandbox without a container runs as plain host processes in container mode
    plain = build_launch(iso, LaunchContext(sandbox_id="s", root=str(tmp_path), user="daytona", cwd="/home/daytona"),
                         "true")  # fmt: skip
    assert plain.argv[0] != "/usr/bin/bwrap" and plain.cwd == str(tmp_path / "home" / "daytona")
    with pytest.raises(ValueError, match="isolation must be one of"):
        choose_isolation("docker")


def test_an_images_user_is_resolved_in_its_own_passwd(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\ndaytona:x:1001:1002::/home/daytona:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\n")
    rootfs = str(tmp_path)
    assert resolve_user(None, rootfs) == (0, 0) and resolve_user("", rootfs) == (0, 0)
    assert resolve_user("1001:1001", rootfs) == (1001, 1001)
    assert resolve_user("7", rootfs) == (7, 7)
    assert resolve_user("daytona", rootfs) == (1001, 1002)
    assert resolve_user("daytona:staff", rootfs) == (1001, 50)
    with pytest.raises(ContainerError, match="not in its /etc/passwd"):
        resolve_user("nobody-here", rootfs)
    assert parse_env(["PATH=/bin", "EMPTY=", "A=b=c", "junk"]) == {"PATH": "/bin", "EMPTY": "", "A": "b=c"}


def test_create_request_validation_and_renderings() -> None:
    for bad in ([], {"name": "has space"}, {"name": 5}, {"labels": {"a": 1}}, {"autoStopInterval": "1"},
                {"cpu": True}, {"volumes": [{"volumeId": "x"}]}, {"buildInfo": {"dockerfileContent": 1}}):
        with pytest.raises(ApiError):
            parse_create_request(bad)
    req = parse_create_request({"name": "ok", "autoDeleteInterval": -5, "ttlMinutes": 3})
    assert (req.auto_delete, req.ttl_minutes, req.auto_stop) == (-5, 3, None)  # stored as sent, as Daytona does
    rec = record(1, ttl_minutes=3)
    dto = sandbox_dto(rec, "http://h/toolbox")
    assert dto["autoDestroyAt"].endswith("Z")
    assert not drift(api.Sandbox, dto)
    assert not drift(api.SandboxListItem, sandbox_list_item(rec, "http://h/toolbox"))


# the contract checker itself -----------------------------------------------------------------


def test_contract_covers_every_operation_and_catches_drift() -> None:
    assert uncovered_operations() == set()
    good = sandbox_dto(record(1), "http://h/toolbox")
    c = Contract()

    def observe(op: str, body: object, status: int = 200) -> list[str]:
        before = len(c.failures)
        c.observe(ObservedResponse(op, "GET", "/x", status, "application/json", body, b"{}", False))
        return c.failures[before:]

    assert observe("get", good) == []
    assert observe("get", {k: v for k, v in good.items() if k != "toolboxProxyUrl"})
    assert observe("get", {**good, "cpu": "1"})
    assert observe("get", {**good, "surprise": 1})
    assert observe("list", {"items": [sandbox_list_item(record(1), "u")]})  # nextCursor key missing
    assert observe("list", {"items": [good], "nextCursor": None})  # env/kvm/volumes in a list item
    error = {"path": "/api/sandbox/x", "timestamp": "2025-01-01T00:00:00.000Z", "statusCode": 404,
             "error": "Not Found", "message": "m"}  # fmt: skip
    assert observe("get", error, 404) == []
    assert observe("get", {k: v for k, v in error.items() if k != "path"}, 404)
    assert observe("get", {"message": "m"}, 404)
    assert observe("exec", {"statusCode": 408, "message": "m", "code": "PROCESS_EXECUTION_TIMEOUT",
                            "source": "DAYTONA_DAEMON", "path": "/p", "method": "POST", "timestamp": "t"}, 408) == []


# Daytona's rules as pure functions ------------------------------------------------------------


@dataclass
class LC:
    state: str
    desired: str
    pending: bool = False
    auto_delete: int = -1


def test_display_state_and_pending_follow_daytona() -> None:
    assert display_state("started", "stopped") == "stopping"
    assert display_state("started", "destroyed") == "destroying"
    assert display_state("stopped", "started") == "starting"
    assert display_state("stopped", "archived") == "archiving"
    assert display_state("unknown", "started") == "creating"
    assert display_state("archived", "started") == "archived"
    assert pending_for("started", "stopped", False) is True
    assert pending_for("stopped", "stopped", True) is False
    assert pending_for("error", "started", True) is False
    assert pending_for("archiving", "archived", True) is False


@pytest.mark.parametrize(("check", "lc", "outcome"), [
    (check_stop, LC("started", "started"), None),
    (check_stop, LC("stopped", "stopped"), (400, "Sandbox is not in a stoppable state")),
    (check_stop, LC("started", "stopped", True), (409, "Sandbox state change in progress")),
    (check_stop, LC("error", "started"), (400, "Sandbox is in an errored state")),
    (check_archive, LC("stopped", "stopped"), None),
    (check_archive, LC("archived", "archived"), (400, "Sandbox is not stopped")),
    (check_archive, LC("stopped", "stopped", auto_delete=0), (400, "Ephemeral sandboxes cannot be archived")),
    (check_archive, LC("archiving", "archived"), (409, "Sandbox state change in progress")),
    (check_start, LC("stopped", "stopped"), None),
    (check_start, LC("archiving", "archived"), None),
    (check_start, LC("stopped", "started", True), (409, "Sandbox state change in progress")),
    (check_delete, LC("started", "stopped", True), (409, "Sandbox state change in progress")),
    (check_delete, LC("pending_build", "started", True), None),
    (check_delete, LC("archiving", "archived"), None),
])  # fmt: skip
def test_lifecycle_guards(check: Any, lc: LC, outcome: tuple[int, str] | None) -> None:
    if outcome is None:
        check(lc)
        return
    with pytest.raises(ApiError) as caught:
        check(lc)
    assert (caught.value.status, caught.value.message) == outcome


def test_network_allow_list_validation_keeps_daytonas_quirks() -> None:
    assert validate_network_allow_list("10.0.0.0/8,,192.168.0.0/16") == "10.0.0.0/8,,192.168.0.0/16"
    validate_network_allow_list("10.0.0.0/abc")  # parseInt("abc") is NaN, which Daytona lets through
    for bad in ("10.0.0.0", "01.2.3.4/8", "1.2.3.4/-1", "a.b.c.d/8", ",".join(["1.1.1.1/32"] * 11)):
        with pytest.raises(ApiError):
            validate_network_allow_list(bad)
    assert [str(n) for n in allowed_networks("10.1.2.3/8, 192.168.1.7/24")] == ["10.0.0.0/8", "192.168.1.0/24"]
    validate_domain_allow_list("*.example.com,api.github.com")
    with pytest.raises(ApiError):
        validate_domain_allow_list("bad_domain")
    assert resolve_auto_archive(0, 43200) == 43200
    assert resolve_auto_archive(50_000, 43200) == 43200
    assert resolve_auto_archive(60, 43200) == 60


def test_quota_messages_and_usage() -> None:
    @dataclass
    class R:
        id: str
        state: str
        cpu: int = 2
        memory: int = 4
        disk: int = 10
        gpu: int = 0

    used = usage([R("a", "started"), R("b", "stopped"), R("c", "archived"), R("d", "started")], exclude="d")
    assert (used.cpu, used.memory, used.disk) == (2, 4, 20)  # stopped keeps disk, archived holds nothing
    check(Quota(total_cpu=4), used, Request(2, 1, 1), dashboard_url="http://x")
    with pytest.raises(ApiError, match=r"^Total CPU limit exceeded\. Maximum allowed: 3\.\nTo increase"):
        check(Quota(total_cpu=3), used, Request(2, 1, 1), dashboard_url="http://x")
    with pytest.raises(ApiError, match=r"Disk request 30GB exceeds maximum allowed per sandbox \(20GB\)"):
        check(Quota(max_disk_per_sandbox=20), used, Request(1, 1, 30), dashboard_url="http://x")
    with pytest.raises(ApiError, match="Total memory limit exceeded"):
        check(Quota(), used, Request(1, 1, 1), dashboard_url="http://x", exhausted="memory")


def test_settings_merge_and_refusals() -> None:
    s = merge_settings(Settings(), {"transitions": {"*": 0, "stopping": 2}, "quota": {"total_cpu": 4}})
    assert (s.duration("creating"), s.duration("stopping"), s.quota.total_cpu) == (0, 2, 4)
    s = merge_settings(s, {"quota": {"total_memory": 8}})
    assert (s.quota.total_cpu, s.quota.total_memory) == (4, 8)  # merged, not replaced
    assert merge_settings(Settings(), s.to_json()) == s
    for bad in ({"transitions": {"flying": 1}}, {"quota": {"cpu": 1}}, {"list_lag": -1}, {"nope": 1},
                {"failed_auth": {"limit": 0}}):  # fmt: skip
        with pytest.raises(ValueError):  # noqa: PT011 - each message is specific
            merge_settings(Settings(), bad)


def test_new_fault_kinds_roundtrip_and_the_state_conflict_window() -> None:
    spec = {"state_conflict": {"ops": ["stop"], "seconds": 5}, "quota_exhausted": "disk",
            "build_failures": {"count": 2, "reason": "r"}, "list_lag": 1.5}  # fmt: skip
    faults, _ = parse_faults(spec)
    assert parse_faults(faults.to_json())[0] == faults
    inj = FaultInjector(faults)
    assert inj.decide("stop").conflict and not inj.decide("start").conflict
    assert [inj.build_failure(), inj.build_failure(), inj.build_failure()] == ["r", "r", None]
    assert inj.current().to_json()["build_failures"]["count"] == 0
    assert FaultInjector(parse_faults({"rate_limit": {"rate": 1}})[0]).decide("create").throttler == "sandbox-create"
    for bad in ({"state_conflict": {"ops": []}}, {"quota_exhausted": "gpu"}, {"build_failures": {"count": -1}}):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_faults(bad)


def test_failed_auth_tracker_blocks_after_the_limit() -> None:
    tracker = FailedAuthTracker()
    limit = FailedAuth(limit=2, ttl=30)
    assert tracker.failed("a", limit) is None
    blocked = tracker.failed("a", limit)
    assert blocked is not None and blocked["Retry-After"] == "30"
    assert tracker.failed("a", limit) is not None  # stays blocked
    assert tracker.failed("b", limit) is None  # per client


def test_list_index_trails_changes_by_the_lag() -> None:
    live: dict[str, SandboxRecord] = {}
    lag = [0.0]
    index = ListIndex(live, lambda: lag[0])
    rec = record(1)
    live[rec.id] = rec
    index.on_change("sandbox.created", rec, None, None)
    assert list(index.view()) == [rec]  # no lag: the live records
    lag[0] = 30.0
    other = record(2)
    live[other.id] = other
    index.on_change("sandbox.created", other, None, None)
    assert [r.id for r in index.view()] == [rec.id]  # the new one is not listed yet


def test_git_status_parsing_and_artifacts_and_mount_paths() -> None:
    status = parse_status("## main...origin/main [ahead 2, behind 1]\0M  a.py\0?? new.txt\0R  b.py\0old.py\0")
    assert (status["currentBranch"], status["ahead"], status["behind"]) == ("main", 2, 1)
    assert status["branchPublished"] is True
    assert [(f["name"], f["staging"], f["worktree"], f["extra"]) for f in status["fileStatus"]] == [
        ("a.py", "Modified", "Unmodified", ""), ("new.txt", "Untracked", "Untracked", ""),
        ("b.py", "Renamed", "Unmodified", "old.py")]  # fmt: skip
    assert parse_status("## No commits yet on main\0")["currentBranch"] == "main"
    text, artifacts = parse_artifacts('a\ndtn_artifact_k39fd2: {"type": "chart", "value": {"type": "line"}}\nb')
    assert (text, artifacts) == ("a\nb", {"charts": [{"type": "line"}]})
    assert mount_path_problems([{"mountPath": "/data"}]) == []
    assert mount_path_problems([{"mountPath": "rel"}, {"mountPath": "/etc/x"}, {"mountPath": "/a//b"}]) == [
        "Invalid mount path rel (must be absolute)", "Invalid mount path /etc/x (cannot mount to system directory)",
        "Invalid mount path /a//b (cannot contain consecutive slashes)"]  # fmt: skip


def test_every_route_has_a_known_operation_name() -> None:
    from controller.localsandbox.server import ALL_ROUTES

    route_ops = {r.op for r in ALL_ROUTES if not r.op.startswith("admin_")}
    assert route_ops | {"command_logs_follow"} == MAIN_OPS | TOOLBOX_OPS  # follow: command_logs upgraded
