"""Letters A-J rendered from the fonts matplotlib ships: a flanker set that needs nothing downloaded.

notMNIST (the paper's dissimilar flankers) is letters A-J in many fonts, but it must be fetched and
converted by hand. This set draws the same ten letters from the TrueType fonts inside the installed
matplotlib (DejaVu Sans / Serif / Mono, STIX, Computer Modern; with their bold, oblique and italic
files where they exist), with seeded per-glyph jitter:

* glyph i is letter `LETTERS[i % 10]` (balanced classes), in a font drawn from `FONT_FILES`;
* its ink is scaled so that its longer side is INK_SIDE x U(1 - SIZE_JITTER, 1 + SIZE_JITTER),
  centred on its centre of mass in a 28 x 28 frame (as MNIST normalises its digits), then shifted
  by an integer offset of at most OFFSET_JITTER pixels each way.

Ink height matches the targets the way the original did it: MNIST digits fill a 20 px box of their
28 px frame, so at `flanker_height` 120 a digit's ink is ~86 px; notMNIST letters fill their whole
frame, so the original drew them at flanker_height 85. These letters fill 20 of 28 px like the
digits, so they show the same ~86 px ink at the same `flanker_height` as MNIST flankers, and
one grid (the same overlap rule) serves both flanker sets.

Rendering is deterministic (same seed, same pixels, no network). Each split is built once into
`<data_dir>/letters/` (file lock, atomic rename) with a sample sheet beside it; the file name
carries the generator version and a hash of the font files, so other fonts build another file.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image, ImageDraw, ImageFont

from core.atomic import atomic_write
from core.cli import check_choice
from core.identity import bytes_digest

from .config import SPLITS

logger = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"  # as notMNIST
FRAME = 28  # MNIST's frame
INK_SIDE = 20  # MNIST's digits are normalised to a 20 x 20 box
SIZE_JITTER = 0.1  # ink side uniform in [18, 22] px
OFFSET_JITTER = 1  # pixels, each axis
RENDER_SIZE = 96  # font size of the first, large rendering (downscaled, antialiased)
VERSION = 1
SPLIT_SIZES = {"train": 10000, "validation": 1000, "test": 2000}
SPLIT_SEEDS = {"train": 1001, "validation": 1002, "test": 1003}
# Regular, bold, oblique/italic files of the families matplotlib ships (mpl-data/fonts/ttf).
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmti10.ttf", "cmtt10.ttf",
)


def font_dir() -> Path:
    import matplotlib  # here, not at module level: every launch imports this module, few draw letters

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.lru_cache(maxsize=1)
def font_paths() -> tuple[Path, ...]:
    """The font files that exist in this matplotlib (all of FONT_FILES in the versions we know)."""
    found = tuple(font_dir() / f for f in FONT_FILES if (font_dir() / f).is_file())
    if not found:
        raise FileNotFoundError(f"none of the fonts {', '.join(FONT_FILES[:3])}, ... is in {font_dir()}; "
                                "the letters flankers need matplotlib's bundled fonts")
    return found


@functools.lru_cache(maxsize=1)
def fonts_fingerprint() -> str:
    """Hash of the font files (name and bytes of each) and the versions of the code that draws with them."""
    versions = f"v{VERSION}:{Image.__version__}:{ImageFont.core.freetype2_version}".encode()
    fonts = [part for p in font_paths() for part in (p.name.encode(), p.read_bytes())]
    return bytes_digest(versions, *fonts, algorithm="md5")[:10]


@functools.lru_cache(maxsize=len(FONT_FILES))
def _font(path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, RENDER_SIZE)


def _ink(letter: str, font: ImageFont.FreeTypeFont) -> np.ndarray:
    """The letter drawn large, cropped to its ink: uint8 (h, w), light on dark."""
    side = RENDER_SIZE * 2
    im = Image.new("L", (side, side), 0)
    ImageDraw.Draw(im).text((side // 4, side // 4), letter, font=font, fill=255)
    a = np.asarray(im)
    rows, cols = np.flatnonzero(a.max(1)), np.flatnonzero(a.max(0))
    return a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def render_glyph(letter: str, font_path: str | os.PathLike, scale: float, offset: tuple[int, int]) -> np.ndarray:
    """One uint8 (28, 28) glyph: ink longer side INK_SIDE * scale, centre of mass at the frame's
    centre plus `offset` (dy, dx)."""
    ink = _ink(letter, _font(str(font_path)))
    h, w = ink.shape
    k = INK_SIDE * scale / max(h, w)
    nh, nw = max(1, round(h * k)), max(1, round(w * k))
    small = np.asarray(Image.fromarray(ink).resize((nw, nh), Image.Resampling.LANCZOS), dtype=np.float64)
    mass = small.sum()
    cy = (small.sum(1) @ np.arange(nh)) / mass if mass else nh / 2
    cx = (small.sum(0) @ np.arange(nw)) / mass if mass else nw / 2
    top = round(FRAME / 2 - 0.5 - cy) + offset[0]
    left = round(FRAME / 2 - 0.5 - cx) + offset[1]
    top, left = min(max(top, 0), FRAME - nh), min(max(left, 0), FRAME - nw)  # keep all the ink
    out = np.zeros((FRAME, FRAME), np.uint8)
    out[top:top + nh, left:left + nw] = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    return out


def render_letters(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n glyphs, uint8 (n, 28, 28), and their letter indices (n,) int64: glyph i is LETTERS[i % 10]
    in a font, size and offset drawn from `np.random.default_rng(seed)`."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    paths = font_paths()
    rng = np.random.default_rng(seed)
    font_idx = rng.integers(len(paths), size=n)
    scales = rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER, size=n)
    offsets = rng.integers(-OFFSET_JITTER, OFFSET_JITTER + 1, size=(n, 2))
    labels = np.arange(n, dtype=np.int64) % len(LETTERS)
    images = np.empty((n, FRAME, FRAME), np.uint8)
    for i in range(n):
        images[i] = render_glyph(LETTERS[labels[i]], paths[font_idx[i]], float(scales[i]),
                                 (int(offsets[i, 0]), int(offsets[i, 1])))
    return images, labels


def sample_sheet(images: np.ndarray, path: str | os.PathLike, columns: int = 20, rows: int = 5,
                 zoom: int = 2) -> Path:
    """A PNG grid of the first columns x rows glyphs, each zoomed `zoom` times, written atomically."""
    shown = images[:columns * rows]
    sheet = np.zeros((rows * (FRAME + 2), columns * (FRAME + 2)), np.uint8)
    for i, g in enumerate(shown):
        r, c = divmod(i, columns)
        sheet[r * (FRAME + 2) + 1:r * (FRAME + 2) + 1 + FRAME, c * (FRAME + 2) + 1:c * (FRAME + 2) + 1 + FRAME] = g
    im = Image.fromarray(sheet).resize((sheet.shape[1] * zoom, sheet.shape[0] * zoom), Image.Resampling.NEAREST)
    return atomic_write(path, lambda f: im.save(f, format="PNG"))


def cache_path(folder: str | os.PathLike, split: str) -> Path:
    check_choice("split", split, SPLITS)
    return Path(folder) / f"letters-v{VERSION}-{fonts_fingerprint()}-{split}.npy"


def letter_images(split: str, folder: str | os.PathLike) -> np.ndarray:
    """The split's glyphs, uint8 (N, 28, 28), read-only; built once into `folder` (with a sample
    sheet `<file>.png`) under a file lock, then loaded."""
    path = cache_path(folder, split)
    return _load(str(path), split)


@functools.lru_cache(maxsize=8)
def _load(path_str: str, split: str) -> np.ndarray:
    path = Path(path_str)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if not path.is_file():  # checked again inside the lock: someone else may have built it
                logger.info("rendering %d %s letters into %s", SPLIT_SIZES[split], split, path)
                images, _ = render_letters(SPLIT_SIZES[split], SPLIT_SEEDS[split])
                sample_sheet(images, path.with_suffix(".png"))
                atomic_write(path, lambda f: np.save(f, images))
    try:
        images = np.load(path)
    except (OSError, ValueError) as e:
        raise OSError(f"{path} is unreadable ({e}); delete it and it is rendered again") from e
    n = SPLIT_SIZES[split]
    if images.dtype != np.uint8 or images.shape != (n, FRAME, FRAME):
        raise OSError(f"{path} holds {images.dtype} {images.shape}, expected uint8 ({n}, {FRAME}, {FRAME}); "
                      "delete it and it is rendered again")
    images.flags.writeable = False
    return images
