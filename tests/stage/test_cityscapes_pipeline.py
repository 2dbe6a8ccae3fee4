"""`dataset: cityscapes` through the download and split stages, with the packages already in
the downloads folder (so no login happens) and published lists served from disk."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import requests
import yaml
from mlflow import MlflowClient
from support.cityscapes_data import PASSWORD, TRAIN_A, TRAIN_B, USER, VAL
from support.params import tiny_real
from typer.testing import CliRunner, Result

from imas.data import catalogue
from pipeline.acquire import split_lists as published
from pipeline.acquire.cityscapes import PASSWORD_VAR, USERNAME_VAR
from pipeline.cli import app
from pipeline.config.params import load_params
from pipeline.training.loaders import train_loaders, val_loader

ROOT = Path(__file__).resolve().parents[2]


def _image_line(i: str) -> str:
    return f"leftImg8bit/{i}_leftImg8bit.png"


@pytest.fixture
def work(tmp_path: Path, archives: list[Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    for archive in archives:
        shutil.copy(archive, downloads / archive.name)
    raw = tiny_real(yaml.safe_load((ROOT / "params.yaml").read_text()), "cityscapes", 19)
    raw["data"]["cityscapes"]["downloads"] = str(downloads)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # The packages are there: the stage must not need (or ask for) an account.
    monkeypatch.delenv(USERNAME_VAR, raising=False)
    monkeypatch.delenv(PASSWORD_VAR, raising=False)
    return tmp_path


def _split_from_published(
    root: Path, lists: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> Result:
    """Serve `lists` as the published Cityscapes split (one label count) from `root`, with
    their checksums registered, and run the split stage on them."""
    for rel, lines in lists.items():
        text = "\n".join(lines)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
        sha = hashlib.sha256(text.encode()).hexdigest()
        monkeypatch.setitem(published.SPLITS, rel, (len(lines), sha))
    monkeypatch.setitem(catalogue.PUBLISHED_COUNTS, ("cityscapes", "classic"), (1,))
    args = ["--set", "data.split.source=published", "--set", f"data.split.urls=[{root.as_uri()}]"]
    return CliRunner().invoke(app, ["split", "--data", "data/cityscapes", *args])


def test_download_converts_and_lists_then_split_and_load(work: Path) -> None:
    result = CliRunner().invoke(app, ["download", "--out", "data/cityscapes"])
    assert result.exit_code == 0, result.output
    data = work / "data/cityscapes"
    sets = data / "ImageSets/Segmentation"
    assert (sets / "train.txt").read_text().split() == sorted([TRAIN_A, TRAIN_B])
    assert (sets / "val.txt").read_text().split() == [VAL]
    classes = json.loads((data / "classes.json").read_text())
    assert len(classes) == 19 and classes[0] == "road" and classes[13] == "car"

    result = CliRunner().invoke(app, ["split", "--data", "data/cityscapes"])
    assert result.exit_code == 0, result.output
    labeled = (work / "data/split/labeled.txt").read_text().split()
    unlabeled = (work / "data/split/unlabeled.txt").read_text().split()
    assert len(labeled) == 1 and sorted(labeled + unlabeled) == sorted([TRAIN_A, TRAIN_B])

    params = load_params(work / "params.yaml")
    lab, _, n_unlabeled = train_loaders(params, data, work / "data/split", 1, 1)
    image, mask = next(iter(lab))
    assert image.shape == (1, 3, 8, 8) and n_unlabeled == 1
    assert set(mask.unique().tolist()) <= {*range(19), 255}
    _, masks, ids = next(iter(val_loader(params, data)))
    assert ids == (VAL,) and int(masks.unique()[0]) == 13  # labelId 26 (car) -> trainId 13


def test_published_cityscapes_lists_become_ids(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert CliRunner().invoke(app, ["download", "--out", "data/cityscapes"]).exit_code == 0
    root = work / "splits"
    lists = {
        "cityscapes/1/labeled.txt": [_image_line(TRAIN_B)],
        "cityscapes/1/unlabeled.txt": [_image_line(TRAIN_A)],
        "cityscapes/val.txt": [_image_line(VAL)],
    }
    result = _split_from_published(root, lists, monkeypatch)
    assert result.exit_code == 0, result.output
    assert (work / "data/split/labeled.txt").read_text() == TRAIN_B
    assert (work / "data/split/unlabeled.txt").read_text() == TRAIN_A


def test_published_list_with_unknown_id_fails_at_the_split(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert CliRunner().invoke(app, ["download", "--out", "data/cityscapes"]).exit_code == 0
    ghost = "train/aachen/aachen_000099_000019"  # well-formed, but not in the dataset
    root = work / "splits"
    lists = {
        "cityscapes/1/labeled.txt": [_image_line(ghost)],
        "cityscapes/1/unlabeled.txt": [_image_line(TRAIN_A), _image_line(TRAIN_B)],
        "cityscapes/val.txt": [_image_line(VAL)],
    }
    result = _split_from_published(root, lists, monkeypatch)
    assert result.exit_code == 1
    assert "1 labeled id(s) not in the dataset's train pool" in result.output
    assert ghost in result.output
    assert not (work / "data/split").exists()


def test_missing_packages_without_account_say_which_variables(work: Path) -> None:
    for archive in (work / "downloads").iterdir():
        archive.unlink()
    result = CliRunner().invoke(app, ["download", "--out", "data/cityscapes"])
    assert result.exit_code == 1
    assert USERNAME_VAR in result.output and PASSWORD_VAR in result.output
    assert not (work / "data/cityscapes").exists()


def _assert_secret_free(work: Path, *texts: str) -> None:
    for text in texts:
        assert USER not in text and PASSWORD not in text, text
    for f in work.rglob("*"):  # outputs, the MLflow store and artifacts, the home folder
        if f.is_file():
            data = f.read_bytes()
            assert USER.encode() not in data and PASSWORD.encode() not in data, f
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("imas-cityscapes")
    for run in client.search_runs([exp.experiment_id]):
        logged = [*run.data.params.items(), *run.data.tags.items()]
        assert not [kv for kv in logged if USER in str(kv) or PASSWORD in str(kv)]


def test_the_download_stage_never_shows_or_stores_the_credentials(
    work: Path,
    site,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for archive in (work / "downloads").iterdir():
        archive.unlink()  # so the stage has to log in
    monkeypatch.setenv(USERNAME_VAR, USER)
    monkeypatch.setenv(PASSWORD_VAR, PASSWORD)
    args = ["download", "--out", "data/cityscapes", "--set", "runtime.progress=true"]
    result = CliRunner().invoke(app, args)  # progress on: the library may print what it likes
    assert result.exit_code == 0, result.output
    assert [entry[0] for entry in site.log].count("POST") == 1  # it did log in
    assert (work / "data/cityscapes/classes.json").is_file()
    out = capfd.readouterr()
    _assert_secret_free(work, result.output, out.out, out.err, caplog.text)

    # A transport error during the login quotes the form it was sending: the stage's message
    # must not. The run is FAILED, and nothing is written.
    for archive in (work / "downloads").iterdir():
        archive.unlink()

    def broken(_self, request, **kw):
        if request.method == "GET":
            return site.send(request, **kw)
        raise requests.ConnectionError(f"reset while sending {request.body}")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", broken)
    result = CliRunner().invoke(app, [*args[:2], "data/cityscapes2", *args[3:]])
    assert result.exit_code == 1, result.output
    assert "Cityscapes login failed: ConnectionError" in result.output
    assert "username=***&password=***" in result.output
    assert not (work / "data/cityscapes2").exists()
    out = capfd.readouterr()
    _assert_secret_free(work, result.output, out.out, out.err, caplog.text)
