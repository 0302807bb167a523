"""Query guards of rollouts (``deploy.rollout.guards.queries``): custom KQL, one number per deployment,
judged at each look of a step beside the health verdict. End to end with the real Azure ML SDK against
the fake ARM and the real ``LogsQueryClient`` against the fake Log Analytics API (which checks the
caller's role on the workspace it is asked), and the pure rule and the KQL quoting on their own."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from function_app.adapters.monitor_guards import guard_query
from handlers import guards
from handlers.errors import PermanentError
from handlers.guard_rules import QueryGuard
from handlers.policy_file import parse_policy
from handlers.records import from_iso
from handlers.rollout.query_guards import GuardReading, apply, check
from tests.azure_world import ENDPOINT, MODEL, SUB, AzureWorld
from tests.conftest import REPO
from tests.fake_http import Refusal
from tests.ledgers import LedgerSpec
from tests.rollouts import Reads

BAKE, LAG, MAX_BAKE = timedelta(minutes=10), timedelta(minutes=5), timedelta(minutes=30)  # the example policy's
CONVERSION = (
    'AppEvents\n| where Name == "checkout" and tostring(Properties.deployment) == deployment_name\n'
    "| summarize value = avg(todouble(Measurements.converted))"
)
# Log Analytics in another subscription, where infra/ grants the app no role
ELSEWHERE = (
    "/subscriptions/99999999-0000-0000-0000-000000000000/resourceGroups/rg-shop/providers/"
    "Microsoft.OperationalInsights/workspaces/log-shop"
)


@dataclass
class Checkout:
    time: datetime
    deployment: str
    converted: bool


def guarded_policy(mirror: bool = False, **guard: Any) -> Any:
    raw = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
    if mirror:
        raw["models"][MODEL]["deploy"]["rollout"]["mirror"] = {"percent": 10, "bake": "10m"}
    raw["models"][MODEL]["deploy"]["rollout"]["guards"] = {
        "queries": {"conversion": {"query": CONVERSION, "baseline": {"margin": 0.2}, **guard}}
    }
    return parse_policy(yaml.safe_dump(raw))


class Shop(Reads):
    """A candidate at its first step (10%) under a policy with a conversion guard; the fake Log
    Analytics holds checkout events beside the traffic log and answers the guard's query as Kusto would."""

    def __init__(self, tmp_path: Path, mirror: bool = False, **guard: Any) -> None:
        policy = guarded_policy(mirror, **guard)
        self.azure = AzureWorld(tmp_path, LedgerSpec("sqlite", str(tmp_path / "l.db")), policy=policy)
        self.checkouts: list[Checkout] = []
        self.refuse: Refusal | None = None
        self.azure.logs.guard(CONVERSION, self.answer)
        self.azure.logs.add_workspace(ELSEWHERE)
        [deploy] = self.azure.deliver(self.azure.finished_run(r2="0.61")).decisions
        self.name = str(deploy.details["rendered"]["deployment"])
        self.azure.provisioned()
        assert self.look()["state"] == ("mirroring" if mirror else "stepped")

    def answer(self, endpoint: str, deployment: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """``summarize value = avg(...)`` over no rows is one row with a null, as in Kusto."""
        if self.refuse is not None:
            raise self.refuse
        seen = [c.converted for c in self.checkouts if c.deployment == deployment and start <= c.time < end]
        return [{"value": sum(seen) / len(seen) if seen else None}]

    def look(self) -> dict[str, Any]:
        [entry] = self.azure.new_worker().reconcile().rollouts
        return dict(entry)

    def started(self) -> datetime:
        data = self.azure.ledger.get_model(MODEL).flights[guards.ROLLOUT].data["rollout"]
        at = from_iso(data["step_started"])
        assert at is not None
        return at

    def bake(self, *, candidate: float | None, baseline: float | None = 0.3, minutes: int = 10) -> None:
        """Healthy traffic for both deployments over the step's bake; checkouts converting at the given rates."""
        for m in range(minutes):
            when = self.started() + timedelta(minutes=m, seconds=30)
            self.azure.serve(when, self.name, ok=30)
            self.azure.serve(when, "blue", ok=30)
            for deployment, rate in ((self.name, candidate), ("blue", baseline)):
                if rate is not None:
                    self.checkouts += [Checkout(when, deployment, i < rate * 20) for i in range(20)]


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shop]:
    monkeypatch.chdir(tmp_path)
    world = Shop(tmp_path)
    yield world
    world.azure.close()
    assert world.azure.arm.unexpected == [] and world.azure.logs.unexpected == []


def test_a_candidate_whose_business_metric_drops_is_rolled_back_with_the_figures(shop: Shop) -> None:
    shop.bake(candidate=0.1, baseline=0.3)
    shop.azure.now.now = shop.started() + BAKE + LAG

    assert shop.look()["state"] == "rolled_back"

    [rollback] = shop.records("rollback")
    assert "guard conversion" in rollback.reason and "0.3" in rollback.reason and "margin 0.2" in rollback.reason
    [figures] = rollback.details["guards"]
    assert (figures["guard"], figures["status"], figures["candidate"], figures["baseline"]) == (
        "conversion",
        "breach",
        0.1,
        0.3,
    )
    assert figures["limits"] == {"baseline": {"margin": 0.2, "higher_is_better": True}}
    assert f'let deployment_name = "{shop.name}";' in figures["request"] and CONVERSION in figures["request"]
    assert rollback.details["health"]["status"] == "unhealthy"  # the HTTP health alone was fine
    assert shop.traffic() == {"blue": 100} and guards.ROLLOUT not in shop.azure.ledger.get_model(MODEL).flights


def test_a_candidate_as_good_as_its_baseline_steps_on_with_the_guard_s_figures(shop: Shop) -> None:
    shop.bake(candidate=0.3, baseline=0.3)
    shop.azure.now.now = shop.started() + BAKE + LAG

    assert shop.look()["state"] == "stepped"

    [step] = [r for r in shop.records("rollout") if r.details["step"] == 1]
    assert [f["status"] for f in step.details["guards"]] == ["ok"] and shop.traffic()[shop.name] == 50
    sent = [c.body["query"] for c in shop.azure.logs.calls if CONVERSION in str((c.body or {}).get("query"))]
    assert {q.splitlines()[1] for q in sent} == {
        f'let deployment_name = "{shop.name}";',
        'let deployment_name = "blue";',
    }


def test_a_guard_whose_query_returns_nothing_holds_the_step_and_at_max_bake_rolls_back(shop: Shop) -> None:
    shop.bake(candidate=None, baseline=0.3)  # no checkout reached the candidate: its avg() is null
    shop.azure.now.now = shop.started() + BAKE + LAG

    assert shop.look()["state"] == "held"
    [hold] = [r for r in shop.records("rollout") if r.outcome == "skipped"]
    assert "returned no number for " + shop.name in hold.reason and "does not advance" in hold.reason
    assert shop.traffic()[shop.name] == 10
    shop.azure.now.now = shop.started() + BAKE + LAG + timedelta(minutes=5)
    assert shop.look()["state"] == "held"  # recorded once per step
    assert len([r for r in shop.records("rollout") if r.outcome == "skipped"]) == 1

    shop.azure.now.now = shop.started() + MAX_BAKE

    assert shop.look()["state"] == "rolled_back"
    [rollback] = shop.records("rollback")
    assert "nothing is promoted unverified" in rollback.reason and shop.traffic() == {"blue": 100}


def test_a_query_azure_refuses_holds_the_step_with_azure_s_message(shop: Shop) -> None:
    shop.bake(candidate=0.3, baseline=0.3)
    shop.refuse = Refusal(400, "BadArgumentError", "The request had some invalid properties")
    shop.azure.now.now = shop.started() + BAKE + LAG

    assert shop.look()["state"] == "held"

    [hold] = [r for r in shop.records("rollout") if r.outcome == "skipped"]
    assert "the query was refused" in hold.reason and "invalid properties" in hold.reason
    shop.refuse = None
    shop.azure.now.now += timedelta(minutes=2)
    assert shop.look()["state"] == "stepped"  # verified now: the step goes on


def test_a_workspace_the_identity_holds_no_role_on_is_refused_as_azure_does_and_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shop = Shop(tmp_path, workspace=ELSEWHERE)
    try:
        shop.bake(candidate=0.3, baseline=0.3)
        shop.azure.now.now = shop.started() + BAKE + LAG

        assert shop.look()["state"] == "held"

        [hold] = [r for r in shop.records("rollout") if r.outcome == "skipped"]
        [figures] = hold.details["guards"]
        assert "InsufficientAccessError" in figures["why"] and f"Log Analytics Reader on {ELSEWHERE}" in figures["why"]
        refused = [c for c in shop.azure.logs.calls if c.status == 403]
        assert refused and all(ELSEWHERE in c.path for c in refused) and SUB not in ELSEWHERE
    finally:
        shop.azure.close()


@pytest.mark.parametrize(("candidate", "state"), [(0.1, "rolled_back"), (None, "stepped")])
def test_in_the_shadow_stage_a_breach_rolls_back_never_live_and_nothing_to_read_does_not_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, candidate: float | None, state: str
) -> None:
    monkeypatch.chdir(tmp_path)
    shop = Shop(tmp_path, mirror=True)
    try:
        assert shop.traffic() == {"blue": 100}
        shop.bake(candidate=candidate, baseline=0.3)
        shop.azure.now.now = shop.started() + BAKE + LAG

        assert shop.look()["state"] == state

        [record] = shop.records("rollback") or [r for r in shop.records("rollout") if r.details["step"] == 0]
        [figures] = record.details["guards"]
        assert figures["status"] == ("breach" if candidate is not None else "unverified")
        props = shop.azure.arm.endpoints[ENDPOINT]["properties"]
        assert not props.get("mirrorTraffic")  # the mirror cleared either way
        if state == "rolled_back":  # its traffic was never live
            assert shop.traffic() == {"blue": 100} and "never live" in record.reason
    finally:
        shop.azure.close()


# --------------------------------------------------------------------------- the rule and the quoting


def guard(**kw: Any) -> QueryGuard:
    return QueryGuard(query="T | where d == deployment_name | summarize value = count()", **kw)


def reading(value: float | None, deployment: str = "cand", error: str | None = None) -> GuardReading:
    return GuardReading("g", deployment, value, error=error)


@pytest.mark.parametrize(
    ("kw", "cand", "base", "status"),
    [
        ({"min": 1.0}, 0.5, None, "breach"),
        ({"max": 1.0}, 1.5, None, "breach"),
        ({"min": 1.0, "max": 2.0}, 1.5, None, "ok"),
        ({"baseline": {"margin": 0.1}}, 0.85, 1.0, "breach"),
        ({"baseline": {"margin": 0.1}}, 0.95, 1.0, "ok"),
        ({"baseline": {"margin": 0.1, "higher_is_better": False}}, 1.15, 1.0, "breach"),
        ({"baseline": {"margin": 0.1, "higher_is_better": False}}, 0.5, 1.0, "ok"),
        ({"baseline": {"margin": 0.0}}, -0.1, 0.0, "breach"),  # a zero baseline: any worse value breaches
        ({"baseline": {"margin": 0.1}}, None, 1.0, "unverified"),
        ({"baseline": {"margin": 0.1}}, 1.0, None, "unverified"),
    ],
)
def test_each_limit_judges_the_candidate(
    kw: dict[str, Any], cand: float | None, base: float | None, status: str
) -> None:
    g = guard(**kw)
    b = reading(base, "blue") if g.baseline is not None else None
    assert check("g", g, reading(cand), b).status == status


def test_without_a_baseline_serving_a_relative_guard_passes_and_says_so() -> None:
    result = check("g", guard(baseline={"margin": 0.1}), reading(0.1), None)
    assert result.status == "ok" and "no baseline serves" in result.why


def test_an_unverified_guard_turns_advance_into_hold_but_never_an_interim_wait_into_anything() -> None:
    from handlers.analysis import Verdict

    def verdict(next_: str) -> Any:
        fields = dict.fromkeys(Verdict.__dataclass_fields__)
        return Verdict(**{**fields, "status": "healthy", "next": next_, "why": "fine", "final": True})  # type: ignore[arg-type]

    unverified = [check("g", guard(min=1.0), reading(None, error="boom"), None)]
    assert apply(verdict("advance"), unverified, past_max_bake=False).next == "hold"
    assert apply(verdict("advance"), unverified, past_max_bake=True).next == "rollback"
    assert apply(verdict("wait"), unverified, past_max_bake=True).next == "wait"
    assert apply(verdict("hold"), unverified, past_max_bake=True).next == "hold"  # on_no_traffic: hold stays
    assert apply(verdict("advance"), unverified, past_max_bake=True, shadow=True).next == "advance"


@pytest.mark.parametrize("name", ['blue"; AppEvents | take 1; let x = "', "blue\nx", "x" * 40, "9blue"])
def test_a_name_azure_ml_would_not_accept_is_never_put_into_a_query(name: str) -> None:
    with pytest.raises(PermanentError, match="not an Azure ML online deployment name"):
        guard_query(CONVERSION, ENDPOINT, name)


def test_the_names_are_declared_as_kql_string_literals_in_front_of_the_policy_s_text() -> None:
    text = guard_query(CONVERSION, ENDPOINT, "blue-2")
    assert text == f'let endpoint_name = "{ENDPOINT}";\nlet deployment_name = "blue-2";\n{CONVERSION}'


def test_a_guard_on_a_workspace_based_application_insights_component_queries_the_component(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    component = f"/subscriptions/{SUB}/resourceGroups/rg-shop/providers/Microsoft.Insights/components/appi-shop"
    shop = Shop(tmp_path, workspace=component)
    try:
        shop.azure.logs.add_workspace(component)
        shop.bake(candidate=0.3, baseline=0.3)
        shop.azure.now.now = shop.started() + BAKE + LAG

        assert shop.look()["state"] == "stepped"

        asked = {c.path for c in shop.azure.logs.calls if CONVERSION in str((c.body or {}).get("query"))}
        assert asked == {f"/v1{component}/query"}  # query_resource on the component, not a workspace id
        # allowed by a role infra assigns: Monitoring Reader on the subscription (*/read) covers the query
        assert shop.azure.logs.principal is not None
        assert "Monitoring Reader" in shop.azure.logs.principal.roles_at(component)
    finally:
        shop.azure.close()
