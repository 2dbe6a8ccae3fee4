"""`dataset: voc` through the download and split stages, on fixture archives served from disk.

The archives have the real internal paths (tests/unit/test_pascal.py builds them); their md5 and the
published lists' sha256 are the fixtures', patched into the module tables the stages read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from support.params import tiny_real
from support.voc_data import TRAIN_AUG, VAL, VOC_TRAIN, _archive, make_raw
from typer.testing import CliRunner

from imas.data import catalogue
from pipeline.acquire import pascal
from pipeline.acquire import split_lists as published
from pipeline.cli import app
from pipeline.config.params import ParamsError, load_params
from pipeline.training.loaders import train_loaders, val_loader

ROOT = Path(__file__).resolve().parents[2]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def voc_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_raw(tmp_path / "src")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    urls = {}
    for name, top in (("VOC_SOURCE", "VOCdevkit"), ("SBD_SOURCE", "benchmark_RELEASE")):
        source = getattr(pascal, name)
        archive = _archive(tmp_path / "src", top, mirror / source.filename)
        md5 = hashlib.md5(archive.read_bytes()).hexdigest()
        monkeypatch.setattr(pascal, name, replace(source, md5=md5))
        urls[name] = archive.as_uri()
    raw = tiny_real(yaml.safe_load((ROOT / "params.yaml").read_text()), "voc", 21)
    raw["data"]["voc"].update(
        voc_urls=["http://127.0.0.1:9/gone.tar", urls["VOC_SOURCE"]],  # first mirror fails
        sbd_urls=[urls["SBD_SOURCE"]],
        downloads=str(tmp_path / "downloads"),
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def _publish(work: Path, monkeypatch: pytest.MonkeyPatch, lists: dict[str, list[str]]) -> None:
    """Serve `lists` as published pascal lists for a labeled count of 1."""
    root = work / "splits"
    for rel, ids in lists.items():
        text = "\n".join(ids)  # the published format: no newline after the last id
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
        monkeypatch.setitem(published.SPLITS, rel, (len(ids), _sha(text)))
    monkeypatch.setitem(catalogue.PUBLISHED_COUNTS, ("pascal", "classic"), (1,))
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"]["split"].update(source="published", urls=[root.as_uri()])
    (work / "params.yaml").write_text(yaml.safe_dump(params))


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_download_builds_the_aug_root_and_generated_split(voc_work: Path) -> None:
    result = invoke("download", "--out", "data/voc")
    assert result.exit_code == 0, result.output
    data = voc_work / "data/voc"
    sets = data / "ImageSets/Segmentation"
    assert (sets / "train_aug.txt").read_text().split() == TRAIN_AUG
    assert (sets / "val.txt").read_text().split() == VAL
    assert json.loads((data / "classes.json").read_text())[15] == "person"
    assert not list(voc_work.glob("data/.voc.building-*"))  # the temp build was renamed away

    assert invoke("split", "--data", "data/voc").exit_code == 0
    labeled = (voc_work / "data/split/labeled.txt").read_text().split()
    unlabeled = (voc_work / "data/split/unlabeled.txt").read_text().split()
    # Classic: the labeled id comes from VOC's fine train images; the rest of train_aug is
    # unlabeled, in train_aug order.
    assert len(labeled) == 1 and labeled[0] in VOC_TRAIN
    assert unlabeled == [i for i in TRAIN_AUG if i != labeled[0]]

    params = load_params(voc_work / "params.yaml")
    lab, unl, n_unlabeled = train_loaders(params, data, voc_work / "data/split", 1, 2)
    image, mask = next(iter(lab))
    assert image.shape == (1, 3, 8, 8) and mask.shape == (1, 8, 8)
    assert n_unlabeled == len(unlabeled) and next(iter(unl)).shape == (2, 3, 8, 8)
    assert len(val_loader(params, data)) == len(VAL)


def test_blended_generated_split_draws_from_train_aug(voc_work: Path) -> None:
    assert invoke("download", "--out", "data/voc").exit_code == 0
    args = ["--set", "data.split.family=blended", "--set", "labeled=4"]
    assert invoke("split", "--data", "data/voc", *args).exit_code == 0
    labeled = (voc_work / "data/split/labeled.txt").read_text().split()
    unlabeled = (voc_work / "data/split/unlabeled.txt").read_text().split()
    assert len(labeled) == 4 and not set(labeled) - set(TRAIN_AUG)
    assert sorted(labeled + unlabeled) == sorted(TRAIN_AUG)
    # Four of five from train_aug cannot all be VOC train ids (there are two).
    assert set(labeled) - set(VOC_TRAIN)


def test_published_split_is_fetched_verified_and_checked(
    voc_work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert invoke("download", "--out", "data/voc").exit_code == 0
    chosen = "2008_000002"
    rest = [i for i in TRAIN_AUG if i != chosen]
    _publish(
        voc_work,
        monkeypatch,
        {"pascal/1/labeled.txt": [chosen], "pascal/1/unlabeled.txt": rest, "pascal/val.txt": VAL},
    )
    result = invoke("split", "--data", "data/voc")
    assert result.exit_code == 0, result.output
    assert (voc_work / "data/split/labeled.txt").read_text() == chosen
    assert (voc_work / "data/split/unlabeled.txt").read_text() == "\n".join(rest)


def test_published_list_with_unknown_id_fails_at_the_split(
    voc_work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert invoke("download", "--out", "data/voc").exit_code == 0
    _publish(
        voc_work,
        monkeypatch,
        {
            "pascal/1/labeled.txt": ["2099_000001"],
            "pascal/1/unlabeled.txt": TRAIN_AUG,
            "pascal/val.txt": VAL,
        },
    )
    result = CliRunner().invoke(app, ["split", "--data", "data/voc"])
    assert result.exit_code == 1
    assert "1 labeled id(s) not in the dataset's train pool" in result.output
    assert "2099_000001" in result.output
    assert not (voc_work / "data/split").exists()


def test_failed_download_leaves_no_root(voc_work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pascal, "SBD_SOURCE", replace(pascal.SBD_SOURCE, md5="0" * 32))
    result = CliRunner().invoke(app, ["download", "--out", "data/voc"])
    assert result.exit_code == 1
    assert "md5 mismatch: expected 00000000000000000000000000000000" in result.output
    assert not (voc_work / "data").exists() or not list((voc_work / "data").iterdir())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # The built-in garments have 11 classes (background and the 10 Fashion-MNIST ones).
        (["dataset=voc"], "model.num_classes=11 but dataset voc has 21 classes"),
        (
            ["dataset=voc", "model.num_classes=21", "evaluate.batch_size=2"],
            "evaluate.batch_size=2: VOC images differ in size, use 1",
        ),
        (
            ["dataset=voc", "model.num_classes=21", "evaluate.batch_size=1", "labeled=1465"],
            "labeled=1465 exceeds the 1464 images a voc classic split can label",
        ),
        (
            [
                "dataset=voc",
                "model.num_classes=21",
                "evaluate.batch_size=1",
                "data.split.source=published",
                "labeled=100",
            ],
            "labeled=100 has no published voc classic list (have: 92, 183, 366, 732, 1464)",
        ),
        (
            ["dataset=cityscapes", "model.num_classes=19", "data.split.family=blended"],
            "data.split.family='blended' exists for voc only, not dataset 'cityscapes'",
        ),
        (["data.split.source=published"], "the built-in dataset has no published lists"),
    ],
)
def test_dataset_params_are_checked(overrides: list[str], message: str) -> None:
    with pytest.raises(ParamsError) as err:
        load_params(ROOT / "params.yaml", overrides)
    assert message in str(err.value)
