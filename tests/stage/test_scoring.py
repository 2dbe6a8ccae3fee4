"""What a training stage measures for the protocol benchmark: per-image confusions, the premise
diagnostic (easiness vs pseudo-label quality), and the continued schedule's checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats
from support.training import MODEL, Squares

from imas.evaluate import evaluate
from imas.model import build_model
from imas.premise import premise_rows, spearman
from pipeline.config.params import ParamsError, load_params
from pipeline.training.runner import continued_schedule
from pipeline.training.scoring import premise_sample

ROOT = Path(__file__).resolve().parents[2]


def test_per_image_confusions_sum_to_the_whole_and_keep_loader_order() -> None:
    torch.manual_seed(0)
    model = build_model(MODEL).eval()
    data = Squares(5, True, 3)
    batches = [(data.images[:3], data.masks[:3]), (data.images[3:], data.masks[3:])]
    out = evaluate(model, batches, 3, per_image=True)
    assert out["per_image"].shape == (5, 3, 3)
    assert torch.equal(out["per_image"].sum(0), out["confusion"])
    # Image 4 alone gives its own row.
    alone = evaluate(model, [(data.images[4:], data.masks[4:])], 3)
    assert torch.equal(out["per_image"][4], alone["confusion"])
    # Each image's matrix counts its 256 pixels (no ignore in these squares).
    assert out["per_image"].sum(dim=(1, 2)).tolist() == [256] * 5


def test_per_image_is_refused_across_ranks() -> None:
    with pytest.raises(ValueError, match="one process"):
        evaluate(build_model(MODEL), [], 3, per_image=True, across_ranks=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_equals_scipys_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, 40).astype(float).tolist()  # many ties
    y = (np.array(x) * 0.5 + rng.normal(size=40)).tolist()
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_spearman_edge_cases() -> None:
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="equal-length"):
        spearman([1.0], [2.0])


def test_premise_rows_score_each_image_against_its_truth() -> None:
    torch.manual_seed(0)
    model = build_model(MODEL)
    data = Squares(4, True, 3)
    rows = premise_rows(model, model, [(data.images, data.masks, list("abcd"))], 3, 0.5, True)
    assert [r[0] for r in rows] == list("abcd")
    with torch.no_grad():
        pred = model.eval()(
            (data.images.float() / 255 - torch.tensor([0.485, 0.456, 0.406])[:, None, None])
            / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        ).argmax(1)
    for (_, e, quality), p, m in zip(rows, pred, data.masks, strict=True):
        # Student = teacher: identical maps, so γ = 1 − ρ and e = ρ, the confident share.
        assert 0.0 <= e <= 1.0
        inter = [((p == c) & (m == c)).sum() for c in range(3)]
        union = [((p == c) | (m == c)).sum() for c in range(3)]
        ious = [float(i) / float(u) for i, u in zip(inter, union, strict=True) if u > 0]
        assert quality == pytest.approx(sum(ious) / len(ious))


def test_premise_sample_is_evenly_spaced_and_fixed() -> None:
    ids = [f"u{i}" for i in range(10)]
    assert premise_sample(ids, 4) == ["u0", "u2", "u5", "u7"]
    assert premise_sample(ids[:3], 4) == ids[:3]


def test_continued_schedule_needs_room_for_exactly_this_run(tmp_path: Path) -> None:
    ckpt = {"schedule": {"start": 0, "end": 320, "total": 5120}, "optimizer": {"state": {}}}
    assert continued_schedule(ckpt, tmp_path / "w.pt", 4800) == (320, 5120)
    with pytest.raises(ValueError, match="leaves 4800 iterations, not this run's 960"):
        continued_schedule(ckpt, tmp_path / "w.pt", 960)
    with pytest.raises(ValueError, match="rerun the warmup stage"):
        continued_schedule({"best": {}}, tmp_path / "w.pt", 4800)


def _params(tmp_path: Path, **train: object) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"].update(train)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_continuing_run_must_share_the_warmups_optimiser(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"train.lr=0.05 differs from warmup.lr=0.02"):
        load_params(_params(tmp_path, lr=0.05))
    # A fresh schedule (init: warmup) may use its own LR.
    assert load_params(_params(tmp_path, lr=0.05, init="warmup")).train.lr == 0.05


def test_runs_continuing_one_warmup_must_train_equally_long(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["ablations"]["short"] = {"epochs": 2}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="must train equally long"):
        load_params(path)
