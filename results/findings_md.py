"""findings.md: the findings table (results.findings) as markdown, each verdict worded for what it
speaks about (one network or the architecture) beside its family-wise verdict."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from .table import DIVERGED_DROP
from .visibility import MARGIN


def _pp(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:+.1f}"


def _p(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.2g}" if x >= 1e-4 else "<1e-4"


def _seed_list(seeds: object) -> list[str]:
    return [] if not isinstance(seeds, str) else [s for s in seeds.split(",") if s]


def _seeds_cell(seeds: str) -> str:
    got = _seed_list(seeds)
    return "-" if not got else f"1 (seed {got[0]})" if len(got) == 1 else f"{len(got)} ({', '.join(got)})"


def _verdict_cell(r: pd.Series) -> str:
    n = len(_seed_list(r["seeds"]))
    if r["verdict"] == "not testable here":
        return f"**not testable here**: {r['note']}"
    if n == 0:
        return f"**{r['verdict']}**"
    if n == 1:
        return f"**{r['verdict']}** for this network; seed variation not estimated: run --seeds 3"
    return f"**{r['verdict']}** for the architecture ({n} seeds)"


def markdown(df: pd.DataFrame, experiment: str = "", diverged: Sequence[str] = (), bouma: Sequence[str] = ()) -> str:
    """findings.md: one table of the measured effects, then each claim's statement and measure;
    first, the trainings that diverged (results.table.diverged), when there are any; last, the
    `bouma` section's lines (results.bouma_report.markdown)."""
    size = int(df["family_size"].max()) if len(df) and df["family_size"].notna().any() else 0
    lines = [f"# Findings{f': {experiment}' if experiment else ''}", "",
             "Each claim is a measured effect (accuracy difference, in percentage points) with its 95% "
             "interval. Verdict: supported (interval above 0), contradicted (below 0), inconclusive "
             "(contains 0). A claim is measured only at the target eccentricities where its effect can be seen "
             f"(every network's isolated target 95% above chance + {100 * MARGIN:g} pp; a baseline of a gain 95% "
             f"below {100 * (1 - MARGIN):g}%: results.visibility); "
             "where none is left it is **not testable here**, with the reason. Effects are paired: the same "
             "test images in every condition. With one seed a "
             "verdict is about that trained network (another seed may differ); with several, about the "
             "architecture, seeds and test images counted as random.", "",
             f"The family has {size} comparison(s) (claims x networks, each at 95%). The Holm-adjusted p "
             "keeps the chance of any false family-wise verdict under 5%: supported or contradicted when "
             "it is below 0.05.", ""]
    if diverged:
        lines += [f"**Diverged trainings** (final val/acc more than {100 * DIVERGED_DROP:g} points below the "
                  "run's best; evaluation uses the final weights):", "", *(f"- {d}" for d in diverged), ""]
    if df.empty:
        return "\n".join([*lines, "No claim could be tested (the sweep declares none, or nothing was evaluated).", "",
                          *bouma])
    lines += ["| claim | model | lr | effect (pp) | 95% interval (pp) | verdict | p | Holm p | family-wise | seeds "
              "| per-seed effects (pp) | images | method |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        interval = f"{_pp(r['ci_low'])} to {_pp(r['ci_high'])}"
        testable = r["verdict"] != "not testable here"
        method = r["method"] + (f" ({r['note']})" if r["note"] and testable else "")
        per_seed = ", ".join(_pp(float(v)) for v in str(r["seed_effects"]).split(",") if v) or "-"
        lines.append(f"| {r['claim']} | {r['model']} | {r['learning_rate']:g} | {_pp(r['effect'])} | {interval} "
                     f"| {_verdict_cell(r)} | {_p(r['p_value'])} | {_p(r['p_holm'])} | {r['family_verdict']} "
                     f"| {_seeds_cell(r['seeds'])} | {per_seed} | {r['n_images']} | {method} |")
    lines += ["", "## Claims", ""]
    for name, g in df.groupby("claim", sort=False):
        r = g.iloc[0]
        lines += [f"- **{name}**: {r['statement']}", f"  Effect: {r['measure']}; at target eccentricities "
                  f"{r['target_eccs'] or 'fixed'}.", ""]
    return "\n".join([*lines, *bouma])
