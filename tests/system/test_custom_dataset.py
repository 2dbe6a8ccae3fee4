"""The README's worked example end to end: a folder of 48 grayscale 32×32 images, 16 of them
with binary masks and the rest unlabeled with no mask at all, through the download, split,
warmup and train commands (tiny model, two iterations each), the trained model's predictions
(checkpoint and registered model: the dataset's normalisation and colours), and a bad folder
stopping the download stage before it writes anything."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image
from support.custom_data import write_example
from support.params import tiny_custom, tiny_params
from typer.testing import CliRunner

from imas.config import ModelConfig
from imas.data.datasets import read_image
from imas.data.normalization import IMAGENET, Normalization, channel_stats
from imas.evaluate import predict
from imas.model import build_model
from pipeline.cli import app
from pipeline.config.params import load_params
from pipeline.inference.mlflow_model import load_model_uri
from pipeline.inference.sources import from_checkpoint
from pipeline.training.checkpoints import load_checkpoint
from pipeline.training.loaders import input_normalization

DATA = Path("data/custom")
SETS = DATA / "ImageSets" / "Segmentation"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    ids = write_example(tmp_path / "my_data")
    raw = tiny_custom(tiny_params(), "my_data", val=4, normalize="computed", labeled=8)
    raw["runtime"]["log_model"] = True
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
    assert train_run.data.tags["registered_model"] == "models:/imas-custom/1"
    check_predictions(val, norm)


def check_predictions(val: list[str], norm: Normalization) -> None:
    """Both ways of predicting give the evaluation's masks under the computed statistics, in
    the class list's colours (background #000000, blob #FF0000)."""
    images = [f"data/custom/images/{i}.png" for i in val]
    invoke("predict", *images, "--out", "from_checkpoint")
    invoke("predict", *images, "--model", "models:/imas-custom/1", "--out", "from_registry")
    # A tiny net after two iterations may give the same masks under any statistics: check them.
    segmenter, classes, _ = from_checkpoint(Path("models/imas.pt"), "auto", load_params(), DATA)
    registered, same = load_model_uri("models:/imas-custom/1", os.environ["MLFLOW_TRACKING_URI"])
    assert segmenter.norm == registered.norm == norm and classes == same
    assert classes.names == ["background", "blob"]
    assert classes.colours == [(0, 0, 0), (255, 0, 0)]
    ckpt = load_checkpoint(Path("models/imas.pt"))
    network = build_model(ModelConfig.model_validate(ckpt["model"]))
    network.load_state_dict(ckpt["best"]["teacher"])
    for i in val:
        expected = predict(
            network, read_image(Path(f"data/custom/images/{i}.png"))[None], norm=norm
        )
        for out in ("from_checkpoint", "from_registry"):
            mask = Image.open(f"{out}/{i}.png")
            assert np.array_equal(np.asarray(mask), expected[0].numpy().astype(np.uint8))
            assert mask.getpalette()[:6] == [0, 0, 0, 255, 0, 0]


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
