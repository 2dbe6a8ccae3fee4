"""Invalid params through the `imas` command, in a project whose every stage has run: each stage
exits 2 with the field and the value named, before any work, and no file or folder of the
project (outputs, MLflow store, split lists) is written, replaced or touched."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.project import STAGES, build, snapshot
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import presets


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("project"))


def _set(section: str | None, **values: Any) -> Callable[[dict], None]:
    def mutate(raw: dict) -> None:
        (raw[section] if section else raw).update(values)

    return mutate


def _pop(section: str, key: str) -> Callable[[dict], None]:
    return lambda raw: raw[section].pop(key)


# (mutation of the project's params, texts the error must contain: the field and the value)
INVALID = {
    "unknown key": (_set("train", tua=0.9), ["train.tua", "0.9"]),
    "wrong type": (_set("train", epochs="many"), ["train.epochs", "'many'"]),
    "wrong type (list)": (_set("aug", crop=[64]), ["aug.crop", "[64]"]),
    "tau above 1": (_set("train", tau=1.5), ["train.tau", "1.5"]),
    "tau 0": (_set("train", tau=0), ["train.tau", "got 0"]),
    "labeled 0": (_set(None, labeled=0), ["labeled", "got 0"]),
    "labeled negative": (_set(None, labeled=-3), ["labeled", "got -3"]),
    # The tiny pool has 16 scenes: 16 labeled would leave nothing unlabeled.
    "labeled = pool": (_set(None, labeled=16), ["labeled=16", "16-scene train pool"]),
    "labeled > pool": (_set(None, labeled=5000), ["labeled=5000", "16-scene train pool"]),
    "missing field": (_pop("model", "stem"), ["model.stem", "Field required"]),
    "unknown preset": (_set(None, preset="voc_r18"), ["preset 'voc_r18' is not one of"]),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_params_stop_every_stage_before_any_work(
    case: str, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mutate, needles = INVALID[case]
    raw = yaml.safe_load((project / "params.yaml").read_text())
    mutate(raw)
    bad = tmp_path / "params.yaml"  # outside the project: the project itself must not change
    bad.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    before = snapshot(project)
    for stage, args in STAGES.items():
        result = CliRunner().invoke(app, [*args, "--params", str(bad)], catch_exceptions=False)
        assert result.exit_code == 2, (stage, result.output)
        for needle in needles:
            assert needle in result.output, (stage, needle, result.output)
    assert snapshot(project) == before


def test_a_preset_missing_fields_changes_nothing(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A preset overlay that switches to a ResNet but leaves out the fields a ResNet needs
    (stem, multi-grid): `imas preset` names the field and value and rewrites nothing; the
    same holds for a params file that lacks a key the preset sets."""
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "incomplete.yaml").write_text("model:\n  backbone: resnet50\n")
    shutil.copy(presets.PRESET_DIR / "voc_classic_r101.yaml", folder)
    monkeypatch.setattr(presets, "PRESET_DIR", folder)
    monkeypatch.setitem(presets.PRESETS, "incomplete", "voc_classic")
    monkeypatch.chdir(project)
    before = snapshot(project)
    result = CliRunner().invoke(app, ["preset", "incomplete"])
    assert result.exit_code == 2, result.output
    assert "model.stem" in result.output and "resnet50" in result.output
    # params.yaml without `model.stem`: the preset's key has nowhere to go.
    raw = yaml.safe_load((project / "params.yaml").read_text())
    del raw["model"]["stem"]
    outside = tmp_path / "params.yaml"
    outside.write_text(yaml.safe_dump(raw))
    written = outside.read_bytes()
    result = CliRunner().invoke(app, ["preset", "voc_classic_r101", "--params", str(outside)])
    assert result.exit_code == 2, result.output
    assert "preset key model.stem is not in params.yaml" in result.output
    assert outside.read_bytes() == written
    assert snapshot(project) == before
