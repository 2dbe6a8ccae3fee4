"""The README's worked example end to end: a folder of 48 grayscale 32×32 images, 16 of them
with binary masks and the rest unlabeled with no mask at all, through the download, split,
warmup and train commands (tiny model, two iterations each), and a bad folder stopping the
download stage before it writes anything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image
from support.custom_data import write_example
from support.params import tiny_custom, tiny_params
from typer.testing import CliRunner

from imas.data.normalization import IMAGENET, channel_stats
from pipeline.cli import app
from pipeline.config.params import load_params
from pipeline.training.loaders import input_normalization

SETS = Path("data/custom/ImageSets/Segmentation")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    ids = write_example(tmp_path / "my_data")
    raw = tiny_custom(tiny_params(), "my_data", val=4, normalize="computed", labeled=8)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return ids


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def lines(path: Path | str) -> list[str]:
    return Path(path).read_text().split()


def test_a_custom_folder_trains_end_to_end(project: dict[str, list[str]]) -> None:
    data = "data/custom"
    out = invoke("download", "--out", data)
    assert "train_images=44, train_masked=12, val_images=4" in out
    val, masked, pool = (
        lines(SETS / "val.txt"),
        lines(SETS / "train.txt"),
        lines(SETS / "train_aug.txt"),
    )
    assert len(val) == 4 and set(val) <= set(project["masked"])
    assert sorted(masked + val) == project["masked"] and len(pool) == 44
    # Unlabeled images got no mask anywhere: the training below never asks for one.
    assert sorted(p.stem for p in Path(data, "masks").iterdir()) == project["masked"]
    norm = input_normalization(load_params(), Path(data))
    train_images = (np.asarray(Image.open(Path(data, "images", f"{i}.png"))) for i in pool)
    assert norm == channel_stats(train_images) != IMAGENET  # normalize: computed

    assert invoke("split", "--data", data).strip().endswith("8 labeled, 36 unlabeled")
    first = Path("data/split/labeled.txt").read_bytes()
    invoke("split", "--data", data)
    assert Path("data/split/labeled.txt").read_bytes() == first  # seeded: the same draw
    labeled, unlabeled = lines("data/split/labeled.txt"), lines("data/split/unlabeled.txt")
    assert set(labeled) <= set(masked) and set(project["unmasked"]) <= set(unlabeled)

    invoke("warmup", "--data", data)
    invoke("train", "--data", data)
    for stage in ("warmup", "train"):
        summary = json.loads(Path(f"metrics/{stage}.json").read_text())
        assert summary["iterations"] == 2 and 0 <= summary["miou"] <= 100
        assert Path(f"models/{'imas' if stage == 'train' else 'warmup'}.pt").is_file()
    runs = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("imas-custom").experiment_id]
    )
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["stage"] for r in runs} == {"download", "split", "warmup", "train"}
    train_run = next(r for r in runs if r.data.tags["stage"] == "train")
    assert train_run.data.params["data.custom.root"] == "my_data"
    assert train_run.data.params["data.custom.normalize"] == "computed"


def test_a_bad_folder_stops_the_download_stage(project: dict[str, list[str]]) -> None:
    labeled = project["masked"][0]
    Path(f"my_data/masks/{labeled}.png").write_bytes(b"")  # an empty file is no PNG
    result = CliRunner().invoke(app, ["download", "--out", "data/custom"])
    assert result.exit_code == 1
    assert (
        f"error: my_data: 1 problem with the custom dataset\n  my_data/masks/{labeled}.png: "
        "unreadable mask (" in result.output
    )
    assert not Path("data/custom").exists() and not list(Path("data").glob(".custom*"))
