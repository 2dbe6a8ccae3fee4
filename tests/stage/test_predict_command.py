"""`imas predict` through its command, on a tiny project trained here; and the MLflow model the
train stage registers (tags, signature, pinned requirements, input example)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from support.params import tiny_params
from typer.testing import CliRunner

from imas.config import ModelConfig
from imas.data.datasets import read_image
from imas.evaluate import predict
from imas.model import build_model
from pipeline.cli import app
from pipeline.inference.mlflow_model import pinned_requirements

MODEL_URI = "models:/imas-embedded/1"
CLASSES = ["background", "digit 0", "digit 1", "digit 2", "digit 3", "digit 4"]


def invoke(work: Path, monkeypatch: pytest.MonkeyPatch, *args: str):
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """download → split → warmup → train with the MLflow model logged, in a git repository so
    the run (and the model version) carry a commit."""
    work = tmp_path_factory.mktemp("predict")
    raw = tiny_params()
    raw["runtime"]["log_model"] = True
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run([*git, "add", "params.yaml"], cwd=work, check=True)
    subprocess.run([*git, "commit", "-qm", "params"], cwd=work, check=True)
    with pytest.MonkeyPatch.context() as mp:
        for stage in ("download", "split", "warmup", "train"):
            result = invoke(work, mp, stage)
            assert result.exit_code == 0, result.output
    assert f"registered the best weights as {MODEL_URI}" in result.output
    return work


@pytest.fixture(scope="module")
def images(project: Path) -> Path:
    """The val images, copied to a folder of their own."""
    folder = project / "photos"
    folder.mkdir()
    for path in sorted((project / "data/garments/JPEGImages").glob("val_*.jpg")):
        shutil.copy(path, folder)
    return folder


def expected_mask(project: Path, image: Path, **tiles) -> np.ndarray:
    """The best teacher's prediction, rebuilt from the checkpoint by hand."""
    ckpt = torch.load(project / "models/imas.pt", weights_only=True)
    net = build_model(ModelConfig.model_validate(ckpt["model"]))
    net.load_state_dict(ckpt["best"]["teacher"])
    return predict(net, read_image(image)[None], **tiles)[0].numpy()


def pngs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_train_registers_the_best_teacher_with_tags(project: Path) -> None:
    import mlflow
    from mlflow.models import Model

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    (version,) = client.search_model_versions("name='imas-embedded'")
    run = client.get_run(version.run_id)
    summary = json.loads((project / "metrics/train.json").read_text())
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert str(version.version) == "1" and run.info.run_name == "train-imas-4-s0"
    assert version.tags == {
        "method": "imas",
        "labeled": "4",
        "seed": "0",
        "val_miou": str(summary["miou"]),
        "git_commit": commit,
        "dataset": "embedded",
        "weights": "best teacher",
    }
    assert run.data.tags["registered_model"] == MODEL_URI
    assert run.data.metrics["log_model_seconds"] > 0

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    local = Path(mlflow.artifacts.download_artifacts(MODEL_URI, dst_path=str(project / "dl")))
    model = Model.load(str(local))
    assert model.signature.inputs.to_dict() == [
        {"type": "tensor", "tensor-spec": {"dtype": "uint8", "shape": (-1, 3, -1, -1)}}
    ]
    assert model.signature.outputs.to_dict() == [
        {"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": (-1, -1, -1)}}
    ]
    assert (local / "requirements.txt").read_text().split() == pinned_requirements()
    assert model.metadata == {
        "class_names": CLASSES,
        "inference": {"mode": "whole"},
        "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "weights": "teacher",
    }
    example = model.load_input_example(str(local))
    first = (project / "data/garments/ImageSets/Segmentation/val.txt").read_text().split()[0]
    image = read_image(project / f"data/garments/JPEGImages/{first}.jpg")
    assert np.array_equal(example, image[None].numpy())
    assert (local / "code/imas/predict.py").is_file()  # the library travels with the model


def test_logging_the_model_changes_no_training_number(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outs = ["--out", "models/nolog.pt", "--metrics", "metrics/nolog.json"]
    outs += ["--history", "metrics/nolog_history.csv"]
    result = invoke(project, monkeypatch, "train", *outs, "--set", "runtime.log_model=false")
    assert result.exit_code == 0, result.output
    assert "registered" not in result.output
    assert (project / "models/nolog.pt").read_bytes() == (project / "models/imas.pt").read_bytes()
    for ours, theirs in [("nolog.json", "train.json"), ("nolog_history.csv", "train_history.csv")]:
        assert (project / "metrics" / ours).read_text() == (
            project / "metrics" / theirs
        ).read_text()


def test_predict_skips_unreadable_images_with_a_warning(
    project: Path, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mixed = project / "mixed"
    shutil.copytree(images, mixed)
    real = (project / "data/garments/SegmentationClass/val_00000.png").read_bytes()
    (mixed / "broken.png").write_bytes(real[: len(real) // 2])  # truncated
    (mixed / "notes.jpg").write_text("not an image")
    result = invoke(project, monkeypatch, "predict", "mixed", "--out", "out1", "--on-error", "skip")
    assert result.exit_code == 0, result.output
    for bad in ("broken.png", "notes.jpg"):
        assert f"warning: predict: skipped mixed/{bad}: unreadable image" in result.output
    assert "predict: 6 masks in out1 from models/imas.pt (best teacher), 2 unreadable skipped" in (
        result.output
    )
    out = project / "out1"
    names = sorted(p.name for p in images.iterdir())
    assert sorted(p.name for p in out.glob("*.png")) == [n.replace(".jpg", ".png") for n in names]
    for name in names:
        mask = Image.open(out / name.replace(".jpg", ".png"))
        assert mask.mode == "P" and json.loads(mask.text["Classes"]) == CLASSES
        assert np.array_equal(np.asarray(mask), expected_mask(project, images / name))
        shown = Image.open(out / "overlays" / name.replace(".jpg", ".png"))
        legend = [e["name"] for e in json.loads(shown.text["Legend"])]
        present = np.unique(np.asarray(mask)).tolist()
        assert legend == [CLASSES[i] for i in present]
    assert not list(out.glob(".predict-*"))


def test_fail_mode_stops_at_the_bad_image_and_writes_nothing(
    project: Path, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = project / "out2"
    out.mkdir()
    (out / "val_00000.png").write_text("from an earlier run")
    listing = project / "list.txt"
    listing.write_text("photos/val_00000.jpg\nphotos/val_00001.jpg\nmissing.jpg\nphotos/x.jpg\n")
    # One image a batch: the first mask is staged when the third image fails.
    args = ["predict", "list.txt", "--out", "out2", "--batch-size", "1"]
    result = invoke(project, monkeypatch, *args)
    assert result.exit_code == 1
    assert (
        "error: predict: missing.jpg: image not found; nothing written to out2 "
        "(--on-error skip leaves such images out)"
    ) in result.output
    assert sorted(p.name for p in out.iterdir()) == ["val_00000.png"]
    assert (out / "val_00000.png").read_text() == "from an earlier run"


def test_the_registered_model_predicts_what_its_checkpoint_does(
    project: Path, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    by_checkpoint = invoke(project, monkeypatch, "predict", "photos", "--out", "out3")
    assert by_checkpoint.exit_code == 0, by_checkpoint.output
    args = ["predict", "photos", "--out", "out4", "--model", MODEL_URI]
    by_model = invoke(project, monkeypatch, *args)
    assert by_model.exit_code == 0, by_model.output
    assert f"predict: 6 masks in out4 from {MODEL_URI}" in by_model.output
    assert pngs(project / "out4") == pngs(project / "out3") and len(pngs(project / "out3")) == 12


def test_sliding_window_inference_comes_from_params(
    project: Path, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sliding = ["mode=sliding", "window=16", "stride=12", "tiling=clip"]
    sets = [arg for pair in sliding for arg in ("--set", f"evaluate.{pair}")]
    image = images / "val_00003.jpg"
    result = invoke(
        project, monkeypatch, "predict", str(image), "--out", "out5", "--no-overlays", *sets
    )
    assert result.exit_code == 0, result.output
    mask = np.asarray(Image.open(project / "out5/val_00003.png"))
    assert mask.shape == (32, 32)
    tiles = {"mode": "sliding", "window": 16, "stride": 12, "tiling": "clip"}
    assert np.array_equal(mask, expected_mask(project, image, **tiles))
    assert not (project / "out5/overlays").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["photos", "--model", MODEL_URI, "--checkpoint", "models/imas.pt"], 2, "not both"),
        (["nowhere"], 2, "error: predict: INPUT nowhere does not exist"),
        (["photos", "--checkpoint", "models/x.pt"], 1, "checkpoint models/x.pt does not exist"),
        (
            ["photos", "--model", "models:/imas-nope/1"],
            1,
            "error: predict: MLflow model models:/imas-nope/1: cannot load it",
        ),
        (
            ["photos", "--set", "data.embedded.digits=[0, 1]", "--set", "model.num_classes=3"],
            1,
            "models/imas.pt: a model of 6 classes, but params.yaml's dataset embedded has 3",
        ),
        (["photos", "--weights", "best-student", "--set", "train.tau=2"], 2, "train.tau"),
        (["photos", "--out", "params.yaml"], 2, "error: predict: --out params.yaml is a file"),
    ],
)
def test_bad_arguments_are_refused_by_name(
    project: Path,
    images: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    code: int,
    message: str,
) -> None:
    out = [] if "--out" in args else ["--out", "refused"]
    result = invoke(project, monkeypatch, "predict", *args, *out)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert not (project / "refused").exists()
