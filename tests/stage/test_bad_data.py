"""Bad data files through the stages: a split naming a file that is not there fails at the split
stage; a truncated, non-image or mislabelled file fails the training stage with its path named,
nothing written and the MLflow run FAILED."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image
from support.project import build, snapshot
from typer.testing import CliRunner

from imas.data import DataError
from pipeline.cli import app

# The download stage's default root, where the tiny project keeps its digit scenes too.
DATA = Path("data/garments")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("pristine"), ["download", "split"])


@pytest.fixture
def project(pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "project"
    shutil.copytree(pristine, work)
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    return work


def labeled_ids() -> list[str]:
    return Path("data/split/labeled.txt").read_text().split()


def image(i: str) -> Path:
    return DATA / "JPEGImages" / f"{i}.jpg"


def mask(i: str) -> Path:
    return DATA / "SegmentationClass" / f"{i}.png"


def test_split_fails_on_a_listed_image_that_is_missing(project: Path) -> None:
    pool = (DATA / "ImageSets/Segmentation/train.txt").read_text().split()
    image(pool[-1]).unlink()  # listed in train.txt; labeled or unlabeled, its image is needed
    shutil.rmtree("data/split")
    before = snapshot(project)
    result = CliRunner().invoke(app, ["split"])
    assert result.exit_code == 1, result.output
    assert f"error: {image(pool[-1])}: listed id '{pool[-1]}' has no file" in result.output
    assert snapshot(project) == before  # no split lists, no MLflow run


def test_split_fails_on_a_labeled_id_without_its_mask(project: Path) -> None:
    first = labeled_ids()[0]
    mask(first).unlink()
    before = snapshot(project)
    result = CliRunner().invoke(app, ["split"])
    assert result.exit_code == 1, result.output
    assert f"error: {mask(first)}: listed id '{first}' has no file" in result.output
    assert snapshot(project) == before  # the previous split lists are kept as they were


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _not_an_image(path: Path) -> None:
    path.write_bytes(b"<html>404 Not Found</html>")


def _resized(path: Path) -> None:
    Image.open(path).resize((16, 16), Image.NEAREST).save(path)


def _value(value: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with Image.open(path) as img:
            arr = np.array(img)
            palette = img.getpalette()
        arr[0, 0] = value
        out = Image.fromarray(arr)
        out.putpalette(palette)
        buf = io.BytesIO()
        out.save(buf, format="PNG")
        path.write_bytes(buf.getvalue())

    return write


# (file of the first labeled id, damage, what the error says after the path)
DAMAGE = {
    "truncated image": (image, _truncate, "unreadable image"),
    "non-image file": (image, _not_an_image, "unreadable image"),
    "truncated mask": (mask, _truncate, "unreadable mask"),
    "mask of another size": (mask, _resized, "mask size (16, 16) differs from image size"),
    "mask value above the classes": (mask, _value(7), "mask values [7] outside 0..5 and 255"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_file_fails_training_naming_its_path(project: Path, case: str) -> None:
    which, damage, says = DAMAGE[case]
    path = which(labeled_ids()[0])
    damage(path)
    args = ["warmup", "--out", "models/w.pt", "--metrics", "metrics/w.json"]
    result = CliRunner().invoke(app, [*args, "--history", "metrics/w.csv"])
    assert result.exit_code == 1
    assert isinstance(result.exception, DataError)
    assert str(result.exception).startswith(f"{path}: {says}"), str(result.exception)
    assert not Path("models").exists() and not Path("metrics").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("imas-embedded")
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'warmup'")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_a_value_of_255_is_ignore_not_an_error(project: Path) -> None:
    _value(255)(mask(labeled_ids()[0]))
    result = CliRunner().invoke(app, ["warmup", "--out", "models/w.pt"])
    assert result.exit_code == 0, result.output
