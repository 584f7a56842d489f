"""The claims that the paper's other sweeps declare (pooling, DCNN vs the eccentricity model,
flanker similarity, flanker training), measured on fake experiments whose effects are known."""

from __future__ import annotations

import pandas as pd
import pytest
from fake_experiment import FakeGrid, FakeModel, write_fake_experiment

from results import findings, table
from sweeps import dcnn, flanker_training, pooling, similarity

GRID = FakeGrid(target_eccs=(0.0, 120.0, 240.0), flanker_eccs=(0.0, 120.0, 240.0, 360.0))


def measured(tmp_path, models: dict[str, float], claims) -> pd.DataFrame:
    """findings of `claims` on a fake experiment with one model per sweep model name, each crowding
    as much as its robustness says (0: flankers bring accuracy to chance, 1: they do nothing)."""
    fakes = [FakeModel(pm=f"11-{i + 1}-1-1-1", robustness=r) for i, r in enumerate(models.values())]
    fake = write_fake_experiment(tmp_path, grid=GRID, models=fakes, learning_rates=(0.01,), n_images=1500,
                                 per_image=True)
    df = table.collect(fake.path)
    df["model"] = df["model"].map({f.name: name for f, name in zip(fakes, models, strict=True)})
    return findings.findings(fake.path, df, claims).set_index("claim")


@pytest.mark.parametrize(("early", "late", "verdict"), [(0.1, 0.8, "supported"), (0.8, 0.1, "contradicted")])
def test_pooling_claims_follow_which_model_crowds_more(tmp_path, early: float, late: float, verdict: str) -> None:
    claims = pooling.claims(120, pooling.PMS)
    out = measured(tmp_path, {"pm_11-1-1-1-1": early, "pm_11-7-5-3-1": early, "pm_11-11-11-11-1": late}, claims)
    assert list(out.index) == ["early pooling crowds more", "progressive pooling crowds more"]
    assert set(out["verdict"]) == {verdict}
    assert list(out["model"]) == ["pm_11-1-1-1-1", "pm_11-7-5-3-1"]  # each claim on its own model only
    assert (out["effect"] > 0).all() == (verdict == "supported")


def test_dcnn_claims_compare_the_drop_at_the_centre(tmp_path) -> None:
    names = {"ecc_11-1-1-1-1": 0.95, "dcnn_no_total_pool": 0.0, "dcnn_progressive": 0.0, "dcnn_at_end": 0.95}
    out = measured(tmp_path, names, dcnn.claims(120))
    assert out.loc["dcnn_no_total_pool crowds more than ecc_11-1-1-1-1 at the centre", "verdict"] == "supported"
    assert out.loc["dcnn_progressive crowds more than ecc_11-1-1-1-1 at the centre", "verdict"] == "supported"
    # Equally robust: the true effect is 0; measured, it is within noise (1500 images, 4 terms).
    same = out.loc["dcnn_at_end crowds more than ecc_11-1-1-1-1 at the centre"]
    assert abs(same["effect"]) < 0.05
    assert set(out["target_eccs"].astype(str)) == {""}  # every term at target 0: no running eccentricity


def test_similarity_and_flanker_training_claims_name_their_sets_models_and_spacings() -> None:
    sim = similarity.claims(120, ("MNIST", "letters", "notMNIST"))
    assert [c.name for c in sim] == ["MNIST flankers crowd more than letters", "MNIST flankers crowd more than notMNIST"]
    assert [(t.flanker_dset, t.weight) for t in sim[0].terms] == [("letters", 1.0), ("MNIST", -1.0)]
    ft = {c.name: c for c in flanker_training.claims(120)}
    xax = ft["dcnn_at_end_train_xax: no robustness to a spacing (240)"]
    assert xax.models == ("dcnn_at_end_train_xax",)
    assert [(t.label, t.spacing, t.weight, t.model) for t in xax.terms] == [
        ("xax", 120, 1.0, None), ("xax", 120, -1.0, "dcnn_at_end_train_a"), ("xax", 240, -1.0, None),
        ("xax", 240, 1.0, "dcnn_at_end_train_a")]
    assert len(ft) == 3 * len(flanker_training.FAMILIES)
    models = {name for name, _ in flanker_training.sweep(False).models}
    for claim in ft.values():  # every model a claim names is one the sweep trains
        assert set(claim.models) | {t.model for t in claim.terms if t.model} <= models
    for sweep in (dcnn, pooling, similarity, flanker_training):
        for quick in (False, True):
            spec = sweep.sweep(quick)
            trained = {name for name, _ in spec.models}
            assert spec.claims, spec.name
            for claim in spec.claims:
                assert set(claim.models) <= trained and {t.model for t in claim.terms if t.model} <= trained
