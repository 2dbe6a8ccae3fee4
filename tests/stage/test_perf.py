"""Benchmark smoke tests (`imas perf`): small sizes, asserting the compared things agree, never
timings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from support.params import tiny
from typer.testing import CliRunner

from imas.config import ModelConfig
from imas.hardness import confidence_maps, hardness_from_maps
from imas.intensity import OPS
from imas.model import build_model
from pipeline.cli import app
from pipeline.config.params import Params
from pipeline.perf.augment_bench import _images, bench_augment
from pipeline.perf.hardness_bench import authors_style_hardness, structured_probs
from pipeline.perf.pil_ops import apply_op
from pipeline.perf.report import render
from pipeline.perf.step_bench import compare_methods


def test_authors_style_routine_hand_computed() -> None:
    # 1×2×2 maps, 3 classes. Teacher [[1,1],[2,0]], student [[1,2],[2,0]], ignore class 0.
    # IoU_1 = 1/2, IoU_2 = 1/2. Teacher weights (class 1: 2, class 2: 1) → wIoU_t = 1/2;
    # student weights (1: 1, 2: 2) → wIoU_s = 1/2. γ = 1 − ½(0.5·½ + 1.0·½) = 0.625.
    t = np.array([[[1, 1], [2, 0]]])
    s = np.array([[[1, 2], [2, 0]]])
    gamma = authors_style_hardness(s, t, np.array([1.0]), np.array([0.5]), 3)
    assert gamma.tolist() == [pytest.approx(0.625)]


@pytest.mark.parametrize(("batch", "classes", "side"), [(4, 21, 33), (3, 19, 45), (2, 6, 16)])
def test_ours_equals_authors_style(batch: int, classes: int, side: int) -> None:
    p_s, p_t = structured_probs(batch, classes, side, seed=batch)
    s_map, s_ratio = confidence_maps(p_s, 0.8)
    t_map, t_ratio = confidence_maps(p_t, 0.8)
    ours = hardness_from_maps(s_map, t_map, s_ratio, t_ratio, classes).double().numpy()
    arrays = [x.numpy() for x in (s_map, t_map, s_ratio.double(), t_ratio.double())]
    theirs = authors_style_hardness(*arrays, classes)
    assert np.abs(ours - theirs).max() <= 1e-6
    assert len(set(np.round(theirs, 6))) > 1  # images differ: the comparison is not trivial


@pytest.mark.parametrize("name", sorted(OPS))
def test_pil_ops_follow_the_same_semantics(name: str) -> None:
    # The PIL way is only a candidate if it is the same augmentation: same op, same magnitude
    # mapping. PIL's HSV is 8-bit, so hue differs by quantisation only.
    img = _images(1, 48, seed=3)[0]
    tensor = torch.from_numpy(img).permute(2, 0, 1).contiguous()
    tolerance = 8 if name == "hue" else 2
    for u in (0.0, 0.45, 0.95):
        pil = np.asarray(apply_op(Image.fromarray(img), name, u, 1)).astype(int)
        ours = OPS[name](tensor, u, 1).permute(1, 2, 0).numpy().astype(int)
        assert np.abs(pil - ours).max() <= tolerance, (name, u)


def test_augment_bench_runs() -> None:
    result = bench_augment(side=24, batch=2, batches=2, k=2, workers=0)
    assert result["images"] == 4
    assert result["ours_images_per_s"] > 0 and result["authors_images_per_s"] > 0


def test_compare_methods_on_a_tiny_model() -> None:
    raw = yaml.safe_load(Path("params.yaml").read_text())
    params = Params.model_validate(tiny(raw))
    cfg = params.train.model_copy(update={"batch_labeled": 2, "batch_unlabeled": 2})
    g = torch.Generator().manual_seed(0)
    crop, n_cls = 16, params.model.num_classes
    labeled = [
        (
            torch.randint(0, 256, (2, 3, crop, crop), dtype=torch.uint8, generator=g),
            torch.randint(0, n_cls, (2, crop, crop), generator=g),
        )
    ]
    unlabeled = [torch.randint(0, 256, (2, 3, crop, crop), dtype=torch.uint8, generator=g)]
    model_cfg: ModelConfig = params.model
    torch.manual_seed(0)
    weights = build_model(model_cfg).state_dict()

    def make_model() -> torch.nn.Module:
        model = build_model(model_cfg)
        model.load_state_dict(weights)
        return model

    result = compare_methods(make_model, lambda: (labeled, unlabeled), cfg, 2, steps=4)
    methods = result["methods"]
    assert set(methods) == {
        "supervised",
        "mean_teacher",
        "imas",
        "imas_drop_weak",
        "mean_teacher_drop_weak",
    }
    assert all(row["steps"] == 2 and row["step_ms"] > 0 for row in methods.values())
    assert 0 < methods["imas"]["hardness_share"] < 1
    assert methods["mean_teacher"]["hardness_share"] == 0  # γ is iMAS-only
    assert result["imas_over_mean_teacher"] == round(
        methods["imas"]["step_ms"] / methods["mean_teacher"]["step_ms"], 3
    )


def test_cli_hardness_small_writes_identical_values(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["perf", "hardness", "--small", "--repeats", "1", "--out-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "hardness.json").read_text())
    assert [s["side"] for s in data["shapes"]] == [33, 45]
    assert all(s["max_abs_diff"] <= 1e-6 for s in data["shapes"])
    assert data["machine"]["cores"] >= 1
    text = render(tmp_path)
    assert "Command: `imas perf hardness`" in text and "33²" in text
    assert "Not measured yet: run `imas perf steps`" in text
