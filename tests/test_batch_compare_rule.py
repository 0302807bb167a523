"""The comparison's judge (handlers/rollout/compare.py, ``judge``), as a pure function: what a batch
candidate's comparison says of its two jobs as read now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from handlers.batch_rules import CompareRule
from handlers.jobnames import batch_job_name
from handlers.rollout.compare import BatchRun, judge

RULE = CompareRule(data="azureml:recent:4", metric="auc", margin=0.01, timeout=timedelta(hours=2))
JOBS = {"candidate": "job-cand", "champion": "job-champ"}
DEPLOYMENTS = {"candidate": "cand-1", "champion": "nightly"}
SINCE = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def run(role: str, status: str = "Completed", **metrics: float) -> BatchRun:
    done = status in ("Completed", "Failed", "Canceled")
    return BatchRun(JOBS[role], status, done, dict(metrics) if status == "Completed" else None)


def verdict(candidate: BatchRun | None, champion: BatchRun | None, minutes: int = 30) -> tuple[str, str]:
    said = judge(
        RULE,
        JOBS,
        {"candidate": candidate, "champion": champion},
        DEPLOYMENTS,
        SINCE,
        SINCE + timedelta(minutes=minutes),
    )
    return said.next, said.why


def test_a_job_still_running_is_waited_for_until_the_timeout_then_the_comparison_fails() -> None:
    assert verdict(run("candidate", "Running"), run("champion", auc=0.8)) == (
        "wait",
        "comparison on azureml:recent:4: candidate Running, champion Completed",
    )
    late, why = verdict(run("candidate", "Running"), run("champion", auc=0.8), minutes=121)
    assert late == "fail" and "not done after 2h" in why


def test_a_job_that_did_not_complete_fails_the_comparison_whatever_the_other_logged() -> None:
    failed, why = verdict(run("candidate", auc=0.9), run("champion", "Failed"))
    assert failed == "fail" and "the champion's job job-champ ended Failed" in why
    gone, why = verdict(None, run("champion", auc=0.8))
    assert gone == "fail" and "no candidate job job-cand" in why


def test_the_gate_judges_the_candidate_s_metrics_against_the_champion_s_with_the_margin() -> None:
    win, why = verdict(run("candidate", auc=0.83), run("champion", auc=0.8))
    assert win == "promote" and "candidate cand-1 auc 0.83 beats champion nightly auc 0.8" in why
    lose, why = verdict(run("candidate", auc=0.805), run("champion", auc=0.8))
    assert lose == "reject" and why.startswith("comparison on azureml:recent:4: not switched: ")
    silent, why = verdict(run("candidate", rows=100), run("champion", auc=0.8))  # it logged no auc
    assert silent == "reject" and "has no numeric 'auc'" in why


def test_without_a_champion_job_the_floors_alone_decide() -> None:
    floors = RULE.model_copy(update={"floor": 0.7})
    said = judge(
        floors, {"candidate": "job-cand"}, {"candidate": run("candidate", auc=0.75)}, DEPLOYMENTS, SINCE, SINCE
    )
    assert said.next == "promote" and "floor alone decides" in said.why
    assert said.figures["gate"]["champion"] is None and said.figures["jobs"]["candidate"]["metrics"] == {"auc": 0.75}


def test_the_comparison_s_job_names_are_keyed_and_differ_by_role() -> None:
    key = b"k" * 32
    names = {batch_job_name(key, "churn", "cm-1", role) for role in ("candidate", "champion")}
    assert len(names) == 2 and all(n.startswith("compare-churn-") for n in names)
    assert batch_job_name(key, "churn", "cm-1", "candidate") == batch_job_name(key, "churn", "cm-1", "candidate")
    assert batch_job_name(b"x" * 32, "churn", "cm-1", "candidate") != batch_job_name(key, "churn", "cm-1", "candidate")


def test_a_job_whose_metrics_cannot_be_read_fails_the_comparison_rather_than_losing_it() -> None:
    unread = BatchRun("job-cand", "Completed", True, {}, "job job-cand has no step 'batchscoring' (its steps: score)")
    failed, why = verdict(unread, run("champion", auc=0.8))
    assert failed == "fail" and "the candidate's job job-cand has no step 'batchscoring' (its steps: score)" in why
