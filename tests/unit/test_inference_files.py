"""pipeline/inference/: what `imas predict` reads (inputs, checkpoint weights) and writes (palette
masks, overlays with a legend, staged outputs), and the MLflow model's pinned requirements."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imas.predict import Classes
from pipeline.inference.inputs import InputError, expand, read_list_file
from pipeline.inference.mlflow_model import imported_distributions, pinned_requirements
from pipeline.inference.outputs import (
    PAD,
    SWATCH,
    legend_entries,
    overlay,
    staged,
    write_mask,
    write_overlay,
)
from pipeline.inference.sources import SourceError, pick_weights

NAMES = ["background", "aeroplane", "bicycle", "bird"]
CLASSES = Classes.voc(NAMES)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_inputs_expand_folders_lists_and_files_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for name in ("b.jpg", "a.PNG", "notes.txt", "c.webp"):
        touch(folder / name)
    (folder / "sub").mkdir()  # not recursive
    touch(tmp_path / "more/d.png")
    listing = tmp_path / "more/list.txt"
    listing.write_text("# two images\nd.png\n\n" + str(tmp_path / "e.jpg") + "\nmissing.png\n")
    single = touch(tmp_path / "f.bmp")
    items = expand([folder, listing, single])
    assert [(i.id, i.path) for i in items] == [
        ("a", folder / "a.PNG"),
        ("b", folder / "b.jpg"),
        ("c", folder / "c.webp"),
        ("d", tmp_path / "more/d.png"),
        ("e", tmp_path / "e.jpg"),  # absolute: as written
        ("missing", tmp_path / "more/missing.png"),  # kept: reading it fails by path
        ("f", single),
    ]
    assert read_list_file(listing)[0] == tmp_path / "more/d.png"


def test_inputs_that_cannot_be_used_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"INPUT {tmp_path / 'nope'} does not exist"):
        expand([tmp_path / "nope"])
    empty = tmp_path / "empty"
    touch(empty / "readme.md")
    with pytest.raises(InputError, match=f"folder {empty} holds no image"):
        expand([empty])
    listing = tmp_path / "list.lst"
    listing.write_text("# nothing\n")
    with pytest.raises(InputError, match=f"list file {listing} names no image"):
        expand([listing])
    first, second = touch(tmp_path / "x/a.jpg"), touch(tmp_path / "y/a.png")
    with pytest.raises(InputError, match=f"{first} and {second} would both write a.png"):
        expand([first, second])
    with pytest.raises(InputError, match="no INPUT given"):
        expand([])


def test_a_mask_is_a_palette_png_of_class_indices(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 1], [3, 2, 0]])
    write_mask(tmp_path / "m.png", labels, CLASSES)
    image = Image.open(tmp_path / "m.png")
    assert image.mode == "P" and image.size == (3, 2)
    assert np.array_equal(np.asarray(image), labels)
    palette = image.getpalette()
    assert palette is not None
    # VOC's colours: background black, aeroplane (128, 0, 0), bicycle (0, 128, 0), bird
    # (128, 128, 0); an RGB view of the mask shows them.
    assert palette[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]
    assert np.array_equal(np.asarray(image.convert("RGB"))[1, 0], [128, 128, 0])
    assert json.loads(image.text["Classes"]) == NAMES


def test_the_overlay_blends_the_class_colour_and_its_legend_lists_the_classes(
    tmp_path: Path,
) -> None:
    image = np.full((40, 30, 3), (100, 50, 200), dtype=np.uint8)
    labels = np.zeros((40, 30), dtype=np.int64)
    labels[5:15, 10:20] = 3
    write_overlay(tmp_path / "o.png", image, labels, CLASSES)
    picture = Image.open(tmp_path / "o.png")
    assert json.loads(picture.text["Legend"]) == [
        {"class": 0, "name": "background", "colour": "#000000"},
        {"class": 3, "name": "bird", "colour": "#808000"},
    ]
    pixels = np.asarray(picture.convert("RGB"))
    # Half image, half class colour: background (0, 0, 0), bird (128, 128, 0).
    assert pixels[0, 0].tolist() == [50, 25, 100]
    assert pixels[10, 15].tolist() == [114, 89, 100]
    assert picture.height == 40 and picture.width > 30  # the legend beside the image
    # One swatch per class, in the class's colour, then its name in black beside it.
    for row, rgb in enumerate([(0, 0, 0), (128, 128, 0)]):
        y = PAD + row * 14 + SWATCH // 2
        assert pixels[y, 30 + PAD + SWATCH // 2].tolist() == list(rgb)
        text = pixels[PAD + row * 14 : PAD + row * 14 + SWATCH, 30 + 2 * PAD + SWATCH :]
        assert (text.sum(axis=2) < 200).any()  # dark text pixels
    assert np.array_equal(np.asarray(overlay(image, labels, CLASSES)), pixels)


def test_a_custom_class_list_colours_masks_overlays_and_legends(tmp_path: Path) -> None:
    classes = Classes(["sky", "blob"], [(10, 20, 30), (200, 100, 0)])
    labels = np.array([[0, 1]])
    write_mask(tmp_path / "m.png", labels, classes)
    mask = Image.open(tmp_path / "m.png")
    assert np.array_equal(np.asarray(mask), labels)
    assert np.asarray(mask.convert("RGB")).tolist() == [[[10, 20, 30], [200, 100, 0]]]
    image = np.full((1, 2, 3), 100, dtype=np.uint8)
    # (100 + 10) / 2 = 55, (100 + 20) / 2 = 60, (100 + 30) / 2 = 65; (100 + 200) / 2 = 150, ...
    pixels = np.asarray(overlay(image, labels, classes))[:1, :2]
    assert pixels.tolist() == [[[55, 60, 65], [150, 100, 50]]]
    assert [e["colour"] for e in legend_entries(labels, classes)] == ["#0a141e", "#c86400"]


def test_the_canvas_grows_to_hold_the_legend_of_a_small_image() -> None:
    labels = np.arange(4).reshape(1, 4)
    picture = overlay(np.zeros((1, 4, 3), dtype=np.uint8), labels, CLASSES)
    assert picture.height == 2 * PAD + 4 * 14
    assert [e["name"] for e in legend_entries(labels, CLASSES)] == NAMES
    with pytest.raises(ValueError, match=r"labels hold classes \[0, 7\], outside 0..3"):
        legend_entries(np.array([[0, 7]]), CLASSES)


def test_staged_outputs_appear_together_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with staged(out) as stage:
        (stage / "a.png").write_text("new a")
        (stage / "overlays").mkdir()
        (stage / "overlays/a.png").write_text("overlay a")
        assert not (out / "a.png").exists()  # nothing visible before the end
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "a.png",
        "overlays",
        "overlays/a.png",
    ]
    with pytest.raises(RuntimeError, match="image 2 failed"), staged(out) as stage:
        (stage / "a.png").write_text("newer a")
        (stage / "b.png").write_text("b")
        raise RuntimeError("image 2 failed")
    assert (out / "a.png").read_text() == "new a" and not (out / "b.png").exists()
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "overlays"]  # no stage left
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt), staged(fresh) as stage:
        (stage / "a.png").write_text("a")
        raise KeyboardInterrupt
    assert not fresh.exists()  # a folder the failed run created is gone too


def weights(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((1,), value)}


def test_weights_are_picked_by_epoch_and_network(tmp_path: Path) -> None:
    path = tmp_path / "imas.pt"
    stage = {
        "best": {"student": weights(1), "teacher": weights(2)},
        "last": {"student": weights(3), "teacher": weights(4)},
    }
    picked = {
        pick: (float(w["w"]), what)
        for pick in ("auto", "best-teacher", "last-teacher", "best-student", "last-student")
        for w, what in [pick_weights(stage, path, pick)]
    }
    assert picked == {
        "auto": (2.0, "best teacher"),
        "best-teacher": (2.0, "best teacher"),
        "last-teacher": (4.0, "last teacher"),
        "best-student": (1.0, "best student"),
        "last-student": (3.0, "last student"),
    }
    supervised = {"best": {"student": weights(1), "teacher": None}, "last": {"student": weights(3)}}
    assert pick_weights(supervised, path, "auto")[1] == "best student"
    with pytest.raises(SourceError, match=r"imas.pt: no best-teacher weights in this checkpoint "):
        pick_weights(supervised, path, "best-teacher")
    # The protocol benchmark's --weights files: the last student and teacher only.
    last_only = {"model": {}, "student": weights(5), "teacher": weights(6)}
    assert pick_weights(last_only, path, "auto") == (last_only["teacher"], "last teacher")
    with pytest.raises(SourceError, match=r"\(it has: last-student, last-teacher\)"):
        pick_weights(last_only, path, "best-student")
    with pytest.raises(SourceError, match=r"imas.pt: not a checkpoint of a training stage"):
        pick_weights({"w": weights(0)}, path, "auto")


def test_requirements_pin_every_distribution_the_model_code_imports(tmp_path: Path) -> None:
    pins = dict(line.split("==") for line in pinned_requirements())
    # The library imports torch, torchvision, numpy, pydantic, tqdm and PIL; the model's own
    # file mlflow (whose top-level package three distributions share).
    assert set(pins) == {
        "mlflow", "mlflow-skinny", "mlflow-tracing", "numpy", "pillow", "pydantic", "torch",
        "torchvision", "tqdm",
    }  # fmt: skip
    for name, version in pins.items():
        assert importlib.metadata.version(name).split("+")[0] == version
    assert pins["torch"] == "2.14.1"  # pinned in pyproject.toml
    code = tmp_path / "code.py"
    code.write_text("import os, json\nimport yaml\nfrom . import sibling\nfrom imas import x\n")
    assert imported_distributions([code]) == {"PyYAML"}
    code.write_text("import no_such_module_anywhere\n")
    with pytest.raises(RuntimeError, match="no installed distribution provides no_such_module"):
        imported_distributions([code])
