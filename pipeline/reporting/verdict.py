"""Command `verdict`: the benchmark grid judged by the rules fixed before any result was seen.

Reads, for every label count × seed of params' `benchmark` section, each run's summary
(`M.json`), test confusions (`M_test.npz`), history (`M_history.csv`) and, for iMAS and
anti-iMAS, the premise sample (`M_premise.csv`). Every comparison is paired within a
(count, seed) cell (same warmup, same seed) and its interval is a Student-t over seeds
(pipeline/reporting/intervals.py). Writes verdict.json (the rules, machine-readable), a paper-style
markdown table and three figures; all are pure functions of the runs, so reruns give the same
bytes. A missing run file is an error naming it unless `--partial`, which judges the complete
cells only and lists the others.
"""

from __future__ import annotations

import csv
import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from pipeline.config.sections import BenchmarkParams
from pipeline.reporting.inputs import ReportInputError, read_json
from pipeline.reporting.intervals import Interval, paired_bootstrap, paired_t

# The thresholds of the rules, fixed before the grid ran (issue 17); points of mIoU.
RULE_COUNT = 92  # rules (a) and (d): the paper's headline count, where ablations run
SSL_ESTIMATE, SSL_LOW = 5.0, 3.0
NOT_WORSE = -1.0
PREMISE_MIN = 0.3
# Table row order and names: SupOnly, mean teacher, the ablations (anti-iMAS last), iMAS.
LABELS = {
    "supervised": "SupOnly",
    "mean_teacher": "Mean teacher",
    "no_loss_weight": "iMAS w/o loss weighting",
    "no_adaptive_intensity": "iMAS w/o adaptive intensity",
    "no_adaptive_cutmix_trigger": "iMAS w/o adaptive CutMix trigger",
    "no_adaptive_cutmix_pairing": "iMAS w/o easiest↔hardest pairing",
    "anti_imas": "anti-iMAS (hardness in place of easiness)",
    "imas": "iMAS",
}
PREMISE_RUNS = ("imas", "anti_imas")  # the runs that compute easiness and log the premise
MISSING = "—"
Cell = tuple[int, int]  # (label count, seed)


@dataclass(frozen=True)
class Run:
    test_miou: float  # the primary number: last EMA teacher (SupOnly: last student) on test
    val_miou: float  # val mIoU of the best epoch: the paper's protocol
    confusions: np.ndarray  # [N, C, C] per test image
    ids: np.ndarray  # [N] test image ids, the same order in every run
    folder: Path
    name: str

    def file(self, suffix: str) -> Path:
        return self.folder / f"{self.name}{suffix}"


@dataclass(frozen=True)
class Grid:
    counts: list[int]  # sorted
    seeds: list[int]  # in params order
    planned: dict[int, list[str]]  # runs per count, in row order
    runs: dict[Cell, dict[str, Run]]  # complete cells only
    missing: list[str]  # "<count>-s<seed>" cells left out by --partial


def label(name: str) -> str:
    return LABELS.get(name, f"iMAS ablation: {name}")


def row_order(names: Sequence[str]) -> list[str]:
    """Known runs in the table's order; unknown ablations after the known ones, before iMAS."""
    order = list(LABELS)
    return sorted(names, key=lambda n: order.index(n) if n in order else order.index("imas") - 0.5)


def run_files(name: str) -> list[str]:
    premise = [f"{name}_premise.csv"] if name in PREMISE_RUNS else []
    return [f"{name}.json", f"{name}_test.npz", f"{name}_history.csv", *premise]


def load_grid(results: Path, grid: BenchmarkParams, partial: bool = False) -> Grid:
    """Every planned run of `grid`; raise ReportInputError naming the first
    missing file, or with `partial` keep only the (count, seed) cells that have all files."""
    counts = sorted(grid.labeled)
    planned = {
        c: row_order([*grid.methods, *(grid.ablations if c in grid.ablation_labeled else [])])
        for c in counts
    }
    runs: dict[Cell, dict[str, Run]] = {}
    missing: list[str] = []
    for count in counts:
        for seed in grid.seeds:
            folder = results / f"{count}-s{seed}"
            files = [folder / f for name in planned[count] for f in run_files(name)]
            absent = [f for f in files if not f.is_file()]
            if absent and not partial:
                raise ReportInputError(f"{absent[0]}: missing run file (--partial skips its cell)")
            if absent:
                missing.append(folder.name)
                continue
            runs[(count, seed)] = {name: read_run(folder, name) for name in planned[count]}
            _same_images(runs[(count, seed)])
    if not runs:
        raise ReportInputError(
            f"{results}: no (count, seed) cell of the grid has all its run files"
        )
    return Grid(counts, list(grid.seeds), planned, runs, missing)


def read_run(folder: Path, name: str) -> Run:
    path = folder / f"{name}.json"
    summary = read_json(path, "train")
    try:
        test, val = float(summary["test_miou"]), float(summary["miou"])
    except (ValueError, KeyError, TypeError) as err:
        raise ReportInputError(
            f"{path}: not a run summary with test_miou and miou ({err})"
        ) from None
    if not (math.isfinite(test) and math.isfinite(val)):
        raise ReportInputError(f"{path}: test_miou={test}, miou={val} must be finite")
    npz = folder / f"{name}_test.npz"
    try:
        with np.load(npz, allow_pickle=False) as data:
            confusions, ids = data["confusions"], data["ids"]
    except (OSError, ValueError, KeyError) as err:
        raise ReportInputError(f"{npz}: not an npz with confusions and ids ({err})") from None
    n = confusions.shape[0] if confusions.ndim == 3 else -1
    if n < 1 or confusions.shape[1] != confusions.shape[2] or ids.shape != (n,):
        raise ReportInputError(
            f"{npz}: need confusions [N, C, C] and N ids, got {confusions.shape}"
        )
    return Run(test, val, confusions, ids, folder, name)


def _same_images(cell: dict[str, Run]) -> None:
    # The scene bootstrap pairs images by index, so every run must list the same test images.
    first = next(iter(cell.values()))
    for run in cell.values():
        if not np.array_equal(run.ids, first.ids):
            raise ReportInputError(f"{run.file('_test.npz')}: test ids differ from {first.name}'s")


def values(g: Grid, count: int, name: str, key: str = "test_miou") -> list[float]:
    """One number of run `name` per complete seed at `count`, in seed order."""
    cells = [g.runs.get((count, s)) for s in g.seeds]
    return [getattr(c[name], key) for c in cells if c is not None and name in c]


def differences(g: Grid, count: int, a: str, b: str) -> list[float]:
    """test mIoU of `a` − `b`, paired per complete seed at `count`."""
    cells = [g.runs.get((count, s)) for s in g.seeds]
    return [c[a].test_miou - c[b].test_miou for c in cells if c and a in c and b in c]


def interval(xs: Sequence[float]) -> Interval | None:
    return paired_t(xs) if xs else None


def compare(iv: Interval | None) -> str:
    """Rule (c)'s word for an interval of iMAS − mean teacher."""
    if iv is None:
        return "undecided"
    if iv.low > 0:
        return "better"
    if iv.low > NOT_WORSE:
        return "not worse"
    return "worse" if iv.high < 0 else "undecided"


def read_premise(path: Path) -> np.ndarray:
    """`[K, 3]` rows of (epoch, easiness, pseudo-label mIoU) of one premise file."""
    try:
        with path.open(newline="") as fh:
            rows = [
                (int(r["epoch"]), float(r["easiness"]), float(r["pseudo_miou"]))
                for r in csv.DictReader(fh)
            ]
    except (ValueError, KeyError, TypeError) as err:
        raise ReportInputError(
            f"{path}: need columns epoch,id,easiness,pseudo_miou ({err})"
        ) from None
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def premise_correlations(path: Path) -> tuple[list[float], int]:
    """Spearman(easiness, pseudo_miou) per epoch of one premise file, and the number of epochs
    skipped because a side is constant or has under two images (no ranking to correlate)."""
    rows = read_premise(path)
    rhos: list[float] = []
    skipped = 0
    for epoch in np.unique(rows[:, 0]):
        e, q = rows[rows[:, 0] == epoch, 1], rows[rows[:, 0] == epoch, 2]
        if len(e) < 2 or np.ptp(e) == 0 or np.ptp(q) == 0:
            skipped += 1
            continue
        rhos.append(float(stats.spearmanr(e, q)[0]))
    return rhos, skipped


@dataclass(frozen=True)
class Verdict:
    ssl: Interval | None
    means: dict[str, dict[int, float]]  # rule (b): method → count → mean test mIoU
    monotone: bool
    pooled: Interval | None  # rule (c)
    per_count: dict[int, Interval | None]
    anti: Interval | None
    spearman: float | None
    groups: int  # (run, epoch) groups averaged for rule (e)
    skipped: int

    @property
    def ssl_met(self) -> bool:
        return self.ssl is not None and self.ssl.estimate >= SSL_ESTIMATE and self.ssl.low > SSL_LOW

    @property
    def anti_met(self) -> bool:
        return self.anti is not None and self.anti.high < 0

    @property
    def premise_met(self) -> bool:
        return self.spearman is not None and self.spearman > PREMISE_MIN


def judge(g: Grid, methods: Sequence[str]) -> Verdict:
    means = {
        m: {c: statistics.fmean(v) for c in g.counts if (v := values(g, c, m))} for m in methods
    }
    # A count without any complete cell cannot show a rise, so the rule is not met then.
    monotone = all(
        len(by) == len(g.counts) and all(a < b for a, b in itertools.pairwise(by.values()))
        for by in means.values()
    )
    per_count = {c: interval(differences(g, c, "imas", "mean_teacher")) for c in g.counts}
    pooled = [d for c in g.counts for d in differences(g, c, "imas", "mean_teacher")]
    rhos: list[float] = []
    skipped = 0
    for (_, _), cell in sorted(g.runs.items()):
        if "imas" in cell:
            found, lost = premise_correlations(cell["imas"].file("_premise.csv"))
            rhos, skipped = rhos + found, skipped + lost
    return Verdict(
        ssl=interval(differences(g, RULE_COUNT, "imas", "supervised")),
        means=means,
        monotone=monotone,
        pooled=interval(pooled),
        per_count=per_count,
        anti=interval(differences(g, RULE_COUNT, "anti_imas", "imas")),
        spearman=statistics.fmean(rhos) if rhos else None,
        groups=len(rhos),
        skipped=skipped,
    )


def scene_bootstrap(g: Grid) -> dict[int, dict[int, Interval]]:
    """iMAS − mean teacher per cell with a scene-resampled interval: test-set sampling noise,
    to read beside the seed-to-seed noise of the t-intervals."""
    out: dict[int, dict[int, Interval]] = {}
    for (count, seed), cell in sorted(g.runs.items()):
        if "imas" in cell and "mean_teacher" in cell:
            a, b = cell["imas"], cell["mean_teacher"]
            try:
                iv = paired_bootstrap(a.confusions, b.confusions, resamples=2000, seed=0)
            except ValueError as err:
                raise ReportInputError(f"{a.file('_test.npz')}: {err}") from None
            out.setdefault(count, {})[seed] = iv
    return out


def num(x: float | None) -> float | None:
    """4 decimals for JSON; None for a missing or infinite value (JSON has no infinity)."""
    return round(x, 4) if x is not None and math.isfinite(x) else None


def interval_json(iv: Interval | None) -> dict[str, Any]:
    if iv is None:
        return {"estimate": None, "ci95": [None, None]}
    return {"estimate": num(iv.estimate), "ci95": [num(iv.low), num(iv.high)]}


def verdict_json(g: Grid, v: Verdict, boot: dict[int, dict[int, Interval]]) -> dict[str, Any]:
    """The verdict's fixed shape; extras only under "details". A seed whose cell is missing
    (`--partial`) is null in "grid", so each list stays aligned with "seeds"."""

    def per_seed(count: int, name: str, key: str = "test_miou") -> list[float | None]:
        cells = [g.runs.get((count, s)) for s in g.seeds]
        return [num(getattr(c[name], key)) if c else None for c in cells]

    details = {
        "missing_cells": g.missing,
        "monotone_means": {m: {str(c): num(x) for c, x in by.items()} for m, by in v.means.items()},
        "imas_vs_mean_teacher_per_count": {
            str(c): interval_json(i) for c, i in v.per_count.items()
        },
        "val_best_means": {
            str(c): {
                n: num(statistics.fmean(xs)) for n in names if (xs := values(g, c, n, "val_miou"))
            }
            for c, names in g.planned.items()
        },
        "premise_groups": v.groups,
        "premise_skipped_groups": v.skipped,
        "scene_bootstrap_imas_vs_mean_teacher": {
            str(c): {str(s): interval_json(i) for s, i in by.items()} for c, by in boot.items()
        },
    }
    return {
        "grid": {str(c): {n: per_seed(c, n) for n in names} for c, names in g.planned.items()},
        "seeds": g.seeds,
        "rules": {
            "ssl_gain": {**interval_json(v.ssl), "met": v.ssl_met},
            "monotone": {"met": v.monotone},
            "imas_vs_mean_teacher": {**interval_json(v.pooled), "verdict": compare(v.pooled)},
            "anti_imas": {**interval_json(v.anti), "met": v.anti_met},
            "premise": {"spearman": num(v.spearman), "met": v.premise_met},
        },
        "details": details,
    }
