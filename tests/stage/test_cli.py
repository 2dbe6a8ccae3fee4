"""Every stage command, in process, on tiny params; and bad params rejected before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from support.params import tiny_params
from typer.testing import CliRunner

from pipeline.cli import app

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["download", "pretrain", "split", "warmup", "train", "ablate", "evaluate", "report"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("cli")
    raw = tiny_params()
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    return work


def invoke(work: Path, monkeypatch: pytest.MonkeyPatch, *args: str):
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_listing_summaries_are_the_commands_docstrings() -> None:
    from pipeline.cli import STAGES as ENTRIES
    from pipeline.cli import command_for

    assert set(STAGES) <= set(ENTRIES)
    for name, entry in ENTRIES.items():
        help_text = command_for(name).help or ""
        first_paragraph = " ".join(help_text.split("\n\n")[0].split())
        assert entry.summary == first_paragraph, name


def test_help_and_light_stages_do_not_import_torch() -> None:
    """`imas --help` prints from the summaries, and the stages that need no torch import none:
    a few seconds per command that each DVC run of the pipeline pays."""
    probe = (
        "import sys\n"
        "from pipeline.cli import app\n"
        "try:\n"
        "    app(['--help'])\n"
        "except SystemExit as stop:\n"
        "    assert stop.code == 0, stop.code\n"
        "import pipeline.stages.download, pipeline.stages.split\n"
        "import pipeline.reporting.report, pipeline.reporting.verdict\n"
        "import pipeline.control.grid, pipeline.reporting.plots\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "split" in out.stdout and out.stdout.splitlines()[-1] == "[]", out.stdout[-2000:]


def test_an_unknown_command_is_refused_by_name() -> None:
    result = CliRunner().invoke(app, ["nosuch"])
    assert result.exit_code == 2
    assert "No such command 'nosuch'" in result.output


def test_help_lists_every_stage() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for stage in STAGES:
        assert stage in result.output
        sub = CliRunner().invoke(app, [stage, "--help"])
        assert sub.exit_code == 0 and "--params" in sub.output


def test_stages_in_order(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every stage at its default paths, which chain: the dataset root is data/garments even for
    # the tiny digit scenes the stage tests run on.
    result = invoke(workdir, monkeypatch, "download")
    assert result.exit_code == 0, result.output
    assert len(list((workdir / "data/garments/JPEGImages").iterdir())) == 22
    assert json.loads((workdir / "data/garments/classes.json").read_text())[1] == "digit 0"
    # Garment classification has nothing to learn from digit scenes: refused, naming why, and
    # nothing written.
    section = "pretrain={crop: 16, images: 10, epochs: 1, batch_size: 5, lr: 0.1, " + (
        "weight_decay: 0.0, seed: 0}"
    )
    refused = invoke(workdir, monkeypatch, "pretrain", "--set", section)
    assert refused.exit_code == 2 and "dataset: garments" in refused.output
    assert not (workdir / "models/pretrained.pt").exists()
    # pretrain: null (the digit scenes here; the paper presets' ImageNet weights): an empty
    # placeholder keeps the pipeline one graph, and no run loads it (model.pretrained: null).
    skipped = invoke(workdir, monkeypatch, "pretrain")
    assert skipped.exit_code == 0, skipped.output
    assert torch.load(workdir / "models/pretrained.pt", weights_only=True) == {}
    assert json.loads((workdir / "metrics/pretrain.json").read_text()) == {"images": 0}

    assert invoke(workdir, monkeypatch, "split").exit_code == 0
    assert (workdir / "data/split/labeled.txt").read_text().count("\n") == 3  # 4 ids

    assert invoke(workdir, monkeypatch, "warmup").exit_code == 0
    warm = json.loads((workdir / "metrics/warmup.json").read_text())
    assert warm["method"] == "supervised" and warm["iterations"] == 2

    hardness = ("--hardness", "metrics/train_hardness.csv")  # the report's histogram reads it
    assert invoke(workdir, monkeypatch, "train", *hardness).exit_code == 0
    assert json.loads((workdir / "metrics/train.json").read_text())["method"] == "imas"

    # SupOnly: the warmup continued without the unlabeled loss, as long as iMAS.
    assert invoke(workdir, monkeypatch, "ablate", "supervised").exit_code == 0
    sup = json.loads((workdir / "metrics/ablate/supervised.json").read_text())
    assert sup["method"] == "supervised" and sup["iterations"] == 2
    assert invoke(workdir, monkeypatch, "ablate", "mean_teacher").exit_code == 0
    assert (workdir / "models/ablate/mean_teacher.pt").is_file()
    missing = invoke(workdir, monkeypatch, "ablate", "no_such")
    assert missing.exit_code == 2 and "no_such" in missing.output

    # Its default SupOnly checkpoint is the `supervised` ablation's.
    assert invoke(workdir, monkeypatch, "evaluate").exit_code == 0
    assert (workdir / "reports/figures/qualitative.png").is_file()
    scores = json.loads((workdir / "metrics/evaluate.json").read_text())
    assert {"supervised", "imas_teacher_best"} <= set(scores) and "warmup" not in scores

    result = invoke(workdir, monkeypatch, "report")
    assert result.exit_code == 0, result.output
    md = (workdir / "reports/results.md").read_text()
    assert "iMAS" in md and "| warmup (first part of the schedule) |" in md
    metrics = json.loads((workdir / "reports/metrics.json").read_text())
    assert metrics["supervised"] == round(sup["miou"], 2)


@pytest.mark.parametrize("stage", STAGES)
def test_bad_params_exit_nonzero_and_write_nothing(
    stage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_raw: dict
) -> None:
    raw = tiny_raw
    raw["train"]["tau"] = 1.7
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    args = [stage, "mean_teacher"] if stage == "ablate" else [stage]
    result = invoke(tmp_path, monkeypatch, *args)
    assert result.exit_code == 2
    assert "train.tau" in result.output and "1.7" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_set_overrides_reach_the_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_raw: dict
) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_raw))
    assert invoke(tmp_path, monkeypatch, "download").exit_code == 0
    result = invoke(tmp_path, monkeypatch, "split", "--set", "labeled=5", "--set", "seed=2")
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "data/split/labeled.txt").read_text().split("\n")) == 5
    bad = invoke(tmp_path, monkeypatch, "split", "--set", "labeled=99")
    assert bad.exit_code == 2 and "labeled=99" in bad.output
