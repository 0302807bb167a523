"""Traffic splits, as pure rules: what a rollout's step gives each deployment of the endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PROVISIONED = "succeeded"
PROVISIONING_FAILED = frozenset({"failed", "canceled", "cancelled"})
MAX_MIRROR = 50  # Azure ML mirrors at most 50% of an endpoint's traffic ("Safe rollout for online endpoints")


def split(original: dict[str, int], candidate: str, percent: int) -> dict[str, int]:
    """The candidate gets ``percent``; the rest is shared among the deployments that had traffic
    before the rollout, in proportion to what they had (largest remainder, so it sums to 100).
    Deployments that had 0% keep 0% and are left out."""
    others = {d: p for d, p in sorted(original.items()) if d != candidate and p > 0}
    rest = 100 - percent
    total = sum(others.values())
    if not others or rest <= 0:  # nobody else served: nothing to share (start_deploy needs a live deployment)
        return {candidate: 100}
    out = {candidate: percent}
    exact = {d: rest * p / total for d, p in others.items()}
    shares = {d: int(v) for d, v in exact.items()}
    left = rest - sum(shares.values())
    for d in sorted(exact, key=lambda d: (-(exact[d] - shares[d]), -others[d], d))[:left]:
        shares[d] += 1
    out.update({d: s for d, s in shares.items() if s > 0})
    return out


def live(traffic: Mapping[str, Any]) -> dict[str, int]:
    """The deployments that get traffic, name -> percent: one at 0% is the same as one left out."""
    return {str(k): int(v) for k, v in traffic.items() if int(v) > 0}


def fmt(traffic: Mapping[str, int] | None) -> str:
    """A split for people: ``{blue: 90%, cand: 10%}``, largest first."""
    if not traffic:
        return "{}"
    return "{" + ", ".join(f"{d}: {p}%" for d, p in sorted(traffic.items(), key=lambda kv: (-kv[1], kv[0]))) + "}"


def mirror_refusal(traffic: dict[str, int], mirror: dict[str, int]) -> str | None:
    """Why Azure ML would refuse an endpoint with this live and mirror traffic, or None. Its rules
    ("Safe rollout for online endpoints", the mirroring limitations; the REST spec's
    ``mirrorTraffic``: "Traffic values need to sum to utmost 50"): at most 50% mirrored, to one
    deployment, which gets no live traffic."""
    if sum(mirror.values()) > MAX_MIRROR:
        return f"Azure ML mirrors at most {MAX_MIRROR}% of an endpoint's traffic; lower the mirror's percent"
    if len(mirror) > 1:
        return (
            f"Azure ML mirrors traffic to one deployment per endpoint, not {len(mirror)} ({', '.join(sorted(mirror))})"
        )
    both = sorted(set(mirror) & set(traffic))
    if both:
        return f"Azure ML never gives a deployment live and mirrored traffic at once ({', '.join(both)})"
    return None
