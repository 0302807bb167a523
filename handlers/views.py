"""Read models: what ``GET /api/models`` and the console show of each model, from the policy and the ledger."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from handlers import freeze, guards
from handlers.errors import PermanentError, TransientError
from handlers.ports import Ledger
from handlers.records import ModelState, iso, span
from handlers.rollout import supersede
from handlers.rollout.progress import RolloutProgress
from handlers.workspace_ports import Deployments

if TYPE_CHECKING:
    from handlers.policy import Policy


def health_numbers(verdict: Any) -> dict[str, Any] | None:
    """The numbers of a recorded health verdict that a person reads against their limits."""
    if not isinstance(verdict, dict):
        return None

    def part(key: str) -> dict[str, Any]:
        value = verdict.get(key)
        return value if isinstance(value, dict) else {}

    candidate, baseline, limits = part("candidate"), part("baseline"), part("limits")
    return {
        "status": verdict.get("status"),
        "next": verdict.get("next"),
        "why": verdict.get("why"),
        "source": verdict.get("source"),
        "requests": candidate.get("served"),
        "failure_rate": candidate.get("failure_rate"),
        "baseline_failure_rate": baseline.get("failure_rate"),
        "p95_ms": candidate.get("p95_ms"),
        "p_value": verdict.get("p_value"),
        "max_error_rate": limits.get("max_error_rate"),
        "max_latency_ms": limits.get("max_latency_ms"),
        "min_requests": limits.get("min_requests"),
    }


def compare_numbers(figures: Any) -> dict[str, Any] | None:
    """The numbers of a recorded batch comparison (handlers/rollout/compare.py) a person reads: the data
    both deployments scored, each job's state, each gate metric's candidate and champion value, the verdict."""
    if not isinstance(figures, dict):
        return None
    gate: dict[str, Any] = figures["gate"] if isinstance(figures.get("gate"), dict) else {}
    jobs: dict[str, Any] = figures["jobs"] if isinstance(figures.get("jobs"), dict) else {}
    return {
        "data": figures.get("data"),
        "jobs": {str(r): f"{j.get('job')} {j.get('status')}" for r, j in jobs.items() if isinstance(j, dict)},
        "passed": gate.get("passed"),
        "why": gate.get("why") or figures.get("error"),
        "metrics": [
            {k: m.get(k) for k in ("metric", "candidate", "champion", "needed", "passed")}
            for m in gate.get("metrics") or []
            if isinstance(m, dict)
        ],
    }


def model_views(
    policy: Policy, ledger: Ledger, now: datetime, batch: Mapping[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Every model of the policy: its state, what is in flight, its cooldown and budget, its last decision;
    a batch model's endpoint and its default deployment as Azure has it now (``batch``: :func:`batch_defaults`)."""
    views = [model_view(policy, ledger, name, ledger.get_model(name), now) for name in policy.models]
    for view in views:
        if batch and view["model"] in batch:
            view["batch_endpoint"] = batch[view["model"]]
    return views


def batch_defaults(policy: Policy, deployments: Deployments) -> dict[str, dict[str, Any]]:
    """Each batch model's endpoint (``deploy.batch_endpoint``) and its default deployment now, read
    through the port (one read per batch model); a read that fails says why instead."""
    out: dict[str, dict[str, Any]] = {}
    for name, mp in policy.models.items():
        if mp.deploy is None or mp.deploy.batch_endpoint is None:
            continue
        endpoint = mp.deploy.target
        try:
            default = next(iter(deployments.endpoint_traffic(endpoint)), None)
            out[name] = {"name": endpoint, "default": default}
        except (PermanentError, TransientError) as exc:
            out[name] = {"name": endpoint, "default": None, "error": str(exc)[:300]}
    return out


def _explain_flights(
    policy: Policy,
    ledger: Ledger,
    name: str,
    state: ModelState,
    flights: dict[str, dict[str, Any]],
    progress: RolloutProgress | None,
    now: datetime,
) -> None:
    """What an operator wants beside a flight: the retrain's job link and why it started; the rollout's bake and the
    history of its steps with the health numbers each was judged on."""
    if "retrain" in flights:
        record = ledger.get_decision(state.flights["retrain"].decision, state.model)
        flights["retrain"]["url"] = (record.job or {}).get("url") if record is not None else None
        flights["retrain"]["why"] = record.reason if record is not None else None  # what started it
    if "rollout" not in flights:
        return
    decision = state.flights["rollout"].decision
    mp = policy.models.get(name)
    rule = mp.deploy.rollout if mp is not None and mp.deploy is not None else None
    started = progress.started if progress is not None else None
    if rule is not None:
        shadowing = progress is not None and progress.step < 0 and progress.mirror and rule.mirror is not None
        bake = rule.mirror_stage().bake if shadowing else rule.bake  # the shadow stage bakes for its own
        flights["rollout"]["bake_s"] = bake.total_seconds()
        flights["rollout"]["bake_until"] = iso(started + bake) if started is not None else None
        left = (started + bake - now).total_seconds() if started is not None else None
        flights["rollout"]["bake_left_s"] = None if left is None else max(0.0, left)  # by the service's clock
    history = [r for r in ledger.decisions(name, 100) if r.details.get("deploy_decision") == decision]
    flights["rollout"]["history"] = [
        {
            "id": r.id,
            "action": r.action,
            "outcome": r.outcome,
            "at": r.at,
            "step": r.details.get("step"),
            "judged_step": r.details.get("from_step", r.details.get("step")),
            "traffic": r.details.get("traffic"),
            "mirror": r.details.get("mirror"),
            "health": health_numbers(r.details.get("health")),
            "compare": compare_numbers(r.details.get("compare")),  # a batch candidate's comparison
        }
        for r in reversed(history)
    ]


def smoke_deferred(progress: RolloutProgress) -> dict[str, Any] | None:
    """The smoke test deferred (:func:`handlers.rollout.supersede.deferral`): waiting out an outage
    (:mod:`handlers.rollout.smoke_outage`: why, since when, how many tries, and until when before the
    candidate is rolled back), or refused (401) or throttled (429) (the same, bounded by the same smoke.max_wait); None
    when none waits."""
    pending = progress.pending
    return supersede.deferral(pending) if pending is not None and supersede.supersedable(pending) else None


def model_view(policy: Policy, ledger: Ledger, name: str, state: ModelState, now: datetime) -> dict[str, Any]:
    last = ledger.decisions(name, 1)
    until = guards.cooldown_until(state, policy.cooldown(name))
    in_cooldown = until is not None and now < until
    flights: dict[str, dict[str, Any]] = {
        k: {"decision": f.decision, "status": f.status, "job": f.job, "since": f.since}
        for k, f in state.flights.items()
    }
    progress = RolloutProgress.of(state.flights.get("rollout"))
    if progress is not None:  # where the rollout stands: its step (or shadow stage), traffic and any pause
        stage = (
            "steps"
            if progress.step >= 0
            else "shadow"
            if progress.mirror
            else "comparing"
            if progress.compare
            else "provisioning"
        )
        flights["rollout"].update(
            step=progress.step,
            steps=list(progress.steps),
            traffic=progress.traffic,
            paused=progress.paused,
            stage=stage,
            mirror=progress.mirror,  # the shadow stage: percent mirrored to the candidate, since when
            smoked=progress.smoked,  # the record of the candidate's passed smoke test (deploy.rollout.smoke)
            smoke_deferred=smoke_deferred(progress),  # a smoke test an outage keeps failing: since when, until when
            compare=progress.compare,  # a batch candidate's comparison: its jobs, data, since when
        )
    _explain_flights(policy, ledger, name, state, flights, progress, now)
    status = (
        "waiting for approval"
        if any(f.status == "pending" for f in state.flights.values())
        else "retraining"
        if "retrain" in flights
        else "rollout paused"
        if progress is not None and progress.paused
        else "rolling out"
        if "rollout" in flights
        else "cooldown"
        if in_cooldown
        else "idle"
    )
    budget = policy.daily_budget(name)
    used = state.budget_used if state.budget_day == now.date().isoformat() else 0
    windows = policy.freeze_windows(name)
    frozen = {a: f.reason for a in freeze.ACTIONS if (f := freeze.frozen(state.frozen, windows, a, now)) is not None}
    mp = policy.models.get(name)
    environment = mp.environment if mp is not None else None
    compared = None
    if mp is not None and mp.deploy is not None and mp.deploy.batch_endpoint and mp.deploy.batch_endpoint.compare:
        judged = [r for r in ledger.decisions(name, 20) if isinstance(r.details.get("compare"), dict)]
        if judged:  # the latest comparison's verdict, with its numbers
            compared = {
                "decision": judged[0].id,
                "action": judged[0].action,
                "outcome": judged[0].outcome,
                "at": judged[0].at,
            }
            compared.update(compare_numbers(judged[0].details["compare"]) or {})
    return {
        "model": name,
        "state": status,
        "in_flight": flights,
        "cooldown_until": iso(until) if in_cooldown and until else None,
        "budget": {"used_today": used, "daily": budget},
        "last_decision": last[0].summary() if last else None,
        # what is frozen now, and why (the stop switch or a window: handlers.freeze); {} when nothing
        "frozen": frozen,
        "stop_switch": dict(state.frozen) if state.frozen else None,
        # the registry the model's champions may be served from (docs/environments.md); None: this workspace's
        "environment": (
            {
                "registry": environment.registry,
                "role": environment.role,
                **({"upstream": environment.upstream} if environment.upstream else {}),  # picks up from it
                # whose registry versions it takes: the upstream service's identity, its client id and object id
                **({"upstream_identity": list(environment.upstream_identity)} if environment.upstream_identity else {}),
                # how often the reconciler polls the registry for it (unset: every pass)
                **({"poll_every": span(environment.poll_every)} if environment.poll_every else {}),
            }
            if environment
            else None
        ),
        # a batch model's last comparison (deploy.batch_endpoint.compare): its verdict and numbers; None: none yet
        "last_comparison": compared,
    }
