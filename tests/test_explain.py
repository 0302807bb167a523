"""``retrain explain`` goes through the executor's own preview (Retrainer.explain): for each situation,
what it says a delivery would do is what the delivery then records (same decision, outcome, guard and
reason), and it records nothing itself."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from handlers.envelopes import parse_body
from handlers.preview import Preview
from handlers.records import DecisionRecord
from tests.builders import MODEL, NOW, breach_event, drift_event, ours, run_event, with_classes
from tests.conftest import REPO, retrain_cli
from tests.ledgers import LedgerSpec
from tests.world import World


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(LedgerSpec("sqlite", str(tmp_path / "ledger.db")))


def explained_then_delivered(world: World, raw: dict[str, Any]) -> tuple[Preview, DecisionRecord]:
    [env] = parse_body(json.dumps([raw]))
    before = world.ledger.decisions(None, 1000)
    [item] = world.worker.explain([env], check=True)
    assert world.ledger.decisions(None, 1000) == before  # explaining records nothing
    [(decision, preview)] = item.decisions
    assert preview is not None and preview.decision.id == decision.id
    [record] = world.deliver(raw).decisions
    return preview, record


def says_what_happens(preview: Preview, record: DecisionRecord) -> None:
    said = preview.record
    would = "submitted" if said.outcome == "planned" else said.outcome  # a preview acts on nothing
    assert (said.id, would, said.details.get("guard"), said.reason) == (
        record.id,
        record.outcome,
        record.details.get("guard"),
        record.reason,
    )
    if "guard" not in record.details:  # carried out: what explain renders is what was submitted
        assert preview.rendered == record.details["rendered"]


def test_a_drift_event_that_retrains(world: World) -> None:
    preview, record = explained_then_delivered(world, drift_event(event_id="e1"))
    assert record.outcome == "submitted" and preview.verdict is not None and preview.verdict.granted
    says_what_happens(preview, record)
    assert world.actions.submissions == [record.job["name"]]  # type: ignore[index]


def test_a_drift_event_while_a_retrain_is_in_flight(world: World) -> None:
    world.deliver(drift_event(event_id="e1"))
    world.clock.advance(hours=7)
    preview, record = explained_then_delivered(world, drift_event(event_id="e2"))
    assert record.details["guard"] == "in_flight"
    says_what_happens(preview, record)


def test_a_drift_event_in_cooldown(world: World) -> None:
    [sub] = world.deliver(drift_event(event_id="e1")).decisions
    world.deliver(run_event(run_id=sub.job["name"], tags=ours(decision=sub.id), status="Failed"))  # type: ignore[index]
    world.clock.advance(hours=1)
    preview, record = explained_then_delivered(world, drift_event(event_id="e2"))
    assert record.details["guard"] == "cooldown"
    says_what_happens(preview, record)


def test_a_drift_event_with_the_daily_budget_used_up(world: World) -> None:
    used = world.policy.daily_budget(MODEL)
    assert used is not None
    world.ledger.update_model(MODEL, lambda s: (replace(s, budget_used=used, budget_day=NOW.date().isoformat()), None))
    preview, record = explained_then_delivered(world, drift_event(event_id="e1"))
    assert record.details["guard"] == "budget"
    says_what_happens(preview, record)


def test_a_finished_run_whose_candidate_the_gate_accepts(world: World) -> None:
    [sub] = world.deliver(drift_event(event_id="e1")).decisions
    raw = run_event(run_id=sub.job["name"], tags=ours(decision=sub.id))  # type: ignore[index]
    preview, record = explained_then_delivered(world, raw)
    assert (record.action, record.outcome) == ("deploy", "submitted")
    assert preview.judged is not None and preview.judged.next == "deploy"
    says_what_happens(preview, record)


def test_a_finished_run_whose_candidate_the_gate_refuses(world: World) -> None:
    world.actions.metrics = {"r2_score": "0.1", "auc": "0.1"}  # below the policy's floor
    [sub] = world.deliver(drift_event(event_id="e1")).decisions
    raw = run_event(run_id=sub.job["name"], tags=ours(decision=sub.id))  # type: ignore[index]
    preview, record = explained_then_delivered(world, raw)
    assert record.action == "deploy" and record.outcome in ("skipped", "failed") and "guard" not in record.details
    assert preview.judged is not None and preview.judged.next != "deploy"
    says_what_happens(preview, record)
    assert world.actions.deployments == []


# --------------------------------------------------------------------------- signal classes and worthiness


def test_a_retrain_on_the_data_the_champion_saw_is_explained_as_the_skip_a_delivery_records(world: World) -> None:
    world.actions.trained_on = {"diabetes-training": "2"}
    world.actions.latest = {"diabetes-training": "2"}
    preview, record = explained_then_delivered(world, drift_event(event_id="e1"))
    assert record.outcome == "skipped" and record.reason.startswith("not worth it: the champion")
    says_what_happens(preview, record)
    assert world.actions.submissions == []


def test_a_vetoed_breach_is_explained_as_the_skip_a_delivery_records(world: World) -> None:
    world.policy = with_classes({"churn-data-drift": "retrain", "churn-data-quality": "veto"}, model="churn-classifier")
    world.worker = world.new_worker()
    world.actions.breaches = {"monitor-run-1": ["churn-data-drift", "churn-data-quality"]}
    preview, record = explained_then_delivered(world, breach_event(event_id="b1"))
    assert record.outcome == "skipped" and "'churn-data-quality' of class veto breached" in record.reason
    says_what_happens(preview, record)


def test_retrain_explain_prints_the_signal_class_and_what_the_checks_found(tmp_path: Path) -> None:
    policy = (REPO / "examples" / "policy.yaml").read_text()
    policy = policy.replace(
        "signals: [feature-drift]            # SDK v2 model-monitoring signal names",
        "signals: [feature-drift, accuracy]\n      classes: {accuracy: retrain_now}",
    )
    (tmp_path / "policy.yaml").write_text(policy)
    raw = breach_event(signal="accuracy", experiment="diabetes-monitor", event_id="b1")
    (tmp_path / "event.json").write_text(json.dumps([raw]))
    out = retrain_cli(
        "explain",
        str(tmp_path / "event.json"),
        "--policy",
        str(tmp_path / "policy.yaml"),
        env={"RETRAIN_SQLITE_PATH": str(tmp_path / "l.db")},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "class   signal 'accuracy' of monitor 'diabetes-monitor': retrain_now" in out.stdout
    assert "worth   goes ahead, not judged: dry run: no workspace is read" in out.stdout
