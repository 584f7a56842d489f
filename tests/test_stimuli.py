"""The stimulus generator equals the original algorithm (tests/original_stimuli.py)."""

from __future__ import annotations

import math

import numpy as np
import original_stimuli as original
import pytest
import torch

from ecc.resample import pil_bilinear_matrix
from ecc.stimuli import (
    InvalidPlacement,
    StimulusConfig,
    canvas,
    check_placement,
    normalize,
    render,
    sample_random_shifts,
)


def digits(rng: np.random.Generator, n: int, h: int = 28, w: int = 28) -> np.ndarray:
    x = rng.integers(0, 256, (n, h, w)).astype(np.uint8)
    x[rng.random(x.shape) < 0.6] = 0  # sparse, like digits on black
    return x


def random_case(rng: np.random.Generator):
    """A random geometry and a valid placement for it."""
    while True:
        field = int(rng.choice([120, 240, 480, 960, 1920]))
        crop = int(min(field, rng.choice([12, 20, 30, 60])))
        dh = int(min(field // 2, rng.choice([20, 45, 60, 85, 120])))
        fh = int(min(field // 2, rng.choice([dh, 45, 85])))
        cfg = StimulusConfig(field_size=field, digit_height=dh, flanker_height=fh, crop_size=crop,
                             num_scales=int(rng.choice([1, 2, 3, 6, 11])),
                             fovea=str(rng.choice(["exponential", "linear"])),
                             chevron=float(rng.choice([math.inf, 1, 2, 3])))
        ft = int(rng.integers(0, 3))
        for _ in range(200):
            te = float(rng.uniform(-field / 2, field / 2))
            fe = te + float(rng.choice([-1, 1]) * rng.uniform((dh + fh) / 2, field / 2))
            if rng.random() < 0.5:  # grid-like integer positions too
                te, fe = float(round(te)), float(round(fe))
            if original.valid(field_size=field, digit_height=dh, flanker_height=fh, target_ecc=te,
                              flanker_type=ft, flanker_ecc=fe):
                return cfg, te, fe, ft


def reference(cfg: StimulusConfig, target, te, flanker=None, fe=None, ft=0, background=None):
    return original.build(target, field_size=cfg.field_size, digit_height=cfg.digit_height,
                          flanker_height=cfg.flanker_height, crop_size=cfg.crop_size, num_scales=cfg.num_scales,
                          fovea=cfg.fovea, chevron=cfg.chevron, target_ecc=te, flanker=flanker, flanker_ecc=fe,
                          flanker_type=ft, background=background)


def test_pil_matrix_reproduces_pillow():
    from PIL import Image

    rng = np.random.default_rng(0)
    for h, w, oh, ow in [(28, 28, 120, 120), (1920, 1920, 60, 60), (85, 85, 60, 60), (28, 20, 120, 85)]:
        x = digits(rng, 1, h, w)[0]
        want = np.asarray(Image.fromarray(x).resize((ow, oh), Image.BILINEAR))
        one = float(1 << 22)
        tmp = np.floor((x.astype(np.float64) @ pil_bilinear_matrix(w, ow).T + one / 2) / one)
        got = np.floor((pil_bilinear_matrix(h, oh) @ tmp + one / 2) / one)
        np.testing.assert_array_equal(got, want)


def test_render_equals_original_on_random_cases():
    rng = np.random.default_rng(2017)
    cases = 0
    for _ in range(80):
        cfg, te, fe, ft = random_case(rng)
        shape = (28, 28) if rng.random() < 0.8 else (28, 20)  # non-square images are squared with padding
        t, f = digits(rng, 3, *shape), digits(rng, 3)
        ours = render(t, cfg, target_ecc=te, flankers=f, flanker_ecc=fe, flanker_type=ft)
        for k in range(3):
            _, want = reference(cfg, t[k], te, f[k], fe, ft)
            assert np.abs(ours[k].astype(int) - want).max() == 0, (cfg, te, fe, ft)
        cases += 1
    assert cases == 80


def test_render_demo_geometry_all_flanker_types_and_chevron():
    rng = np.random.default_rng(3)
    t, f = digits(rng, 2), digits(rng, 2)
    for chevron in (math.inf, 2):
        cfg = StimulusConfig(chevron=chevron)
        assert cfg.crop_sides == (60, 85, 120, 169, 240, 339, 481, 679, 961, 1357, 1920)
        for ft, te, fe in [(0, 0.0, None), (1, 240.0, 120.0), (1, 240.0, 360.0), (2, 720.0, 840.0)]:
            ours = render(t, cfg, target_ecc=te, flankers=f, flanker_ecc=fe, flanker_type=ft)
            for k in range(2):
                _, want = reference(cfg, t[k], te, f[k], fe, ft)
                np.testing.assert_array_equal(ours[k], want)


def test_render_per_image_eccentricities_and_backgrounds():
    rng = np.random.default_rng(4)
    cfg = StimulusConfig(field_size=480, digit_height=60, flanker_height=45, crop_size=30, num_scales=5)
    t, f = digits(rng, 4), digits(rng, 4)
    te = np.array([-150.0, -20.5, 33.25, 170.0])
    fe = te + np.array([60.0, -70.0, 55.0, -100.0])
    backgrounds = [rng.integers(0, 256, (37, 53)).astype(np.uint8) for _ in range(4)]
    ours = render(t, cfg, target_ecc=te, flankers=f, flanker_ecc=fe, flanker_type=1, backgrounds=backgrounds)
    for k in range(4):
        field_img, want = reference(cfg, t[k], te[k], f[k], fe[k], 1, backgrounds[k])
        np.testing.assert_array_equal(ours[k], want)
        got_canvas = canvas(t[k], cfg, target_ecc=te[k], flanker=f[k], flanker_ecc=fe[k], flanker_type=1,
                            background=backgrounds[k])
        np.testing.assert_array_equal(got_canvas, field_img)


def test_float32_is_within_one_gray_level():
    rng = np.random.default_rng(5)
    cfg = StimulusConfig()
    t, f = digits(rng, 8), digits(rng, 8)
    exact = render(t, cfg, target_ecc=120, flankers=f, flanker_ecc=360, flanker_type=2)
    fast = render(t, cfg, target_ecc=120, flankers=f, flanker_ecc=360, flanker_type=2, dtype=torch.float32)
    assert np.abs(exact.astype(int) - fast).max() <= 1


@pytest.mark.parametrize("te, ft, fe, words", [
    (0.0, 1, 60.0, ["overlaps", "120", "60"]),          # closer than (120 + 120) / 2
    (900.5, 0, None, ["target", "900.5", "leaves"]),  # box beyond the right edge after truncation
    (-901.0, 0, None, ["target", "-901", "-900..900"]),
    (780.0, 1, 900.0, ["flanker", "900", "leaves"]),   # 900 fits, its box [1800, 1920) ... edge case below
    (0.0, 2, 900.0, ["flanker", "-900", "leaves"]) ,
])
def test_invalid_placements_raise_with_the_numbers(te, ft, fe, words):
    cfg = StimulusConfig()
    ok = original.valid(field_size=1920, digit_height=120, flanker_height=120, target_ecc=te, flanker_type=ft,
                        flanker_ecc=fe)
    if ok:  # the original accepts it, so must we
        check_placement(cfg, te, ft, fe)
        return
    with pytest.raises(InvalidPlacement) as err:
        check_placement(cfg, te, ft, fe)
    for w in words:
        assert w in str(err.value)
    with pytest.raises(InvalidPlacement):  # render refuses before any work
        render(np.zeros((1, 28, 28), np.uint8), cfg, target_ecc=te, flankers=np.zeros((1, 28, 28), np.uint8),
               flanker_ecc=fe, flanker_type=ft)


def test_validity_matches_the_original_on_a_grid():
    cfg = StimulusConfig()
    for ft in (0, 1, 2):
        for te in range(-960, 961, 30):
            for fe in range(-960, 961, 60):
                want = original.valid(field_size=1920, digit_height=120, flanker_height=120, target_ecc=te,
                                      flanker_type=ft, flanker_ecc=fe)
                try:
                    check_placement(cfg, float(te), ft, float(fe))
                    got = True
                except InvalidPlacement:
                    got = False
                assert got == want, (te, fe, ft)


def test_config_refuses_bad_values_naming_them():
    with pytest.raises(ValueError, match="crop_size must be a positive integer, got 0"):
        StimulusConfig(crop_size=0)
    with pytest.raises(ValueError, match="fovea 'log' is not one of exponential, linear"):
        StimulusConfig(fovea="log")
    with pytest.raises(ValueError, match="chevron must be >= 1"):
        StimulusConfig(chevron=0)
    with pytest.raises(ValueError, match="digit_height=200 exceeds field_size=100"):
        StimulusConfig(field_size=100, digit_height=200, crop_size=10)


def test_normalize_matches_the_original_loader():
    rng = np.random.default_rng(6)
    for fovea in ("exponential", "linear"):
        cfg = StimulusConfig(field_size=480, digit_height=60, crop_size=30, num_scales=5, fovea=fovea)
        crops = render(digits(rng, 3), cfg, target_ecc=np.array([0.0, 100.0, -200.0]))
        crops[1, 0] = 0  # an all-black crop stays 0 (then -0.5)
        got = normalize(crops, "areafactor", cfg)
        for k in range(3):
            want = original.areafactor(crops[k], field_size=480, crop_size=30, num_scales=5, fovea=fovea) - 0.5
            np.testing.assert_allclose(got[k], want, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(normalize(crops, "None", cfg), crops.astype(np.float32) * (1 / 255) - 0.5)
        assert got.dtype == np.float32
        as_torch = normalize(torch.as_tensor(crops), "areafactor", cfg)
        assert isinstance(as_torch, torch.Tensor)
        np.testing.assert_allclose(as_torch.numpy(), got)
    demo = StimulusConfig()
    assert demo.area_factor(0) == pytest.approx(1024.0)  # (1920 / 60) ** 2
    assert demo.area_factor(10) == 1.0
    with pytest.raises(ValueError, match="contrast_norm 'max' is not one of None, areafactor"):
        normalize(crops, "max", cfg)


def test_random_shifts_are_valid_and_deterministic():
    cfg = StimulusConfig()
    for ft, spacing in [(0, 0.0), (1, 120.0), (1, -240.0), (2, 360.0)]:
        a = sample_random_shifts(cfg, 500, np.random.default_rng(7), ft, spacing)
        b = sample_random_shifts(cfg, 500, np.random.default_rng(7), ft, spacing)
        np.testing.assert_array_equal(a[0], b[0])
        assert np.all(np.abs(a[0]) <= cfg.max_target_ecc)
        for te, fe in zip(*a, strict=True):
            check_placement(cfg, float(te), ft, None if ft == 0 else float(fe))
    spread = sample_random_shifts(cfg, 5000, np.random.default_rng(8))[0]
    assert spread.min() < -850 and spread.max() > 850  # uniform over the field


def test_shared_and_per_image_positions_in_one_batch():
    """A target at one place for the whole batch (the shared-weights path) with flankers that move
    per image (the batched path), for every flanker type."""
    rng = np.random.default_rng(9)
    cfg = StimulusConfig(field_size=960, digit_height=60, flanker_height=60, crop_size=30, num_scales=6, chevron=3)
    t, f = digits(rng, 5), digits(rng, 5)
    te = 90.0
    fe = np.array([-60.0, 30.0, 150.0, 200.5, 300.0])
    for ft in (1, 2):
        ours = render(t, cfg, target_ecc=te, flankers=f, flanker_ecc=fe, flanker_type=ft)
        for k in range(5):
            if not original.valid(field_size=960, digit_height=60, flanker_height=60, target_ecc=te,
                                  flanker_type=ft, flanker_ecc=fe[k]):
                continue
            _, want = reference(cfg, t[k], te, f[k], fe[k], ft)
            np.testing.assert_array_equal(ours[k], want)
