"""What `imas predict` writes: index masks as palette PNGs (the classes' colours: VOC's unless a
custom class list names its own, so any viewer shows them as VOC's SegmentationClass), overlays of
mask on image with a legend of the classes shown, and the staging folder that makes a run's outputs
appear together or not at all."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from imas.data.layout import Classes

# Overlay: mask colour over the image at this weight.
ALPHA = 0.5
SWATCH, LINE, PAD = 10, 14, 4


def legend_entries(labels: np.ndarray, classes: Classes) -> list[dict]:
    """Index, name and colour of every class present in `labels`, in index order."""
    present = np.unique(labels)
    n = len(classes.names)
    if present.size and (present.min() < 0 or present.max() >= n):
        raise ValueError(f"labels hold classes {present.tolist()}, outside 0..{n - 1}")
    return [
        {"class": int(i), "name": classes.names[int(i)],
         "colour": "#{:02x}{:02x}{:02x}".format(*classes.colours[int(i)])}
        for i in present
    ]  # fmt: skip


def write_mask(path: Path, labels: np.ndarray, classes: Classes) -> None:
    """`labels` `[H, W]` as a palette PNG: pixel values are class indices, colours the
    classes'; the class names ride along as a `Classes` text chunk (JSON)."""
    if labels.ndim != 2:
        raise ValueError(f"labels must be [H, W], got shape {labels.shape}")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(classes.palette())
    info = PngInfo()
    info.add_text("Classes", json.dumps(classes.names))
    image.save(path, format="PNG", pnginfo=info)


def overlay(image: np.ndarray, labels: np.ndarray, classes: Classes) -> Image.Image:
    """The image `[H, W, 3]` with each pixel's class colour blended in at `ALPHA`, and beside it
    a legend: a swatch and the name of each class present."""
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
    palette = np.asarray(classes.palette(), dtype=np.float32).reshape(256, 3)
    blended = (1 - ALPHA) * image.astype(np.float32) + ALPHA * palette[labels]
    picture = Image.fromarray(np.rint(blended).astype(np.uint8), mode="RGB")
    entries = legend_entries(labels, classes)
    font = ImageFont.load_default()
    text_width = max(int(font.getbbox(e["name"])[2]) for e in entries)
    height, width = labels.shape
    canvas = Image.new(
        "RGB",
        (width + 3 * PAD + SWATCH + text_width, max(height, 2 * PAD + LINE * len(entries))),
        "white",
    )
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, entry in enumerate(entries):
        x, y = width + PAD, PAD + row * LINE
        box = [x, y, x + SWATCH - 1, y + SWATCH - 1]
        draw.rectangle(box, fill=entry["colour"], outline="black")
        draw.text((x + SWATCH + PAD, y - 1), entry["name"], fill="black", font=font)
    return canvas


def write_overlay(path: Path, image: np.ndarray, labels: np.ndarray, classes: Classes) -> None:
    """`overlay` as a PNG whose `Legend` text chunk lists the legend's classes (JSON)."""
    info = PngInfo()
    info.add_text("Legend", json.dumps(legend_entries(labels, classes)))
    overlay(image, labels, classes).save(path, format="PNG", pnginfo=info)


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A hidden folder inside `out` to write one run's outputs into. When the block succeeds,
    each file replaces its namesake in `out` (a rename: never half-written); when it fails,
    nothing in `out` has changed, and an `out` the run created is removed again."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".predict-", dir=out))
    try:
        yield stage
        for file in sorted(p for p in stage.rglob("*") if p.is_file()):
            target = out / file.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.rmtree(stage, ignore_errors=True)
