"""Statistics and findings: the summary over seeds, paired comparisons against values computed by
hand, and the findings report on fake experiments whose effects are known."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_experiment import FakeGrid, FakeModel, synthetic_accuracy, write_fake_experiment
from scipy import stats as sps

from results import findings, intervals, stats, table
from results.findings import Claim, Term
from sweeps import demo

Z = 1.959963984540054


def wilson(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return centre - half, centre + half


# ------------------------------------------------------------------ across seeds
def test_t_interval_by_hand() -> None:
    mean, lo, hi = stats.t_interval([0.80, 0.86, 0.83])
    sd = math.sqrt(((0.80 - 0.83) ** 2 + (0.86 - 0.83) ** 2 + 0) / 2)  # 0.03
    half = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, 2)
    assert (mean, lo, hi) == pytest.approx((0.83, 0.83 - half, 0.83 + half))
    assert math.isnan(stats.t_interval([0.8])[1]) and stats.t_interval([0.8])[0] == 0.8


def results_rows(accs: dict[int, tuple[int, int]], label: str = "a", state: dict[int, str] | None = None) -> list[dict]:
    rows = []
    for seed, (k, n) in accs.items():
        s = (state or {}).get(seed, "done")
        rows.append({"experiment": "e", "model": "m", "model_hash": f"h{seed}", "learning_rate": 0.1, "seed": seed,
                     "flanker_type": 0 if label == "a" else 2, "label": label, "target_ecc": 0.0,
                     "flanker_ecc": math.nan if label == "a" else 120.0, "spacing": math.nan if label == "a" else 120.0,
                     "flanker_dset": "MNIST", "n_images": n if s == "done" else None,
                     "n_correct": k if s == "done" else None, "accuracy": k / n if s == "done" else math.nan,
                     "state": s})
    return rows


def counts_interval_by_hand(p: list[float], n: int) -> tuple[float, float, float]:
    """The t interval over seeds widened by the shared test set's binomial variance, written out."""
    s = len(p)
    mean = sum(p) / s
    seed_var = sum((x - mean) ** 2 for x in p) / (s - 1) / s
    half = math.sqrt(sps.t.ppf(0.975, s - 1) ** 2 * seed_var + Z**2 * sum(x * (1 - x) / n for x in p) / s)
    return mean, mean - half, mean + half


def test_summary_table_mean_and_interval_over_seeds_sharing_one_test_set_by_hand() -> None:
    rows = results_rows({0: (80, 100), 1: (86, 100), 2: (83, 100)})
    rows += results_rows({0: (50, 100), 1: (60, 100), 2: (0, 100)}, label="xax", state={2: "failed"})
    rows += [{**r, "model_hash": "g", "learning_rate": 0.5} for r in results_rows({0: (80, 100)})]
    s = stats.summary_table(pd.DataFrame(rows))
    a, xax, one = s.iloc[0], s.iloc[1], s.iloc[2]
    assert (a["label"], a["seeds_done"], a["seeds"], a["n_images"], a["n_correct"]) == ("a", 3, "0,1,2", 300, 249)
    assert a["mean_accuracy"] == pytest.approx(0.83) and a["pooled_accuracy"] == pytest.approx(0.83)
    _, lo, hi = counts_interval_by_hand([0.80, 0.86, 0.83], 100)
    assert (a["ci_low"], a["ci_high"]) == pytest.approx((lo, hi)) and "3 seeds" in a["interval"]
    # Not the pooled Wilson of 300 images: the 3 seeds saw the same 100 images.
    assert hi - lo > 1.5 * (wilson(249, 300)[1] - wilson(249, 300)[0])
    # A failed seed is planned but not done: the mean is over the done ones.
    assert (xax["seeds_planned"], xax["seeds_done"], xax["n_images"]) == (3, 2, 200)
    assert xax["mean_accuracy"] == pytest.approx(0.55) and xax["sd_accuracy"] == pytest.approx(math.sqrt(0.005))
    _, lo, hi = counts_interval_by_hand([0.5, 0.6], 100)  # 2 seeds: t(1) = 12.7, cut to [0, 1]
    assert lo < 0 and hi > 1 and (xax["ci_low"], xax["ci_high"]) == (0.0, 1.0)
    # One seed: that network's Wilson interval, named as such.
    assert (one["ci_low"], one["ci_high"]) == pytest.approx(wilson(80, 100)) and "this network" in one["interval"]


def test_figure_table_draws_the_mean_and_the_interval_across_seeds() -> None:
    one = pd.DataFrame(results_rows({0: (80, 100)}))
    assert stats.figure_table(one) is one  # one seed: the table as it is (Wilson intervals)
    t = stats.figure_table(pd.DataFrame(results_rows({0: (80, 100), 1: (86, 100), 2: (83, 100)})))
    assert len(t) == 1 and t.iloc[0]["model_hash"] == "h0+h1+h2"
    assert (t.iloc[0]["accuracy"], t.iloc[0]["ci_low"], t.iloc[0]["ci_high"]) == \
        pytest.approx(counts_interval_by_hand([0.80, 0.86, 0.83], 100))


# ------------------------------------------------------------------ paired comparisons
def test_newcombe_paired_interval_by_hand() -> None:
    # 2x2 table of 50 images: both right 36, only A 12, only B 2, neither 0 (Newcombe 1998's example).
    a, b, c, d = 36, 12, 2, 0
    n = 50
    p1, p2 = 48 / 50, 38 / 50
    l1, u1 = wilson(48, 50)
    l2, u2 = wilson(38, 50)
    phi = (a * d - b * c) / math.sqrt((a + b) * (c + d) * (a + c) * (b + d))
    lo = (p1 - p2) - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    hi = (p1 - p2) + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    assert stats.newcombe_paired(a, b, c, d) == pytest.approx((0.2, lo, hi))
    assert (round(lo, 4), round(hi, 4)) == (0.0569, 0.3404)
    assert n == a + b + c + d


def test_exact_mcnemar_by_hand() -> None:
    # 12 vs 2 discordant images: p = 2 * P(X <= 2), X ~ Binomial(14, 1/2) = 2 * (1 + 14 + 91) / 2^14
    assert stats.mcnemar_exact(12, 2) == pytest.approx(2 * (1 + 14 + 91) / 2 ** 14)
    assert stats.mcnemar_exact(2, 12) == stats.mcnemar_exact(12, 2)
    assert stats.mcnemar_exact(0, 0) == 1.0


def test_paired_difference_one_seed_uses_the_2x2_table() -> None:
    a = np.array([1] * 36 + [1] * 12 + [0] * 2, dtype=bool)
    b = np.array([1] * 36 + [0] * 12 + [1] * 2, dtype=bool)
    c = stats.paired_difference(a, b)
    assert (c.a_only, c.b_only, c.n_images, c.n_seeds) == (12, 2, 50, 1)
    assert (c.difference, c.low, c.high) == pytest.approx(stats.newcombe_paired(36, 12, 2, 0))
    assert c.p_value == pytest.approx(stats.mcnemar_exact(12, 2)) and "McNemar" in c.method


def test_wilson_is_statsmodels_and_the_hand_formula() -> None:
    lo, hi = stats.wilson_interval([81, 0, 10], [263, 10, 10])
    assert (lo[0], hi[0]) == pytest.approx(wilson(81, 263)) and (lo[1], hi[2]) == (0.0, 1.0)
    assert (round(lo[0], 4), round(hi[0], 4)) == (0.2553, 0.3662)


def test_crossed_interval_by_hand() -> None:
    # Seeds x images, every component positive: seed means 3/4, 1/4; image means 1, 1/2, 1/2, 0.
    # MS_seeds = 4 (1/16 + 1/16) / 1 = 1/2, MS_images = 2 (1/4 + 0 + 0 + 1/4) / 3 = 1/3,
    # residuals +-1/4 -> MS_resid = 8/16 / 3 = 1/6. Var(mean) = (1/2 + 1/3 - 1/6) / 8 = 1/12: the
    # seeds' part MS_seeds / 8 = 1/16 on 1 df, the images' part (1/3 - 1/6) / 8 = 1/48 on 3 df.
    e = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=float)
    assert intervals.mean_squares(e) == pytest.approx((1 / 2, 1 / 3, 1 / 6))
    c = intervals.crossed_interval(e)
    half = math.sqrt(sps.t.ppf(0.975, 1) ** 2 / 16 + sps.t.ppf(0.975, 3) ** 2 / 48)
    assert (c.estimate, c.se, c.low, c.high) == pytest.approx((0.5, math.sqrt(1 / 12), 0.5 - half, 0.5 + half))
    # Its df is the one whose quantile gives that half width, and the p value uses it.
    assert sps.t.ppf(0.975, c.effective_df) * c.se == pytest.approx(half)
    assert c.p_value == pytest.approx(2 * sps.t.sf(0.5 / math.sqrt(1 / 12), c.effective_df))
    # No seed nor image effect (MS_seeds = MS_images = 0 < MS_resid = 2/3): both components are 0,
    # Var(mean) = MS_resid / (S n) = 1/12 on its 3 df.
    e = np.array([[1, 0, 1, 0], [0, 1, 0, 1]], dtype=float)
    c = intervals.crossed_interval(e)
    assert (c.se, c.effective_df, c.high) == pytest.approx((math.sqrt(1 / 12), 3.0,
                                                            0.5 + sps.t.ppf(0.975, 3) / math.sqrt(12)))
    # The same mean squares from an independent fit: statsmodels' two-way ANOVA of the long table.
    rng = np.random.default_rng(3)
    e = (rng.random((3, 40)) < 0.7).astype(float) - (rng.random((3, 40)) < 0.5)
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    long = pd.DataFrame({"y": e.ravel(), "seed": np.repeat(range(3), 40), "image": np.tile(range(40), 3)})
    aov = anova_lm(smf.ols("y ~ C(seed) + C(image)", long).fit())
    assert intervals.mean_squares(e) == pytest.approx(tuple(aov["mean_sq"]))
    # One seed: the one-sample t interval over images (scipy), this network only.
    one = intervals.crossed_interval(e[:1])
    assert (one.low, one.high) == pytest.approx(tuple(sps.ttest_1samp(e[0], 0).confidence_interval()))
    assert "this network" in one.method


def test_seed_counts_interval_by_hand() -> None:
    # Seeds' effects 0.10, 0.20, 0.15 with binomial variances 0.001, 0.002, 0.0015:
    # the seeds' part 0.0025 / 3 on 2 df, the test set's 0.0015 with the normal quantile.
    c = intervals.seed_counts_interval([0.1, 0.2, 0.15], [0.001, 0.002, 0.0015])
    half = math.sqrt(sps.t.ppf(0.975, 2) ** 2 * 0.0025 / 3 + Z**2 * 0.0015)
    assert (c.estimate, c.se, c.low, c.high) == pytest.approx((0.15, math.sqrt(0.0025 / 3 + 0.0015), 0.15 - half,
                                                               0.15 + half))
    one = intervals.seed_counts_interval([0.1], [0.001])  # one network: normal, said as such
    assert (one.low, one.high) == pytest.approx((0.1 - Z * math.sqrt(0.001), 0.1 + Z * math.sqrt(0.001)))
    assert "this network" in one.method


def test_holm_by_hand() -> None:
    # Sorted 0.01, 0.03, 0.04 -> 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04): 0.03, 0.06, 0.06.
    assert intervals.holm([0.01, 0.04, math.nan, 0.03]) == pytest.approx([0.03, 0.06, math.nan, 0.06], nan_ok=True)


def test_paired_difference_of_several_seeds_is_the_crossed_interval() -> None:
    rng = np.random.default_rng(1)
    base = rng.random((3, 2000))
    a, b = base < 0.8, base < 0.7
    c = stats.paired_difference(a, b)
    got = intervals.crossed_interval(a.astype(float) - b.astype(float))
    assert (c.difference, c.low, c.high, c.p_value) == pytest.approx((got.estimate, got.low, got.high, got.p_value))
    assert c.n_seeds == 3 and "crossed" in c.method
    with pytest.raises(ValueError, match="same shape"):
        stats.paired_difference(a, b[:2])


def load_bench():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "coverage.py"
    spec = importlib.util.spec_from_file_location("bench_coverage", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_coverage_of_a_small_seeded_simulation() -> None:
    """bench/coverage.py's model, 400 experiments per cell: the architecture's intervals from 3 and
    10 seeds cover its true effect whether seeds vary or not; one seed covers its network only.
    Measured with wrong methods in place of the crossed interval (same cells, worst of the four):
    no seed term 0.50, nested (t over the seeds' means) 0.75, images independent across seeds 0.44;
    the counts intervals without the shared test set's variance: 0.75 (findings), 0.64 (summary)."""
    bench = load_bench()
    rows = bench.run(400, 200, 7, seed_counts=(1, 3, 10), spreads=(0.0, 3.0))
    got = {(r["interval"], r["seeds"], r["spread"]): r for r in rows}
    for spread in (0.0, 3.0):
        for name in ("findings: crossed seeds x images", "findings: t over seeds + test set, counts only",
                     "summary.csv: accuracy over seeds"):
            for seeds in (3, 10):
                assert got[(name, seeds, spread)]["architecture"] >= 0.91, (name, seeds, spread)
        for name in ("findings: Newcombe, two conditions", "findings: t over images, other claims",
                     "summary.csv: Wilson"):
            assert got[(name, 1, spread)]["network"] >= 0.91, (name, spread)
    assert got[("findings: Newcombe, two conditions", 1, 3.0)]["architecture"] < 0.6


# ------------------------------------------------------------------ findings
GRID = FakeGrid(target_eccs=(0.0, 120.0, 240.0, 720.0), flanker_eccs=(0.0, 120.0, 240.0, 360.0, 600.0, 840.0))
MODEL = FakeModel("None", robustness=0.35)
# Far target 240: the fake's drop a - xax is 21 points larger there than at the centre. (At 720 its
# unflanked accuracy is near chance, so its drop is smaller than at the centre: -1.6 points.)
CLAIMS = demo.claims(demo.FigureSpec(spacings=(120, 240), center_target=0, far_target=240))
AT_720 = demo.claims(demo.FigureSpec(spacings=(120, 240), center_target=0, far_target=720))[1]


def known_effect(claim: Claim, xs: list[float]) -> float:
    """The claim's effect from the synthetic accuracies (what the fake experiment was drawn from)."""
    total = 0.0
    for x in xs:
        for t in claim.terms:
            te = t.target_ecc if t.target_ecc is not None else x
            fe = None if t.spacing is None else te - t.spacing if t.label == "xa" else te + t.spacing
            cond = {"target_ecc": te, "flanker_ecc": fe, "flanker_type": {"a": 0, "xa": 1, "ax": 1, "xax": 2}[t.label]}
            total += t.weight * synthetic_accuracy(cond, MODEL)
    return total / len(xs)


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)])
def test_findings_on_a_fake_experiment_with_known_effects(tmp_path: Path, seeds: tuple[int, ...]) -> None:
    fake = write_fake_experiment(tmp_path, grid=GRID, models=(MODEL,), learning_rates=(0.01,), n_images=1500,
                                 seeds=seeds, per_image=True, seed_spread=0.03)
    df = table.collect(fake.path)
    reverse = Claim("flankers help", "Two flankers raise accuracy (false here).", (Term("xax", 120.0), Term("a", weight=-1)))
    single = Claim("one pair", "a beats xax at 720.", (Term("a", target_ecc=720.0), Term("xax", 120.0, weight=-1,
                                                                                     target_ecc=720.0)))
    at_720 = Claim("robust at the centre, 720", AT_720.statement, AT_720.terms)
    paths = findings.write(fake.path, df, (*CLAIMS, reverse, single, at_720), "fake")
    out = pd.read_csv(fake.path / "findings.csv", dtype={"seeds": str, "target_eccs": str}).set_index("claim")
    assert [p.name for p in paths] == ["findings.md", "findings.csv"]

    crowd = out.loc["crowding"]
    assert crowd["target_eccs"] == "0,120,240,720" and crowd["seeds"] == ",".join(map(str, seeds))
    assert crowd["effect"] == pytest.approx(known_effect(CLAIMS[0], [0, 120, 240, 720]), abs=0.03)
    assert crowd["ci_low"] > 0 and crowd["verdict"] == "supported"
    robust = out.loc["robust at the centre"]
    assert robust["effect"] == pytest.approx(known_effect(CLAIMS[1], [0]), abs=0.04)
    assert robust["verdict"] == "supported"
    far = out.loc["robust at the centre, 720"]
    assert far["effect"] == pytest.approx(known_effect(AT_720, [0]), abs=0.04) and far["verdict"] == "inconclusive"
    # The fake has no inner/outer asymmetry (xa and ax are drawn from the same accuracy): the effect
    # is 0 up to noise and the interval says so.
    inner = out.loc["inner flanker worse"]
    assert known_effect(CLAIMS[2], [120, 240, 720]) == 0.0
    assert inner["target_eccs"] == "120,240,720" and inner["ci_low"] < 0 < inner["ci_high"]
    assert inner["verdict"] == "inconclusive"
    assert out.loc["flankers help", "verdict"] == "contradicted"
    assert out.loc["flankers help", "effect"] == pytest.approx(-crowd["effect"])
    one = out.loc["one pair"]
    if len(seeds) == 1:  # two conditions, one seed: Newcombe's interval and the exact McNemar p
        assert "McNemar" in one["method"] and one["p_value"] < 1e-6
    else:
        assert "crossed seeds x images over 3 seeds" in one["method"] and one["p_value"] < 0.01
    # Each seed's effect is its network's (the fake's seed effects make them differ).
    true = {(r["seed"], r["label"]): fake.accuracy[r["hash"]] for _, r in df.iterrows()
            if r["target_ecc"] == 720.0 and r["label"] in ("a", "xax") and (r["label"] == "a" or r["spacing"] == 120)}
    per_seed = [float(v) for v in str(one["seed_effects"]).split(",")]
    assert per_seed == pytest.approx([true[(s, "a")] - true[(s, "xax")] for s in seeds], abs=0.035)
    # The family: every finding, Holm-adjusted.
    assert set(out["family_size"]) == {len(out)} and (out["p_holm"] >= out["p_value"] - 1e-12).all()
    assert out.loc["crowding", "family_verdict"] == "supported" and out.loc["one pair", "family_verdict"] == "supported"
    assert out.loc["inner flanker worse", "family_verdict"] == "inconclusive"
    md = (fake.path / "findings.md").read_text()
    assert "| crowding | 11-1-1-1-1_total_pool_contrast_None | 0.01 |" in md and "**supported**" in md
    assert "**inconclusive**" in md and "**contradicted**" in md
    assert f"The family has {len(out)} comparison(s)" in md
    if len(seeds) == 1:
        assert set(out["scope"]) == {"this network"} and "| 1 (seed 0) |" in md
        assert "**supported** for this network; seed variation not estimated: run --seeds 3" in md
    else:
        assert set(out["scope"]) == {"architecture"} and "| 3 (0, 1, 2) |" in md
        assert "**supported** for the architecture (3 seeds)" in md


def counts_of(df: pd.DataFrame, seed: int, label: str, target: float, spacing: float | None = None) -> float:
    rows = df[(df["seed"] == seed) & (df["label"] == label) & (df["target_ecc"] == target)]
    rows = rows if spacing is None else rows[rows["spacing"] == spacing]
    assert len(rows) == 1
    return float(rows["accuracy"].iloc[0])


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)])
def test_findings_without_per_image_records_fall_back_to_counts(tmp_path: Path, seeds: tuple[int, ...]) -> None:
    fake = write_fake_experiment(tmp_path, grid=GRID, models=(MODEL,), learning_rates=(0.01,), n_images=1500,
                                 seeds=seeds, seed_spread=0.03)
    df = table.collect(fake.path)
    mixed = Claim("mixed", "a at x beats xax at the centre", (Term("a"), Term("xax", 120.0, weight=-1, target_ecc=0.0)))
    out = findings.findings(fake.path, df, (CLAIMS[0], mixed)).set_index("claim")
    row = out.loc["crowding"]
    assert "no per-image record" in row["method"] and row["verdict"] == "supported"
    assert row["effect"] == pytest.approx(known_effect(CLAIMS[0], [0, 120, 240, 720]), abs=0.03)
    # By hand: per seed, the mean over x of a - xax; its binomial variance sums (1/4)^2 p (1 - p) / n
    # over the 8 evaluations; several seeds: the t interval over seeds plus the shared test set's variance.
    xs, n = (0.0, 120.0, 240.0, 720.0), 1500
    values, variances = [], []
    for s in seeds:
        ps = [counts_of(df, s, "a", x) for x in xs] + [-counts_of(df, s, "xax", x, 120.0) for x in xs]
        values.append(sum(ps) / 4)
        variances.append(sum(abs(p) * (1 - abs(p)) / n for p in ps) / 16)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(counts_by_hand(values, variances))
    assert ("this network's counts" if len(seeds) == 1 else "3 seeds' counts") in row["method"]
    assert [float(v) for v in row["seed_effects"].split(",")] == pytest.approx(values)
    # A fixed-target term serves every x: its evaluation's variance counts once, with weight -1
    # (not 4 times with weight -1/4, which would be a quarter of it).
    values, variances = [], []
    for s in seeds:
        ps = [counts_of(df, s, "a", x) for x in xs]
        p0 = counts_of(df, s, "xax", 0.0, 120.0)
        values.append(sum(ps) / 4 - p0)
        variances.append(sum(p * (1 - p) / n for p in ps) / 16 + p0 * (1 - p0) / n)
    m = out.loc["mixed"]
    assert (m["effect"], m["ci_low"], m["ci_high"]) == pytest.approx((sum(values) / len(seeds),
                                                                      *counts_by_hand(values, variances)))


def counts_by_hand(values: list[float], variances: list[float]) -> tuple[float, float]:
    """One seed: the normal interval; several: sd^2 / S on S - 1 df plus the mean variance (normal)."""
    s, mean = len(values), sum(values) / len(values)
    if s == 1:
        return mean - Z * math.sqrt(variances[0]), mean + Z * math.sqrt(variances[0])
    seed_var = sum((v - mean) ** 2 for v in values) / (s - 1) / s
    half = math.sqrt(sps.t.ppf(0.975, s - 1) ** 2 * seed_var + Z**2 * sum(variances) / s)
    return mean - half, mean + half


def test_a_term_of_a_network_with_several_learning_rates_takes_the_claims_or_is_refused(tmp_path: Path) -> None:
    a, b = MODEL, FakeModel("None", pm="11-3-1-1-1", robustness=0.6)
    fake = write_fake_experiment(tmp_path, grid=GRID, models=(a, b), learning_rates=(0.01,), n_images=400)
    df = table.collect(fake.path)
    # Selection `all` for b: b evaluated again at lr 0.5 (here: nothing right), listed first.
    again = df[df["model"] == b.name].assign(learning_rate=0.5, n_correct=0, accuracy=0.0)
    both = pd.concat([again, df], ignore_index=True)
    claim = Claim("a beats b", "a at the centre beats b", (Term("a", target_ecc=0.0),
                                                           Term("a", target_ecc=0.0, weight=-1, model=b.name)),
                  models=(a.name,))
    row = findings.findings(fake.path, both, (claim,)).iloc[0]
    acc = {m: float(df[(df["model"] == m) & (df["label"] == "a") & (df["target_ecc"] == 0)]["accuracy"].iloc[0])
           for m in (a.name, b.name)}
    assert row["effect"] == pytest.approx(acc[a.name] - acc[b.name])  # b at the claim's 0.01, not the first row
    moved = both.assign(learning_rate=np.where(both["model"] == a.name, 0.2, both["learning_rate"]))
    row = findings.findings(fake.path, moved, (claim,)).iloc[0]
    assert row["verdict"] == "inconclusive" and math.isnan(row["effect"])
    assert f"model {b.name!r} was evaluated at learning rates 0.01, 0.5" in row["note"] and "0.2" in row["note"]


def test_a_claim_without_data_is_not_testable_with_a_note(tmp_path: Path) -> None:
    fake = write_fake_experiment(tmp_path, grid=GRID, models=(MODEL,), learning_rates=(0.01,), n_images=100,
                                 per_image=True)
    far = Claim("far", "at 9000", (Term("a", target_ecc=9000.0), Term("xax", 120.0, weight=-1, target_ecc=9000.0)))
    row = findings.findings(fake.path, table.collect(fake.path), (far,)).iloc[0]
    assert row["verdict"] == "not testable here" and row["note"].startswith("too few conditions: no seed")
    with pytest.raises(ValueError, match="a spacing is needed"):
        Term("xax")


def test_the_readme_example_of_replicates_and_claims_runs(capsys: pytest.CaptureFixture) -> None:
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "Claim(" in b)
    exec(compile(block, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == \
        ("9 ['crowding', 'robust at the centre', 'inner flanker worse', 'closer flankers crowd more', "
         "'more flankers crowd more than ax', 'more flankers crowd more than xa', 'crowding at twice the spacing']")


def test_launch_report_writes_summary_and_findings(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from results import plots
    from sweeps import launch

    drawn: list[pd.DataFrame] = []
    monkeypatch.setattr(plots, "draw_all", lambda exp, t, *a, **k: drawn.append(t) or [])  # minutes to draw
    fake = write_fake_experiment(tmp_path, name="demo", grid=GRID, models=(MODEL,), learning_rates=(0.01,),
                                 n_images=300, seeds=(0, 1), per_image=True)
    assert launch.main(["demo", "--report", "--out", str(tmp_path)]) == 0
    assert "findings.md" in capsys.readouterr().out
    found = pd.read_csv(fake.path / "findings.csv").set_index("claim")
    assert list(found.index) == [c.name for c in demo.sweep().claims]  # the demo's claims, declared in sweeps/demo.py
    assert list(found.index)[:3] == ["crowding", "robust at the centre", "inner flanker worse"]
    assert found.loc["crowding", "verdict"] == "supported"
    summary = pd.read_parquet(fake.path / "summary.parquet")
    assert set(summary["seeds_done"]) == {2} and len(summary) == len(fake.plan.eval) // 2
    # The figures get the mean over the two seeds per condition, not one row per seed.
    assert len(drawn[0]) == len(summary) and drawn[0]["model_hash"].str.contains("+", regex=False).all()


def test_the_interval_across_seeds_stays_within_0_and_1() -> None:
    s = stats.summary_table(pd.DataFrame(results_rows({0: (98, 100), 1: (100, 100), 2: (90, 100)})))
    _, lo, hi = counts_interval_by_hand([0.98, 1.0, 0.9], 100)
    assert hi > 1 and s.iloc[0]["ci_high"] == 1.0 and s.iloc[0]["ci_low"] == pytest.approx(lo)


@pytest.mark.slow
def test_the_figures_of_several_seeds_draw_the_mean_and_the_interval_across_seeds(tmp_path: Path) -> None:
    from results import plots

    fake = write_fake_experiment(tmp_path, grid=GRID, models=(MODEL,), learning_rates=(0.01,), n_images=200,
                                 seeds=(0, 1, 2), per_image=True)
    df = table.collect(fake.path)
    drawn = stats.figure_table(df)
    fig = plots.spacing_figure(drawn, MODEL.name, 120.0)
    line = next(ln for ln in fig.axes[0].lines if ln.get_gid() == "a")
    means = df[df["label"] == "a"].groupby("target_ecc")["accuracy"].mean()
    assert np.allclose(line.get_ydata(), means.to_numpy())  # the mean over the 3 seeds, not one seed
    paths = plots.draw_all(fake.path, drawn, table.selection_table(fake.path), formats=("png",))
    assert {p.stem for p in paths} >= {"spacing_120", "target_0", "target_720", "heatmap", "training"}
