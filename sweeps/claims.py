"""The paper's claims that several sweeps declare (crowding, closer and more flankers crowd more, one
network crowds more than another), the models a claim can be measured on, and the claims' lines of
a --dry-run.

Every claim is measured only where its effect can be seen (results.visibility); a sweep declares a
claim for the models whose planned conditions have its terms (SweepSpec refuses any other), so
`measurable` restricts a shared claim to them before the spec is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from ecc.conditions import Condition
from ecc.config import TrainConfig
from results.findings import _term_rows, _x_values
from results.visibility import MARGIN

from .spec import Claim, EvalGrid, SpecError, SweepSpec, Term, check_measurable, planned_rows


def crowding(spacing: float) -> Claim:
    return Claim("crowding", "Flankers lower the accuracy of a network trained on isolated targets (crowding).",
                 (Term("a"), Term("xax", spacing, weight=-1)),
                 measure=f"accuracy without flankers minus with two flankers at spacing {spacing:g}, mean over "
                         "target eccentricities")


def closer_crowds_more(spacing: float) -> Claim:
    """The first half of the paper's second claim: xax at spacing S below xax at 2S."""
    far = 2 * spacing
    return Claim("closer flankers crowd more",
                 "Flankers closer to the target crowd more: two flankers at spacing S lower accuracy more than "
                 "at 2S.",
                 (Term("xax", far), Term("xax", spacing, weight=-1)),
                 measure=f"xax accuracy at spacing {far:g} minus at spacing {spacing:g}, mean over target "
                         "eccentricities")


def more_flankers_crowd_more(spacing: float) -> tuple[Claim, ...]:
    """The second half: two flankers (xax) below one, on either side (ax, xa), at spacing S."""
    return tuple(
        Claim(f"more flankers crowd more than {one}",
              f"More flankers crowd more: two flankers (xax) lower accuracy more than one ({one}).",
              (Term(one, spacing), Term("xax", spacing, weight=-1)),
              measure=f"{one} accuracy minus xax accuracy at spacing {spacing:g}, mean over target eccentricities")
        for one in ("ax", "xa"))


def crowds_more(name: str, statement: str, model: str, other: str, spacing: float,
                target_ecc: float | None = None) -> Claim:
    """`model` crowds more than `other`: its drop a - xax at spacing S minus other's drop, at the
    target `target_ecc` (None: mean over target eccentricities)."""
    at = "mean over target eccentricities" if target_ecc is None else f"target {target_ecc:g}"
    return Claim(name, statement,
                 (Term("a", target_ecc=target_ecc), Term("xax", spacing, weight=-1, target_ecc=target_ecc),
                  Term("a", weight=-1, target_ecc=target_ecc, model=other),
                  Term("xax", spacing, target_ecc=target_ecc, model=other)),
                 measure=f"(a - xax at spacing {spacing:g}) of {model} minus the same of {other}, {at}",
                 models=(model,))


def second_claim(spacing: float) -> tuple[Claim, ...]:
    """Both halves of the paper's second claim (closer flankers, more flankers)."""
    return (closer_crowds_more(spacing), *more_flankers_crowd_more(spacing))


def planned(models: Iterable[tuple[str, TrainConfig]], grid: EvalGrid) -> dict[str, list[Condition]]:
    """Each model's planned conditions (what SweepSpec checks its claims against)."""
    return {name: grid.expand(cfg.stimulus)[0] for name, cfg in models}


def measurable(claims: Iterable[Claim], models: Sequence[tuple[str, TrainConfig]], grid: EvalGrid) -> tuple[Claim, ...]:
    """Each claim on the models (of those it names, or all) whose planned conditions measure it; a
    claim that no model can measure is left out (a 3-digit DCNN field has no xax at spacing 2S)."""
    plan = planned(models, grid)
    out = []
    for claim in claims:
        ok = []
        for m in claim.models or tuple(plan):
            try:
                check_measurable(replace(claim, models=(m,)), plan)
            except SpecError:
                continue
            ok.append(m)
        if ok:
            out.append(replace(claim, models=tuple(ok) if claim.models or len(ok) < len(plan) else ()))
    return tuple(out)


def positions(claim: Claim, plan: Mapping[str, Sequence[Condition]]) -> dict[str, list[float | None]]:
    """The target eccentricities at which the claim's terms are planned, per model it is tested on
    (before results.visibility keeps those where the effect can be seen)."""
    rows = planned_rows(plan)
    out = {}
    for model in claim.models or tuple(plan):
        pools = [_term_rows(rows[t.model or model], t) for t in claim.terms]
        out[model] = _x_values(claim, pools)
    return out


def plan_lines(spec: SweepSpec) -> list[str]:
    """What findings.md will test: each claim, its terms and the positions planned per model."""
    if not spec.claims:
        return []
    plan = {name: spec.conditions(name)[0] for name, _ in spec.models}
    lines = [f"[collect] findings.md tests {len(spec.claims)} claims, each only where its effect can be seen "
             f"(isolated target 95% above chance + {100 * MARGIN:g} pp, a gain's baseline 95% below "
             f"{100 * (1 - MARGIN):g}%; else not testable here):"]
    for claim in spec.claims:
        groups: dict[str, list[str]] = {}
        for model, xs in positions(claim, plan).items():
            fixed = dict.fromkeys(t.target_ecc for t in claim.terms if t.target_ecc is not None)
            where = ("targets " + ", ".join(f"{x:g}" for x in xs if x is not None)
                     + (f" (and fixed {', '.join(f'{x:g}' for x in fixed)})" if fixed and xs != [None] else "")
                     if xs != [None] else "fixed targets " + ", ".join(f"{x:g}" for x in fixed))
            groups.setdefault(where, []).append(model)
        on = "; ".join(f"{', '.join(ms)} at {where}" for where, ms in groups.items())
        lines.append(f"  {claim.name}: {claim.formula()}; on {on}")
    return lines
