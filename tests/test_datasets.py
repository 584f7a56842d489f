"""Datasets are built once under a lock, verified on load, rebuilt when damaged, deterministic."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp

import numpy as np
import pytest

from ecc import datasets
from ecc.datasets import DatasetSpec, dataset_key, ensure, generate, load
from ecc.stimuli import InvalidPlacement, StimulusConfig, check_placement

SMALL = StimulusConfig(field_size=240, digit_height=40, flanker_height=40, crop_size=16, num_scales=4)


def spec(**kw) -> DatasetSpec:
    base = dict(split="validation", stimulus=SMALL, random_shifts=True, limit=300, validation_size=1000)
    return DatasetSpec(**{**base, **kw})


def _ensure_in_child(args):
    """Runs in a separate process: ensure the dataset, report whether this process built it."""
    s, root = args
    built = []
    original = datasets._build

    def counting(*a, **k):
        built.append(True)
        return original(*a, **k)

    datasets._build = counting
    folder = ensure(s, root, progress=False)
    data = load(s, root, progress=False)
    digest = hashlib.sha256(np.ascontiguousarray(data.images).tobytes()).hexdigest()
    return bool(built), str(folder), digest


def test_four_processes_build_once_and_read_identical_arrays(tmp_path):
    s = spec(limit=600)
    with mp.get_context("spawn").Pool(4) as pool:
        out = pool.map(_ensure_in_child, [(s, str(tmp_path))] * 4)
    assert sum(built for built, _, _ in out) == 1
    assert len({folder for _, folder, _ in out}) == 1
    assert len({d for _, _, d in out}) == 1
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary folder left behind


def test_stored_equals_generated_and_is_deterministic(tmp_path):
    s = spec()
    stored = load(s, tmp_path, progress=False)
    fresh = generate(s)
    np.testing.assert_array_equal(stored.images, fresh.images)
    np.testing.assert_array_equal(stored.labels, fresh.labels)
    np.testing.assert_array_equal(stored.eccs, fresh.eccs)
    assert stored.images.dtype == np.uint8 and stored.images.shape == (300, 4, 16, 16)
    assert isinstance(stored.images, np.memmap)
    assert set(np.unique(stored.labels)) <= set(range(5))
    other_seed = generate(spec(seed=1))
    assert not np.array_equal(other_seed.eccs, fresh.eccs)
    # random shifts cover the field and stay valid
    assert np.abs(fresh.eccs[:, 0]).max() <= SMALL.max_target_ecc
    meta = json.loads((tmp_path / dataset_key(s) / "meta.json").read_text())
    assert meta["n"] == 300 and meta["shape"] == [300, 4, 16, 16]
    assert (tmp_path / dataset_key(s) / "samples" / "0_crop_3.png").exists()
    assert list((tmp_path / dataset_key(s) / "samples").glob("0_canvas_*.png"))


def test_flankers_at_fixed_spacing_fit_the_field():
    s = spec(flanker_type=2, target_ecc=0.0, flanker_ecc=50.0)
    data = generate(s)
    assert np.allclose(data.eccs[:, 1] - data.eccs[:, 0], 50.0)
    for te, fe in data.eccs[:50]:
        check_placement(SMALL, float(te), 2, float(fe))
    with pytest.raises(ValueError, match="overlap"):
        spec(flanker_type=1, target_ecc=0.0, flanker_ecc=10.0)


def test_truncated_or_edited_dataset_is_rebuilt_never_used(tmp_path):
    s = spec()
    folder = ensure(s, tmp_path, progress=False)
    good = np.array(load(s, tmp_path, progress=False).images)
    images = folder / "images.npy"
    with open(images, "r+b") as f:  # truncate: a half-copied file
        f.truncate(images.stat().st_size // 2)
    np.testing.assert_array_equal(load(s, tmp_path, progress=False).images, good)
    raw = bytearray(images.read_bytes())  # same size, different bytes
    raw[-1] ^= 0xFF
    images.write_bytes(bytes(raw))
    np.testing.assert_array_equal(load(s, tmp_path, progress=False).images, good)
    (folder / "meta.json").write_text("{not json")
    np.testing.assert_array_equal(load(s, tmp_path, progress=False).images, good)


def test_key_depends_on_exactly_the_data():
    assert dataset_key(spec()) == dataset_key(spec())
    assert dataset_key(spec()) != dataset_key(spec(seed=3))
    assert dataset_key(spec()) != dataset_key(spec(split="train"))
    assert dataset_key(spec()) != dataset_key(spec(stimulus=StimulusConfig(field_size=240, digit_height=40,
                                                                          flanker_height=40, crop_size=16,
                                                                          num_scales=4, chevron=2)))
    # unused placement fields do not split identical data
    fixed = dict(random_shifts=False, target_ecc=30.0)
    assert dataset_key(spec(**fixed, seed=0, flanker_ecc=5.0)) == dataset_key(spec(**fixed, seed=9, flanker_ecc=7.0))


def test_invalid_spec_is_refused_before_any_work(tmp_path):
    with pytest.raises(InvalidPlacement, match="leaves the 240 px field"):
        spec(random_shifts=False, target_ecc=500.0)
    with pytest.raises(ValueError, match="split 'dev' is not one of train, validation, test"):
        spec(split="dev")
    with pytest.raises(ValueError, match="limit must be >= 0"):
        spec(limit=-1)
    assert not list(tmp_path.iterdir())
