"""The verdict's figures: a forest plot of the paired differences, the premise scatter and the
per-seed easiness curves against the authors' reported band.

Drawn as the report's figures are (pipeline/reporting/plots.py: Agg canvas, default style, fixed
size and dpi, no "Software" metadata, atomic write), so the same runs give byte-identical PNGs.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes

from pipeline.reporting.inputs import ReportInputError
from pipeline.reporting.intervals import Interval
from pipeline.reporting.plots import _color, _figure, _save
from pipeline.reporting.verdict import (
    NOT_WORSE,
    SSL_ESTIMATE,
    Grid,
    Verdict,
    differences,
    interval,
    label,
    read_premise,
)

# No display: the command runs in DVC stages and CI (plots.py draws on Agg canvases anyway).
matplotlib.use("Agg")

BASELINES = ("supervised", "mean_teacher", "imas")
COMPARISONS = [("imas", "supervised"), ("imas", "mean_teacher"), ("mean_teacher", "supervised")]
_BAND = "#1b9e77"
Curves = dict[int, dict[int, tuple[np.ndarray, np.ndarray]]]  # count → seed → (epochs, ē)


@dataclass(frozen=True)
class FigureData:
    forest: list[tuple[str, Interval]]
    premise: np.ndarray  # [K, 3]: epoch, easiness, pseudo-label mIoU
    premise_cell: str
    spearman: float | None
    easiness: Curves


def forest_rows(g: Grid) -> list[tuple[str, Interval]]:
    """Each comparison at every count and pooled over counts; then anti-iMAS and each ablation
    against iMAS where they ran. Comparisons without any complete cell are left out."""
    rows: list[tuple[str, Interval | None]] = []
    for a, b in COMPARISONS:
        name = f"{label(a)} − {label(b).replace('Mean', 'mean')}"
        rows += [(f"{name}, {c} labels", interval(differences(g, c, a, b))) for c in g.counts]
        pooled = [d for c in g.counts for d in differences(g, c, a, b)]
        rows.append((f"{name}, all counts pooled", interval(pooled)))
    for c in g.counts:
        ablations = sorted(
            (n for n in g.planned[c] if n not in BASELINES), key=lambda n: n != "anti_imas"
        )
        rows += [
            (f"{label(n)} − iMAS, {c} labels", interval(differences(g, c, n, "imas")))
            for n in ablations
        ]
    return [(name, iv) for name, iv in rows if iv is not None]


def read_curve(path: Path, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and values of `column` of a history CSV where the cell is filled."""
    try:
        with path.open(newline="") as fh:
            pairs = [
                (int(r["epoch"]), float(r[column])) for r in csv.DictReader(fh) if r.get(column)
            ]
    except (ValueError, KeyError, TypeError) as err:
        raise ReportInputError(f"{path}: need columns epoch and {column} ({err})") from None
    arr = np.array(pairs, dtype=np.float64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def figure_data(g: Grid, v: Verdict) -> FigureData:
    """Everything the figures show, read before any output is written (a bad file is an error)."""
    cells = [(c, s) for c in g.counts for s in g.seeds if "imas" in g.runs.get((c, s), {})]
    points, where = np.zeros((0, 3)), "no iMAS run"
    if cells:  # the lowest count's first seed: the paper's headline setting
        points = read_premise(g.runs[cells[0]]["imas"].file("_premise.csv"))
        where = "{}-s{}".format(*cells[0])
    curves: Curves = {c: {} for c in g.counts}
    for c, s in cells:
        curves[c][s] = read_curve(g.runs[(c, s)]["imas"].file("_history.csv"), "easiness")
    return FigureData(forest_rows(g), points, where, v.spearman, curves)


def forest(path: Path, rows: Sequence[tuple[str, Interval]]) -> None:
    """Point = mean paired difference, bar = 95 % t-interval; an unbounded side (one seed)
    runs to the edge and ends in an arrow. Lines at 0 and at the thresholds −1 and +5."""
    finite = [x for _, iv in rows for x in (iv.estimate, iv.low, iv.high) if math.isfinite(x)]
    lo, hi = min([*finite, NOT_WORSE, 0.0]), max([*finite, SSL_ESTIMATE])
    pad = 0.06 * (hi - lo)
    left, right = lo - pad, hi + pad
    height = 0.3 * len(rows) + 1.4
    with _figure(10.0, height, layout="constrained") as fig:
        ax = fig.subplots()
        ys = np.arange(len(rows))[::-1]
        for y, (_, iv) in zip(ys, rows, strict=True):
            ax.hlines(y, max(iv.low, left), min(iv.high, right), color="#444444", lw=1.8)
            ax.plot(iv.estimate, y, "o", color="#d95f02", ms=5)
            if math.isinf(iv.low):
                ax.plot(left, y, "<", color="#444444", ms=6)
            if math.isinf(iv.high):
                ax.plot(right, y, ">", color="#444444", ms=6)
        ax.axvline(0.0, color="black", lw=1)
        ax.axvline(NOT_WORSE, color="#7570b3", ls="--", lw=1, label="−1: not worse (rule c)")
        ax.axvline(SSL_ESTIMATE, color=_BAND, ls="--", lw=1, label="+5: SSL gain (rule a)")
        ax.set_yticks(ys, [name for name, _ in rows], fontsize=8)
        ax.set_xlim(left, right)
        ax.set_ylim(-0.8, len(rows) - 0.2)
        ax.set_xlabel("difference in test mIoU (points): mean over seeds, 95 % t-interval")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        _save(fig, path)


def premise_scatter(path: Path, points: np.ndarray, cell: str, spearman: float | None) -> None:
    with _figure(6.5, 5.0, layout="constrained") as fig:
        ax = fig.subplots()
        if len(points):
            dots = ax.scatter(points[:, 1], points[:, 2], c=points[:, 0], cmap="viridis", s=10)
            fig.colorbar(dots, ax=ax, label="epoch")
        rho = "—" if spearman is None else f"{spearman:.3f}"
        ax.set_title(
            f"iMAS {cell}: easiness vs pseudo-label quality\n"
            f"Spearman per run and epoch, mean over the grid's iMAS runs: {rho}"
        )
        ax.set_xlabel("easiness e = 1 − γ")
        ax.set_ylabel("pseudo-label mIoU")
        _save(fig, path)


def _authors_band(ax: Axes, first: float, last: float) -> None:
    # The easiness the iMAS authors report: ~0.57–0.67 at first, ≥ 0.85 by a third of
    # training, 0.89–0.94 at the end; our curves should fall in it if training behaves alike.
    half = max(0.5, 0.02 * (last - first))
    third = first + (last - first) / 3
    bands = [
        ((first - half, first + half), 0.57, 0.67, 0.35, "authors: 0.57–0.67 at first"),
        ((third, last + half), 0.85, 1.0, 0.12, "≥ 0.85 from a third of training"),
        ((last - half, last + half), 0.89, 0.94, 0.45, "0.89–0.94 at the end"),
    ]
    for xs, low, high, alpha, text in bands:
        ax.fill_between(xs, low, high, color=_BAND, alpha=alpha, lw=0, label=text)


def easiness_panels(path: Path, curves: Curves) -> None:
    """One panel per label count, one line per seed of iMAS's mean easiness per epoch."""
    counts = list(curves)
    lowest = min(
        [0.4, *(float(y.min()) - 0.02 for by in curves.values() for _, y in by.values() if y.size)]
    )
    with _figure(4.0 * len(counts) + 0.5, 4.0, layout="constrained") as fig:
        axes = fig.subplots(1, len(counts), squeeze=False, sharey=True)[0]
        for ax, count in zip(axes, counts, strict=True):
            epochs = np.concatenate([e for e, _ in curves[count].values()] or [np.zeros(0)])
            if epochs.size:
                _authors_band(ax, float(epochs.min()), float(epochs.max()))
            else:
                ax.text(0.5, 0.5, "no easiness logged", ha="center", transform=ax.transAxes)
            for i, (seed, (e, y)) in enumerate(curves[count].items()):
                ax.plot(e, y, marker=".", color=_color(i), label=f"seed {seed}")
            ax.set_title(f"{count} labels")
            ax.set_xlabel("epoch")
            ax.set_ylim(lowest, 1.0)
        axes[0].set_ylabel("mean easiness ē of the unlabeled images")
        handles, names = axes[0].get_legend_handles_labels()
        if handles:
            axes[0].legend(handles, names, fontsize=7, loc="lower right")
        _save(fig, path)


def draw_figures(folder: Path, data: FigureData) -> None:
    """forest.png, premise.png and easiness.png in `folder`."""
    forest(folder / "forest.png", data.forest)
    premise_scatter(folder / "premise.png", data.premise, data.premise_cell, data.spearman)
    easiness_panels(folder / "easiness.png", data.easiness)
