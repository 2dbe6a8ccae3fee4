"""The benchmark verdict: each rule on hand-computed inputs, the JSON shape, missing files,
--partial, one seed (null intervals), byte-identical reruns, and the command through Typer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from pipeline.config.params import load_params
from pipeline.reporting.intervals import Interval
from pipeline.reporting.verdict import compare, judge, load_grid, premise_correlations
from pipeline.stages.verdict import command

ROOT = Path(__file__).resolve().parents[2]
ABLATIONS = {
    "anti_imas": {"adaptive": {"signal": "hardness"}},
    "no_loss_weight": {"adaptive": {"loss_weight": False}},
}
# test mIoU (points) per (count, seed); chosen so every difference is exact in binary.
RUNS = {
    (92, 0): {"supervised": 40.0, "mean_teacher": 44.0, "imas": 46.0, "anti_imas": 43.0},
    (92, 1): {"supervised": 41.0, "mean_teacher": 46.0, "imas": 49.0, "anti_imas": 46.0},
    (366, 0): {"supervised": 50.0, "mean_teacher": 54.0, "imas": 55.0},
    (366, 1): {"supervised": 52.0, "mean_teacher": 55.0, "imas": 57.0},
    (1464, 0): {"supervised": 60.0, "mean_teacher": 63.0, "imas": 64.0},
    (1464, 1): {"supervised": 61.0, "mean_teacher": 64.0, "imas": 66.0},
}
for cell in ((92, 0), (92, 1)):
    RUNS[cell]["no_loss_weight"] = RUNS[cell]["imas"] - 1.0
# Per test image (N = 6, C = 3): iMAS perfect; every other run confuses half of class 1 with 2.
PERFECT = np.diag([10, 10, 10])
CONFUSED = np.array([[10, 0, 0], [0, 5, 5], [0, 0, 10]])


def write_params(root: Path, seeds: list[int]) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["ablations"].update(ABLATIONS)
    raw["benchmark"] = {
        "labeled": [92, 366, 1464],
        "seeds": seeds,
        "methods": ["supervised", "mean_teacher", "imas"],
        "ablations": list(ABLATIONS),
        "ablation_labeled": [92],
        "published": None,
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    load_params(path)  # the section must be one the project's params accept
    return path


def write_run(folder: Path, name: str, test: float, sign: float = 1.0) -> None:
    summary = {"method": name, "miou": test + 1.0, "best_epoch": 3, "test_miou": test}
    (folder / f"{name}.json").write_text(json.dumps(summary))
    stack = np.stack([PERFECT if name == "imas" else CONFUSED] * 6).astype(np.uint16)
    np.savez_compressed(folder / f"{name}_test.npz", confusions=stack, ids=np.array(list("abcdef")))
    easiness = {0: 0.6, 1: 0.8, 2: 0.9} if name in ("imas", "anti_imas") else {}
    header = "epoch,loss,loss_x,loss_u,easiness,confident_ratio,cutmix,lr,miou_student,"
    lines = [header + "miou_teacher,premise_spearman"]
    lines += [
        f"{e},1.0,0.5,0.5,{easiness.get(e, '')},0.5,0.5,0.01,{test},{test}," for e in range(3)
    ]
    (folder / f"{name}_history.csv").write_text("\n".join(lines) + "\n")
    if name in ("imas", "anti_imas"):
        # Five images per epoch; pseudo-label quality rises (sign 1) or falls with easiness.
        rows = ["epoch,id,easiness,pseudo_miou"]
        rows += [
            f"{ep},x{i},{0.5 + 0.1 * i},{0.5 + sign * 0.05 * i}" for ep in (0, 2) for i in range(5)
        ]
        (folder / f"{name}_premise.csv").write_text("\n".join(rows) + "\n")


def write_grid(root: Path, runs: dict = RUNS, sign: float = 1.0) -> Path:
    for (count, seed), by_name in runs.items():
        folder = root / "results" / f"{count}-s{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, test in by_name.items():
            write_run(folder, name, test, sign)
    return root / "results"


def verdict(tmp_path: Path, runs: dict = RUNS, seeds: list[int] | None = None, sign: float = 1.0):
    params = load_params(write_params(tmp_path, seeds or [0, 1]))
    g = load_grid(write_grid(tmp_path, runs, sign), params.benchmark)
    return g, judge(g, params.benchmark.methods)


def run_command(tmp_path: Path, *extra: str, seeds: list[int] | None = None):
    app = typer.Typer()
    app.command()(command)
    params = write_params(tmp_path, seeds or [0, 1])
    args = ["--results", str(tmp_path / "results"), "--params", str(params)]
    args += ["--out", str(tmp_path / "out" / "verdict.json")]
    args += ["--markdown", str(tmp_path / "out" / "paper_table.md")]
    args += ["--figures", str(tmp_path / "out" / "figures"), *extra]
    return CliRunner().invoke(app, args)


def test_rules_on_hand_computed_grid(tmp_path: Path) -> None:
    _, v = verdict(tmp_path)
    # (a) d = [46-40, 49-41] = [6, 8]: mean 7, sd √2, se √2/√2 = 1, t(0.975, df 1) = 12.7062:
    # 7 ± 12.7062 = [-5.7062, 19.7062]; the mean passes 5 but the low bound is not > 3.
    assert v.ssl is not None
    assert (v.ssl.estimate, v.ssl.low, v.ssl.high) == pytest.approx((7, -5.7062, 19.7062), abs=1e-4)
    assert not v.ssl_met
    # (b) means SupOnly 40.5 < 51 < 60.5, mean teacher 45 < 54.5 < 63.5, iMAS 47.5 < 56 < 65.
    assert v.means["supervised"] == {92: 40.5, 366: 51.0, 1464: 60.5} and v.monotone
    # (c) d = [2, 3, 1, 2, 1, 2]: mean 11/6 = 1.8333, sd = √(17/30) = 0.7528, se = 0.3073,
    # t(0.975, 5) = 2.5706: half 0.7900, [1.0433, 2.6233]: low > 0 → better.
    assert v.pooled is not None
    assert (v.pooled.low, v.pooled.high) == pytest.approx((1.0433, 2.6233), abs=1e-4)
    assert compare(v.pooled) == "better"
    # (d) anti − iMAS = [-3, -3]: no spread, the interval is [-3, -3], high < 0 → met.
    assert v.anti == Interval(-3.0, -3.0, -3.0, 0.95) and v.anti_met
    # (e) easiness and pseudo-label mIoU rank alike in all 6 runs × 2 epochs.
    assert v.spearman == pytest.approx(1.0) and v.groups == 12 and v.premise_met


def test_monotone_fails_when_one_mean_drops(tmp_path: Path) -> None:
    runs = {cell: dict(by) for cell, by in RUNS.items()}
    runs[(1464, 0)]["supervised"], runs[(1464, 1)]["supervised"] = 50.0, 51.0  # mean 50.5 < 51
    _, v = verdict(tmp_path, runs)
    assert not v.monotone


@pytest.mark.parametrize(
    ("gaps", "word"),
    [
        ([1.0, 1.0], "better"),  # [1, 1]: low > 0
        ([-0.5, -0.5], "not worse"),  # [-0.5, -0.5]: low > -1
        ([-2.0, -2.0], "worse"),  # [-2, -2]: high < 0
        # [-3, 3] × 3 counts: mean 0, sd √(54/5) = 3.2863, se 1.3416, half 2.5706 · 1.3416
        # = 3.4488: [-3.4488, 3.4488] crosses both -1 and 0.
        ([-3.0, 3.0], "undecided"),
    ],
)
def test_imas_vs_mean_teacher_words(tmp_path: Path, gaps: list[float], word: str) -> None:
    runs = {cell: dict(by) for cell, by in RUNS.items()}
    for (_, seed), by in runs.items():
        by["mean_teacher"] = by["imas"] - gaps[seed]
    _, v = verdict(tmp_path, runs)
    assert compare(v.pooled) == word
    if word == "undecided":
        assert v.pooled is not None and v.pooled.high == pytest.approx(3.4488, abs=1e-4)


def test_anti_imas_not_met_when_the_interval_reaches_zero(tmp_path: Path) -> None:
    runs = {cell: dict(by) for cell, by in RUNS.items()}
    runs[(92, 1)]["anti_imas"] = 44.5  # d = [-3, -4.5]: mean -3.75, half 12.7062 · 0.75 = 9.53
    _, v = verdict(tmp_path, runs)
    assert v.anti is not None and v.anti.high == pytest.approx(5.7797, abs=1e-4)
    assert not v.anti_met


def test_premise_spearman_reversed_and_constant(tmp_path: Path) -> None:
    _, v = verdict(tmp_path, sign=-1.0)
    assert v.spearman == pytest.approx(-1.0) and not v.premise_met
    path = tmp_path / "p.csv"
    path.write_text("epoch,id,easiness,pseudo_miou\n0,a,0.1,0.3\n0,b,0.2,0.3\n1,a,0.1,0.2\n")
    assert premise_correlations(path) == ([], 2)  # a constant side, then a single image


def test_json_markdown_figures_and_byte_identical_rerun(tmp_path: Path) -> None:
    write_grid(tmp_path)
    first = run_command(tmp_path)
    assert first.exit_code == 0, first.output
    assert "ssl_gain: +7.00 [-5.71, +19.71]: NOT MET" in first.output
    assert "imas_vs_mean_teacher: +1.83 [+1.04, +2.62]: better" in first.output
    out = tmp_path / "out"
    files = [out / "verdict.json", out / "paper_table.md"]
    files += [out / "figures" / f"{n}.png" for n in ("forest", "premise", "easiness")]
    before = [f.read_bytes() for f in files]
    data = json.loads(before[0])
    assert list(data) == ["details", "grid", "rules", "seeds"]
    assert data["seeds"] == [0, 1]
    assert data["grid"]["92"]["no_loss_weight"] == [45.0, 48.0]
    assert set(data["grid"]["366"]) == {"supervised", "mean_teacher", "imas"}
    assert data["rules"]["ssl_gain"] == {"ci95": [-5.7062, 19.7062], "estimate": 7.0, "met": False}
    assert data["rules"]["monotone"] == {"met": True}
    assert data["rules"]["anti_imas"] == {"ci95": [-3.0, -3.0], "estimate": -3.0, "met": True}
    assert data["rules"]["premise"] == {"met": True, "spearman": 1.0}
    # Every image alike: mIoU 100 vs (1 + 0.5 + 2/3) / 3 = 72.2222, in every resample too.
    boot = data["details"]["scene_bootstrap_imas_vs_mean_teacher"]["92"]["0"]
    assert boot == {"ci95": [27.7778, 27.7778], "estimate": 27.7778}
    text = before[1].decode()
    # SupOnly at 92: [40, 41]: mean 40.5, se 0.5, half 6.3531.
    assert "| SupOnly | 40.50 [34.15, 46.85] |" in text
    assert "| iMAS w/o loss weighting | 46.50 [27.44, 65.56] | — | — |" in text
    assert "| iMAS − SupOnly | +7.00 [-5.71, +19.71] |" in text
    assert "- 92 labels: seed 0 +27.78 [+27.78, +27.78]; seed 1 +27.78" in text
    assert "| SupOnly | 41.50 | 52.00 | 61.50 |" in text  # val-best means (miou = test + 1)
    again = run_command(tmp_path)
    assert again.exit_code == 0, again.output
    assert [f.read_bytes() for f in files] == before


def test_missing_file_is_named_and_nothing_written(tmp_path: Path) -> None:
    write_grid(tmp_path)
    gone = tmp_path / "results" / "366-s1" / "mean_teacher_test.npz"
    gone.unlink()
    result = run_command(tmp_path)
    assert result.exit_code == 1
    assert f"error: {gone}: missing run file" in result.output
    assert not (tmp_path / "out").exists()


def test_partial_skips_the_incomplete_cell(tmp_path: Path) -> None:
    write_grid(tmp_path)
    (tmp_path / "results" / "366-s1" / "imas_premise.csv").unlink()
    result = run_command(tmp_path, "--partial")
    assert result.exit_code == 0, result.output
    assert "partial grid: missing cells 366-s1" in result.output
    data = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert data["details"]["missing_cells"] == ["366-s1"]
    assert data["grid"]["366"]["imas"] == [55.0, None]
    # (c) loses the pair 366-s1: d = [2, 3, 1, 1, 2], mean 1.8.
    assert data["rules"]["imas_vs_mean_teacher"]["estimate"] == 1.8
    assert (
        "Partial grid: the cells 366-s1 are incomplete"
        in (tmp_path / "out" / "paper_table.md").read_text()
    )


def test_one_seed_gives_null_intervals(tmp_path: Path) -> None:
    write_grid(tmp_path, {cell: by for cell, by in RUNS.items() if cell[1] == 0})
    result = run_command(tmp_path, seeds=[0])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out" / "verdict.json").read_text()
    assert "Infinity" not in text
    rules = json.loads(text)["rules"]
    assert rules["ssl_gain"] == {"ci95": [None, None], "estimate": 6.0, "met": False}
    # (c) pools the three counts, so it still has an interval: d = [2, 1, 1], mean 4/3,
    # se 0.3333, half 4.3027 · 0.3333 = 1.4342: [-0.1009, 2.7676] → not worse.
    pooled = rules["imas_vs_mean_teacher"]
    assert pooled == {"ci95": [-0.1009, 2.7676], "estimate": 1.3333, "verdict": "not worse"}
    assert rules["anti_imas"]["met"] is False
    assert "With one seed" in (tmp_path / "out" / "paper_table.md").read_text()


def test_help_describes_every_option() -> None:
    app = typer.Typer()
    app.command()(command)
    text = CliRunner().invoke(app, ["--help"]).output
    for option in ("--results", "--params", "--out", "--markdown", "--figures", "--partial"):
        assert option in text
    assert "Judge the benchmark grid" in text
