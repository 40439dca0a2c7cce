"""Operator-wide health: causes start and clear as Daytona's answers say, listeners hear each change."""

from __future__ import annotations

from controller.errors import Cause
from controller.health import Health


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[Health, Clock, list[tuple[Cause, bool]]]:
    clock = Clock()
    health = Health(outage_after=60, hold=300, clock=clock)
    changes: list[tuple[Cause, bool]] = []
    health.on_change(lambda cause, active, _: changes.append((cause, active)))
    return health, clock, changes


def test_auth_failure_degrades_until_any_call_succeeds() -> None:
    health, _, changes = make()
    health.operator_wide(Cause.DAYTONA_AUTH, "HTTP 401")
    health.operator_wide(Cause.DAYTONA_AUTH, "HTTP 401 again")
    assert health.degraded() and list(health.active()) == [Cause.DAYTONA_AUTH]
    health.daytona_ok(operation="get")
    assert not health.degraded()
    assert changes == [(Cause.DAYTONA_AUTH, True), (Cause.DAYTONA_AUTH, False)]  # one change each way


def test_quota_clears_on_a_successful_create_not_on_a_get() -> None:
    health, clock, _ = make()
    health.operator_wide(Cause.DAYTONA_QUOTA, "Total CPU limit exceeded")
    health.daytona_ok(operation="get")
    assert Cause.DAYTONA_QUOTA in health.active()
    health.daytona_ok(operation="create")
    assert not health.degraded()
    health.operator_wide(Cause.DAYTONA_QUOTA, "Total CPU limit exceeded")
    clock.now += 301  # nobody tried again for longer than the hold
    assert not health.degraded()


def test_outage_is_reported_only_after_the_grace() -> None:
    health, clock, changes = make()
    health.daytona_transient("connection refused")
    clock.now += 30
    health.daytona_transient("connection refused")
    assert not health.degraded()
    clock.now += 31
    health.daytona_transient("connection refused")
    assert Cause.DAYTONA_UNAVAILABLE in health.active()
    health.daytona_ok(operation="get")
    assert not health.degraded()
    assert changes == [(Cause.DAYTONA_UNAVAILABLE, True), (Cause.DAYTONA_UNAVAILABLE, False)]
    health.daytona_transient("connection refused")  # a new failure starts a new grace period
    assert not health.degraded()
