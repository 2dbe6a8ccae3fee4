"""`imas preset`: overlays merged into params.yaml with comments kept, validated, atomic."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import presets
from pipeline.config.paper_numbers import PRESETS, PUBLISHED
from pipeline.config.params import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    return path


def test_every_preset_has_an_overlay_and_published_numbers() -> None:
    assert sorted(p.stem for p in presets.PRESET_DIR.glob("*.yaml")) == sorted(PRESETS)
    for key in PRESETS.values():
        assert PUBLISHED[key].miou["imas"]


def test_apply_keeps_comments_and_sets_the_setting(params_file: Path) -> None:
    result = CliRunner().invoke(app, ["preset", "voc_classic_r101", "--params", str(params_file)])
    assert result.exit_code == 0, result.output
    text = params_file.read_text()
    assert text.startswith("# Every experiment knob of the pipeline.")
    assert "# built-in: Fashion-MNIST garments" not in text  # that value changed ...
    assert "lambda_u: 3.0" in text and "tau: 0.95" in text
    assert "  cutmix: true         # make the CutMix view (SPEC §4)" in text  # ... this kept
    params = load_params(params_file)
    assert (params.preset, params.dataset, params.labeled) == ("voc_classic_r101", "voc", 92)
    assert params.data.split.source == "published" and params.data.split.family == "classic"
    assert params.data.split.urls == load_params(ROOT / "params.yaml").data.split.urls
    assert params.train.batch_labeled == params.train.batch_unlabeled == 16
    assert params.train.lr == 0.001 and params.train.head_lr_mult == 10.0
    assert params.aug.crop == 513 and params.model.num_classes == 21


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_runs_the_papers_schedule_from_imagenet(params_file: Path, name: str) -> None:
    params = presets.preset_params(name, params_file)
    # No garment pretraining: the backbone starts from the preset's ImageNet checkpoint.
    assert params.pretrain is None
    assert str(params.model.pretrained).startswith("data/pretrained/resnet")
    # Every run (iMAS, SupOnly = the `supervised` ablation, mean teacher) starts from ImageNet
    # for the paper's whole schedule, evaluated every epoch; none continues the warmup.
    runs = {"train": params.train} | {k: params.ablation(k) for k in params.ablations}
    assert params.ablation("supervised").method == "supervised"
    for where, run in runs.items():
        assert run.init == "scratch", where
        assert (run.epochs, run.eval_every) == (params.train.epochs, 1), where
    assert params.warmup.eval_every == 1 and params.evaluate.split == "val"


def test_cityscapes_preset_values(params_file: Path) -> None:
    params = presets.preset_params("cityscapes_r50_os8", params_file)
    assert params.model.output_stride == 8 and params.model.aspp_rates == (12, 24, 36)
    assert params.evaluate.mode == "sliding"
    assert (params.evaluate.window, params.evaluate.stride) == (769, 512)
    assert params.evaluate.tiling == "clip"  # the authors' edge tiles, cut at the border
    assert params.train.tau == 0.7 and params.train.weight_decay == 0.0005
    assert params.train.epochs == 240


@pytest.mark.parametrize("name", ["cityscapes_r50_os16", "cityscapes_r50_os8"])
def test_cityscapes_presets_ignore_class_0_road_in_the_hardness(
    params_file: Path, name: str
) -> None:
    # Every released Cityscapes config sets flag_cal_iou_ignore_bg: True, which on trainIds
    # drops road from the wIoU; the published numbers were made that way.
    assert presets.preset_params(name, params_file).train.ignore_index0 is True


def test_unknown_preset_changes_nothing(params_file: Path) -> None:
    before = params_file.read_bytes()
    result = CliRunner().invoke(app, ["preset", "voc_r18", "--params", str(params_file)])
    assert result.exit_code == 2
    assert "unknown preset 'voc_r18' (have: voc_classic_r101," in result.output
    assert params_file.read_bytes() == before


def test_overlay_with_a_typo_or_an_invalid_value_changes_nothing(
    params_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "typo.yaml").write_text("train:\n  lambda_uu: 3.0\n")
    (folder / "bad.yaml").write_text("train:\n  tau: 1.5\n")
    monkeypatch.setattr(presets, "PRESET_DIR", folder)
    monkeypatch.setitem(presets.PRESETS, "typo", "voc_classic")
    monkeypatch.setitem(presets.PRESETS, "bad", "voc_classic")
    before = params_file.read_bytes()
    with pytest.raises(ParamsError, match=r"preset key train\.lambda_uu is not in params\.yaml"):
        presets.apply_preset(params_file, "typo")
    with pytest.raises(ParamsError, match=r"train\.tau"):
        presets.apply_preset(params_file, "bad")
    assert params_file.read_bytes() == before
    assert sorted(p.name for p in params_file.parent.iterdir()) == ["params.yaml", "presets"]


def test_list_shows_presets_with_published_numbers() -> None:
    result = CliRunner().invoke(app, ["preset", "--list"])
    assert result.exit_code == 0
    assert "voc_classic_r101" in result.output
    assert "iMAS 68.8 / 75.3 / 79.1 / 80.2 / 82.0" in result.output
    assert "cityscapes_r50_os8" in result.output and "75.2 / 78.0 / 78.2 / 80.2" in result.output


def test_every_preset_builds_its_paper_model(params_file: Path) -> None:
    import torch
    from support.paper_model import (
        R50_CITYSCAPES_PARAMS,
        R50_DEEP_BACKBONE,
        R101_VOC_PARAMS,
        head_params,
        n_params,
    )

    from imas.model import build_model

    expected = {
        "voc_classic_r101": R101_VOC_PARAMS,
        "voc_blended_r101": R101_VOC_PARAMS,
        "voc_blended_r50": R50_DEEP_BACKBONE + head_params(21),
        "cityscapes_r50_os16": R50_CITYSCAPES_PARAMS,
        "cityscapes_r50_os8": R50_CITYSCAPES_PARAMS,
    }
    for name in PRESETS:
        params = presets.preset_params(name, params_file)
        # build_model never reads model.pretrained (the training stage loads it), so the
        # preset's checkpoint path, absent here, is not needed.
        model = build_model(params.model).eval()
        assert n_params(model) == expected[name], name
        # Full crop for the one architecture tests/unit/test_model_paper.py does not run at full
        # size (R50, output stride 16, 21 classes); the others are covered there.
        size = params.aug.crop if name == "voc_blended_r50" else 65
        with torch.no_grad():
            out = model(torch.randn(1, 3, size, size))
        assert out.shape == (1, params.model.num_classes, size, size), name


def test_smoke_runs_a_preset_step_and_evaluation(params_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    args = ["smoke", "cityscapes_r50_os16", "--params", str(params_file), "--out", str(out)]
    # Small crop and image, so CI runs it; the sliding window is the preset's 769, so the
    # 40×50 image is one (clipped) window: the sliding path runs end to end.
    result = CliRunner().invoke(app, [*args, "--crop", "33", "--eval-size", "40", "50"])
    assert result.exit_code == 0, result.output
    import json

    data = json.loads(out.read_text())
    assert (data["preset"], data["backbone"], data["crop"]) == (
        "cityscapes_r50_os16",
        "resnet50",
        33,
    )
    assert data["eval_mode"] == "sliding" and data["batch"] == "1+1"
    assert data["step_seconds"] > 0 and data["eval_seconds"] > 0 and data["peak_rss_mib"] > 0
