"""The claims that the paper's other sweeps declare (pooling, DCNN vs the eccentricity model,
flanker similarity, flanker training), measured on fake experiments whose effects are known."""

from __future__ import annotations

import pandas as pd
import pytest
from fake_experiment import FakeGrid, FakeModel, set_result, write_fake_experiment

from core.atomic import read_json
from core.runs import write_result
from results import findings, table
from results.figspec import FigureSpec
from sweeps import claims, dcnn, demo, flanker_training, pooling, similarity

GRID = FakeGrid(target_eccs=(0.0, 120.0, 240.0), flanker_eccs=(0.0, 120.0, 240.0, 360.0))


def measured(tmp_path, models: dict[str, float | tuple[float, float]], claims, name: str = "fake") -> pd.DataFrame:
    """findings of `claims` on a fake experiment with one model per sweep model name, each crowding
    as much as its robustness says (0: flankers bring accuracy to chance, 1: they do nothing), or
    (robustness, isolated accuracy at every eccentricity)."""
    spec = {k: v if isinstance(v, tuple) else (v, None) for k, v in models.items()}
    fakes = [FakeModel(pm=f"11-{i + 1}-1-1-1", robustness=r, isolated=iso) for i, (r, iso) in enumerate(spec.values())]
    fake = write_fake_experiment(tmp_path, name=name, grid=GRID, models=fakes, learning_rates=(0.01,), n_images=1500,
                                 per_image=True)
    df = table.collect(fake.path)
    df["model"] = df["model"].map({f.name: name for f, name in zip(fakes, models, strict=True)})
    findings.write(fake.path, df, claims, name)
    return findings.findings(fake.path, df, claims).set_index("claim")


@pytest.mark.parametrize(("early", "late", "verdict"), [(0.1, 0.8, "supported"), (0.8, 0.1, "contradicted")])
def test_pooling_claims_follow_which_model_crowds_more(tmp_path, early: float, late: float, verdict: str) -> None:
    claims = pooling.claims(120, pooling.PMS)
    out = measured(tmp_path, {"pm_11-1-1-1-1": early, "pm_11-7-5-3-1": early, "pm_11-11-11-11-1": late}, claims)
    assert list(out.index) == ["early pooling crowds more", "progressive pooling crowds more"]
    assert set(out["verdict"]) == {verdict}
    assert list(out["model"]) == ["pm_11-1-1-1-1", "pm_11-7-5-3-1"]  # each claim on its own model only
    assert (out["effect"] > 0).all() == (verdict == "supported")


def test_dcnn_claims_per_field_and_contrast_and_the_poolings(tmp_path) -> None:
    """Claim 1 per DCNN field and per contrast normalisation of the eccentricity model (issue 21):
    here the 3-digit DCNNs crowd (robustness 0) and the 8-digit ones do not, the progressive DCNN
    crowds at every field, and both eccentricity models are robust."""
    spec = dcnn.sweep(False)
    names = {name: 0.95 for name, _ in spec.models}
    names.update({dcnn.dcnn_name(p, 3): 0.0 for p in ("at_end", "no_total_pool")})
    names.update({dcnn.dcnn_name("progressive", f): 0.0 for f in dcnn.FIELDS})
    out = measured(tmp_path, names, spec.claims)
    first = out[out.index.str.endswith("at the centre")]
    assert len(first) == len(dcnn.FIELDS) * 3 * len(dcnn.CONTRASTS) == 18
    for ecc in ("ecc_11-1-1-1-1", "ecc_11-1-1-1-1_areafactor"):
        for p in ("at_end", "no_total_pool", "progressive"):
            assert out.loc[f"dcnn_{p}_field3 crowds more than {ecc} at the centre", "verdict"] == "supported"
        # Equally robust: the true effect is 0; measured, it is within noise (1500 images, 4 terms).
        same = out.loc[f"dcnn_at_end_field8 crowds more than {ecc} at the centre"]
        assert abs(same["effect"]) < 0.05 and same["model"] == "dcnn_at_end_field8"
        assert str(same["target_eccs"]) in ("", "nan")  # every term at target 0: no running eccentricity
    # Premature pooling: the three DCNNs of one field against each other.
    for field in dcnn.FIELDS:
        for late in ("at_end", "no_total_pool"):
            row = out.loc[f"dcnn_progressive_field{field} crowds more than dcnn_{late}_field{field}"]
            assert row["model"] == f"dcnn_progressive_field{field}"
            assert row["verdict"] == ("supported" if field > 3 else "inconclusive")  # field 3: both crowd
    # The second claim's halves, on the models whose field has their conditions (the 3-digit DCNN
    # field has no xax at spacing 240).
    closer = spec.claims[[c.name for c in spec.claims].index("closer flankers crowd more")]
    assert "ecc_11-1-1-1-1" in closer.models and not any(m.endswith("_field3") for m in closer.models)
    assert set(out.loc[["more flankers crowd more than ax"], "model"]) == set(names)


def test_both_halves_of_the_second_claim_on_every_network_with_the_conditions(tmp_path) -> None:
    for sweep in (demo, dcnn, pooling):
        for quick in (False, True):
            names = {c.name for c in sweep.sweep(quick).claims}
            assert {"closer flankers crowd more", "more flankers crowd more than ax",
                    "more flankers crowd more than xa"} <= names, (sweep.__name__, quick)
    pool = {c.name: c for c in pooling.sweep(False).claims}
    assert pool["closer flankers crowd more"].models == ()  # every pooling model has xax at 120 and 240
    out = measured(tmp_path, {"net": 0.2}, claims.second_claim(120))
    assert set(out["verdict"]) == {"supported"}  # the fake crowds more when closer and with two flankers
    assert out.loc["closer flankers crowd more", "target_eccs"] == "0,120,240"


def test_every_position_at_chance_is_not_testable(tmp_path) -> None:
    demo_claims = demo.claims(FigureSpec(spacings=(120, 240), center_target=0, far_target=240))
    out = measured(tmp_path, {"net": (0.2, 0.2)}, demo_claims)
    assert set(out["verdict"]) == {findings.NOT_TESTABLE} and set(out["family_verdict"]) == {findings.NOT_TESTABLE}
    assert out["note"].str.startswith("chance: the isolated target of net at target").all()
    assert out["effect"].isna().all() and out["p_holm"].isna().all() and set(out["family_size"]) == {0}
    md = (tmp_path / "fake" / "findings.md").read_text()
    assert "**not testable here**: chance: the isolated target of net at target 0 reads" in md
    assert "inconclusive**" not in md


def test_a_gain_over_a_baseline_at_ceiling_is_not_testable(tmp_path) -> None:
    names = {"dcnn_at_end_train_a": (1.0, 0.995), "dcnn_at_end_train_ax": 0.3, "dcnn_at_end_train_xa": 0.3,
             "dcnn_at_end_train_xax": 0.3}
    out = measured(tmp_path, names, flanker_training.claims(120, ("dcnn_at_end",)))
    gains = out[out.index.str.contains("no robustness")]
    assert len(gains) == 3 and set(gains["verdict"]) == {findings.NOT_TESTABLE}
    assert gains["note"].str.startswith("ceiling: xax at spacing 120 of dcnn_at_end_train_a").sum() == 1
    assert gains["note"].str.contains("ceiling: ").all()
    # Still crowded on every unseen configuration: a - unseen of the flanker-trained model.
    crowded = out[out.index.str.contains("still crowded")]
    assert len(crowded) == 9 and set(crowded["verdict"]) == {"supported"}
    assert crowded.loc["dcnn_at_end_train_xax: still crowded on xax at 240", "model"] == "dcnn_at_end_train_xax"
    # train_a crowded (not at ceiling): the gain claims are measured.
    out = measured(tmp_path, {**names, "dcnn_at_end_train_a": 0.0}, flanker_training.claims(120, ("dcnn_at_end",)))
    assert set(out.loc[gains.index, "verdict"]) <= {"supported", "contradicted", "inconclusive"}


def test_flanker_training_unseen_configurations() -> None:
    assert flanker_training.unseen("xax") == (("xax", 2), ("ax", 1), ("xa", 1))
    assert flanker_training.unseen("ax") == (("xa", 1), ("ax", 2), ("xax", 1))
    assert flanker_training.unseen("xa") == (("ax", 1), ("xa", 2), ("xax", 1))


def test_similarity_and_flanker_training_claims_name_their_sets_models_and_spacings() -> None:
    sim = similarity.claims(120, ("MNIST", "letters", "notMNIST"))
    assert [c.name for c in sim] == ["MNIST flankers crowd more than letters", "MNIST flankers crowd more than notMNIST"]
    assert [(t.flanker_dset, t.weight) for t in sim[0].terms] == [("letters", 1.0), ("MNIST", -1.0)]
    ft = {c.name: c for c in flanker_training.claims(120)}
    xax = ft["dcnn_at_end_train_xax: no robustness to a spacing (240)"]
    assert xax.models == ("dcnn_at_end_train_xax",)
    assert [(t.label, t.spacing, t.weight, t.model, t.baseline) for t in xax.terms] == [
        ("xax", 120, 1.0, None, False), ("xax", 120, -1.0, "dcnn_at_end_train_a", True),
        ("xax", 240, -1.0, None, False), ("xax", 240, 1.0, "dcnn_at_end_train_a", True)]
    assert len(ft) == 12 * len(flanker_training.FAMILIES)
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


def test_positions_at_chance_are_left_out_and_named(tmp_path) -> None:
    fake = write_fake_experiment(tmp_path, grid=GRID, models=(FakeModel(robustness=0.2),), learning_rates=(0.01,),
                                 n_images=1500)  # counts only: set_result keeps them consistent
    set_result(fake.eval_dir(fake.find_eval(FakeModel().name, 0, 240.0).hash), 300, 1500)  # a at 240: chance
    row = findings.findings(fake.path, table.collect(fake.path), (claims.crowding(120),)).iloc[0]
    assert row["verdict"] == "supported" and row["target_eccs"] == "0,120"
    assert row["note"].startswith("left out target(s) 240: chance: the isolated target of "
                                  f"{FakeModel().name} at target 240 reads 0.200")


def test_a_diverged_training_is_flagged_in_selection_csv_and_findings_md(tmp_path) -> None:
    fake = write_fake_experiment(tmp_path, grid=GRID, models=(FakeModel(robustness=0.2),), learning_rates=(0.01, 0.1),
                                 n_images=300)
    assert not table.selection_table(fake.path)["diverged"].any()  # the fake's curves only rise
    run = next(e for e in fake.plan.train if e.learning_rate == 0.01)  # the selected one (val/acc 0.968)
    result = read_json(fake.path / run.dir / "result.json")
    write_result(fake.path / run.dir, {**result, "final": {**result["final"], "val/acc": 0.19}})  # as issue 21's lr 0.1
    sel = table.selection_table(fake.path).set_index("hash")
    assert list(sel.index[sel["diverged"]]) == [run.hash]
    assert sel.loc[run.hash, "best_val/acc"] == pytest.approx(0.968, abs=1e-3)
    findings.write(fake.path, table.collect(fake.path), (claims.crowding(120),), "fake")
    md = (fake.path / "findings.md").read_text()
    assert "**Diverged trainings**" in md
    assert f"- {FakeModel().name} lr 0.01 seed 0: final val/acc 0.190, best 0.968 (selected: its findings use" in md
