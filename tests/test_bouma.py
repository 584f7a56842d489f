"""Bouma's law per network (results.bouma): critical spacings and the Bouma factor recovered from
per-image hits drawn from a known psychometric curve, and the reasons given instead of a fit (flat
growth, too few spacings, an isolated target at chance, no crowding within the tested spacings)."""

from __future__ import annotations

import math
from pathlib import Path

import fake_experiment
import numpy as np
import pandas as pd
import pytest
from fake_experiment import FakeGrid, FakeModel, write_fake_experiment

from results import bouma, bouma_report, findings, table

CHANCE, ISOLATED, STEEPNESS = 0.2, 0.9, 3.0
TARGETS = (0.0, 100.0, 200.0, 300.0, 400.0)
SPACINGS = tuple(float(s) for s in range(120, 601, 40))  # the stimulus' closest spacing is 120 px


def truth(target_ecc: float, factor: float = 0.4, intercept: float = 150.0) -> float:
    return factor * target_ecc + intercept


def records(seeds: int = 3, n: int = 600, factor: float = 0.4, isolated: float = ISOLATED,
            spacings: dict[float, tuple[float, ...]] | None = None, rng_seed: int = 1) -> bouma.Records:
    """Per-image Bernoulli hits (seeds x images) from the known curve at every target eccentricity."""
    rng = np.random.default_rng(rng_seed)
    iso, flanked = {}, {}
    for t in TARGETS:
        iso[t] = rng.random((seeds, n)) < isolated
        flanked[t] = {s: rng.random((seeds, n)) < bouma.psychometric(s, truth(t, factor), STEEPNESS, CHANCE, isolated)
                      for s in (spacings or {}).get(t, SPACINGS)}
    return bouma.Records(CHANCE, iso, flanked)


@pytest.mark.parametrize("seeds", [1, 3])
def test_a_known_bouma_factor_and_critical_spacings_are_recovered_within_their_intervals(seeds: int) -> None:
    fit = bouma.fit_network("net", 0.01, records(seeds), list(range(seeds)), n_boot=400)
    assert [p.target_ecc for p in fit.points] == list(TARGETS) and all(p.fitted for p in fit.points)
    for p in fit.points:
        assert p.low < truth(p.target_ecc) < p.high, p
        assert p.high - p.low < 40  # the interval says something: ~4% of the images' noise
    assert fit.factor_low < 0.4 < fit.factor_high and fit.factor_high - fit.factor_low < 0.15
    assert fit.intercept_low < 150 < fit.intercept_high
    assert fit.verdict.startswith(f"crowds like people: factor {fit.factor:.2f} (")
    assert fit.scope == ("this network" if seeds == 1 else "architecture")


def test_a_factor_outside_the_human_band_is_named() -> None:
    fit = bouma.fit_network("net", 0.01, records(factor=0.9), [0, 1, 2], n_boot=200)
    assert fit.factor_low < 0.9 < fit.factor_high
    assert fit.verdict.startswith("Bouma-like growth, factor") and "outside the human range (0.3 to 0.6)" in fit.verdict


def test_a_flat_critical_spacing_is_no_bouma_like_growth() -> None:
    fit = bouma.fit_network("flat", 0.01, records(factor=0.0), [0, 1, 2], n_boot=300)
    assert all(p.fitted and p.low < 150 < p.high for p in fit.points)
    assert fit.factor_low < 0 < fit.factor_high
    assert fit.verdict.startswith("no Bouma-like growth: factor")


def test_verdicts_against_the_human_band() -> None:
    assert bouma.verdict(0.42, 0.35, 0.50) == "crowds like people: factor 0.42 (0.35 to 0.50)"
    assert bouma.verdict(0.05, -0.01, 0.12) == "no Bouma-like growth: factor 0.05 (-0.01 to 0.12)"
    assert bouma.verdict(-0.3, -0.4, -0.2).startswith("no Bouma-like growth: critical spacing shrinks")
    assert bouma.verdict(0.1, 0.05, 0.2).startswith("Bouma-like growth, factor 0.10 (0.05 to 0.20) outside")


def test_too_few_spacings_are_reported_instead_of_fitted() -> None:
    few = {96.0: (120.0, 200.0, 280.0)}
    rec = records(1, spacings={t: SPACINGS[::5] for t in TARGETS} | few)  # 3 spacings everywhere
    rec = bouma.Records(rec.chance, {**rec.isolated, 96.0: rec.isolated[0.0]},
                        {**rec.flanked, 96.0: {s: rec.flanked[0.0][120.0] for s in few[96.0]}})
    fit = bouma.fit_network("net", 0.01, rec, [0], n_boot=50)
    at_96 = next(p for p in fit.points if p.target_ecc == 96.0)
    assert at_96.reason == "too few spacings (3) at target 96: a fit needs 4" and math.isnan(at_96.critical)
    assert not any(p.fitted for p in fit.points) and math.isnan(fit.factor)
    assert fit.verdict == "too few eccentricities with a critical spacing (0): a Bouma line needs 3"
    assert "too few spacings" in bouma_report.figure_reason([fit])


def test_an_isolated_target_at_chance_and_no_crowding_are_reported() -> None:
    at_chance = bouma.fit_network("net", 0.01, records(1, isolated=CHANCE + 0.02), [0], n_boot=50)
    assert all(p.reason.startswith("chance: the isolated target of net at target") for p in at_chance.points)
    rng = np.random.default_rng(3)
    uncrowded = bouma.Records(CHANCE, {0.0: rng.random((1, 600)) < 0.9},
                              {0.0: {s: rng.random((1, 600)) < 0.9 for s in SPACINGS}})
    (point,) = bouma.fit_network("net", 0.01, uncrowded, [0], n_boot=50).points
    assert point.reason.startswith("no crowding within the tested spacings at target 0")


def test_the_replicates_solve_the_same_least_squares_as_curve_fit() -> None:
    rng = np.random.default_rng(5)
    s = np.array(SPACINGS)
    acc = bouma.psychometric(s, 250.0, 2.5, CHANCE, ISOLATED) + rng.normal(0, 0.02, (20, len(s)))
    iso = ISOLATED + rng.normal(0, 0.01, 20)
    together = bouma.fit_replicates(s, acc, CHANCE, iso, (250.0, 2.5))
    one_by_one = [bouma.fit_critical(s, acc[b], CHANCE, float(iso[b]), (250.0, 2.5))[0] for b in range(20)]
    assert together == pytest.approx(one_by_one, rel=1e-4)


def test_an_experiment_folder_gets_its_bouma_section_csv_and_figure(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The path collect runs: a fake experiment whose xax accuracies follow the known curve, per-image
    records from the fake's probit model (image difficulty shared by conditions and seeds)."""
    def known(cond: dict, model: FakeModel, chance: float = CHANCE) -> float:
        if cond["flanker_type"] == 0:
            return ISOLATED
        t = float(cond["target_ecc"])
        return float(bouma.psychometric(abs(float(cond["flanker_ecc"]) - t), truth(t), STEEPNESS, chance, ISOLATED))

    monkeypatch.setattr(fake_experiment, "synthetic_accuracy", known)
    grid = FakeGrid(target_eccs=(0.0, 150.0, 300.0), flanker_eccs=tuple(float(f) for f in range(0, 841, 60)),
                    flanker_types=(0, 2))
    fake = write_fake_experiment(tmp_path, grid=grid, models=(FakeModel("None"),), learning_rates=(0.01,),
                                 n_images=800, seeds=(0, 1), per_image=True)
    df = table.collect(fake.path)
    found = bouma.fits(fake.path, df, n_boot=300)
    (fit,) = found
    assert fit.seeds == (0, 1) and fit.n_images == 800 and all(p.fitted for p in fit.points)
    for p in fit.points:
        assert p.low < truth(p.target_ecc) < p.high, p
    assert fit.factor_low < 0.4 < fit.factor_high
    findings.write(fake.path, df, (), "fake", found)
    md = (fake.path / "findings.md").read_text()
    assert "## Bouma's law per network" in md
    assert f"| {fit.model} | 0.01 | **{fit.verdict}** |" in md and "| 2 (architecture) |" in md
    (csv,) = bouma_report.save(fake.path, found)
    rows = pd.read_csv(csv)
    assert list(rows["target_ecc"]) == [0.0, 150.0, 300.0] and rows["critical"].notna().all()
    fig = bouma_report.figure(found)
    gids = {a.get_gid() for a in fig.axes[0].get_children()}
    assert {fit.model, f"{fit.model} line", "human"} <= gids


def test_the_docs_example_runs_as_written(capsys: pytest.CaptureFixture) -> None:
    import ast
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "bouma.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    exec(compile(block, "docs/bouma.md", "exec"), {})
    verdict, criticals = capsys.readouterr().out.splitlines()
    assert verdict.startswith("crowds like people: factor 0.4")
    assert np.allclose(ast.literal_eval(criticals), [150, 210, 270], atol=15)
