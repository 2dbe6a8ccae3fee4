"""The report's figures, as PNGs that are byte-identical for identical inputs.

Figures are drawn on an explicit Agg canvas (no pyplot, so no global backend or figure state),
under matplotlib's default style (a user's matplotlibrc cannot change the output), at a fixed
size and dpi, and saved without the "Software" metadata entry (it names the matplotlib
version). Every file is written through `atomic_path`, so DVC never caches half a PNG.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import matplotlib
import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from imas.data.catalogue import IGNORE_INDEX
from pipeline.control.outputs import atomic_path

DPI = 100
_RUN_COLORS = cast(Any, matplotlib.colormaps["tab10"]).colors
_HIGHLIGHT = {"SupOnly": "#4d4d4d", "iMAS": "#d95f02"}
_OTHER_BAR = "#b3b3b3"


def voc_palette() -> np.ndarray:
    """The PASCAL VOC colour map, `[256, 3]` uint8; the ignore index 255 is white."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        c, rgb = index, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << (7 - bit)
            c >>= 3
        palette[index] = rgb
    palette[IGNORE_INDEX] = 255
    return palette


def colorize(labels: Any) -> np.ndarray:
    """`[H, W]` class indices → `[H, W, 3]` uint8 RGB in the VOC palette."""
    arr = _numpy(labels).astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > IGNORE_INDEX):
        raise ValueError(f"labels must lie in [0, {IGNORE_INDEX}], got [{arr.min()}, {arr.max()}]")
    return voc_palette()[arr]


@contextmanager
def _figure(width: float, height: float, **kwargs: Any) -> Iterator[Figure]:
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(width, height), dpi=DPI, **kwargs)
        FigureCanvasAgg(fig)
        yield fig


def _save(fig: Figure, path: Path | str) -> None:
    # atomic_path's temp name has no .png suffix, hence the explicit format.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor, possibly on a GPU
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def qualitative_grid(
    path: Path | str,
    images: Any,
    truths: Any,
    predictions: Mapping[str, Any],
    class_names: Sequence[str],
) -> None:
    """Rows of image | ground truth | one column per prediction, with a class-colour legend.

    `images` are uint8 `[N, 3, H, W]`, `truths` and every prediction `[N, H, W]` class indices
    (255 = ignore, drawn white).
    """
    imgs = np.clip(_numpy(images), 0, 255).astype(np.uint8)
    gts = _numpy(truths)
    preds = {name: _numpy(p) for name, p in predictions.items()}
    if imgs.ndim != 4 or imgs.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got {list(imgs.shape)}")
    n = imgs.shape[0]
    for name, arr in {"ground truth": gts, **preds}.items():
        if arr.shape != (n, *imgs.shape[2:]):
            raise ValueError(f"{name} must be {[n, *imgs.shape[2:]]}, got {list(arr.shape)}")
    columns = [("image", None), ("ground truth", gts), *preds.items()]
    palette = voc_palette() / 255.0
    legend = [
        Patch(facecolor=palette[i], edgecolor="black", linewidth=0.5, label=name)
        for i, name in enumerate(class_names)
    ]
    legend.append(Patch(facecolor="white", edgecolor="black", linewidth=0.5, label="ignore"))
    legend_rows = -(-len(legend) // 6)
    with _figure(
        2.0 * len(columns), 2.0 * n + 0.35 * legend_rows + 0.4, layout="constrained"
    ) as fig:
        axes = fig.subplots(n, len(columns), squeeze=False)
        for row in range(n):
            for col, (title, labels) in enumerate(columns):
                ax = axes[row, col]
                shown = imgs[row].transpose(1, 2, 0) if labels is None else colorize(labels[row])
                ax.imshow(shown, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(title, fontsize=10)
        fig.legend(
            handles=legend,
            loc="outside lower center",
            ncol=min(6, len(legend)),
            fontsize=8,
            frameon=False,
        )
        _save(fig, path)


def _series(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and values of `column` where a value was recorded (empty cells are skipped)."""
    if column not in frame.columns:
        return np.array([]), np.array([])
    values = pd.to_numeric(frame[column], errors="coerce")
    epochs = pd.to_numeric(frame["epoch"], errors="coerce")
    keep = values.notna() & epochs.notna()
    return epochs[keep].to_numpy(float), values[keep].to_numpy(float)


def _color(index: int) -> tuple[float, float, float]:
    return _RUN_COLORS[index % len(_RUN_COLORS)]


def _plot_runs(ax, histories, column: str, style: str = "-", label: bool = False) -> bool:
    drawn = False
    # A run keeps its colour by its position in `histories`, in every panel and figure.
    for i, (name, frame) in enumerate(histories.items()):
        x, y = _series(frame, column)
        if len(x):
            # Markers keep a one-epoch run (a single point) visible.
            ax.plot(
                x,
                y,
                style,
                color=_color(i),
                marker="o",
                markersize=3,
                linewidth=1.5,
                label=name if label else None,
            )
            drawn = True
    return drawn


def _finish(ax, title: str, ylabel: str, drawn: bool) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not drawn:
        ax.text(
            0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="gray"
        )


def training_curves(path: Path | str, histories: Mapping[str, pd.DataFrame]) -> None:
    """Per-epoch val mIoU, losses, easiness, confident ratio and CutMix rate of every run.

    Colour = run; solid = teacher mIoU / loss_x, dashed = student mIoU / loss_u. Columns a run
    did not record (a supervised run has no teacher or unlabeled loss) are left out.
    """
    with _figure(15.0, 8.0, layout="constrained") as fig:
        axes = fig.subplots(2, 3).ravel()
        drawn = _plot_runs(axes[0], histories, "miou_teacher", "-")
        drawn = _plot_runs(axes[0], histories, "miou_student", "--") or drawn
        _finish(axes[0], "val mIoU", "mIoU (%)", drawn)
        drawn = _plot_runs(axes[1], histories, "loss_x", "-")
        drawn = _plot_runs(axes[1], histories, "loss_u", "--") or drawn
        _finish(axes[1], "losses", "loss", drawn)
        panels = [
            ("easiness", "mean easiness ē", "ē"),
            ("confident_ratio", "confident-pixel ratio", "fraction of pixels"),
            ("cutmix", "CutMix trigger rate", "fraction of batches"),
        ]
        for ax, (column, title, ylabel) in zip(axes[2:5], panels, strict=True):
            _finish(ax, title, ylabel, _plot_runs(ax, histories, column))
        # The sixth panel is the legend shared by all five.
        handles = [
            Line2D(
                [],
                [],
                color=_RUN_COLORS[i % len(_RUN_COLORS)],
                marker="o",
                markersize=3,
                label=name,
            )
            for i, name in enumerate(histories)
        ]
        handles += [
            Line2D([], [], color="black", linestyle="-", label="teacher mIoU / loss_x"),
            Line2D([], [], color="black", linestyle="--", label="student mIoU / loss_u"),
        ]
        axes[5].axis("off")
        axes[5].legend(handles=handles, loc="center", frameon=False, fontsize=9)
        _save(fig, path)


def ablation_bars(path: Path | str, results: pd.DataFrame) -> None:
    """Horizontal bars of val mIoU, first row on top, value printed; SupOnly and iMAS stand out."""
    names = [str(n) for n in results["name"]]
    values = pd.to_numeric(results["miou"], errors="coerce").to_numpy(float)
    top = float(np.nanmax(values)) if len(values) and np.isfinite(values).any() else 1.0
    with _figure(8.0, 1.0 + 0.45 * max(len(names), 1), layout="constrained") as fig:
        ax = fig.subplots()
        positions = np.arange(len(names))
        colors = [_HIGHLIGHT.get(n, _OTHER_BAR) for n in names]
        ax.barh(positions, np.nan_to_num(values), color=colors, height=0.6)
        for y, value in zip(positions, values, strict=True):
            text = "n/a" if np.isnan(value) else f"{value:.2f}"
            ax.text(
                max(float(np.nan_to_num(value)), 0.0) + 0.01 * top,
                float(y),
                text,
                va="center",
                fontsize=9,
            )
        ax.set_yticks(positions, names)
        ax.invert_yaxis()
        # Headroom for the printed values; bars start at 0 so lengths compare honestly.
        ax.set_xlim(0, top * 1.12)
        ax.set_xlabel("val mIoU (%)")
        ax.grid(axis="x", alpha=0.3)
        _save(fig, path)


def easiness_curves(path: Path | str, histories: Mapping[str, pd.DataFrame]) -> None:
    """Mean easiness and confident-pixel ratio per epoch of every teacher–student run."""
    # Runs without easiness (supervised) draw nothing, but keep their slot in the colour order
    # so a run has the same colour here as in the training curves.
    with _figure(11.0, 4.0, layout="constrained") as fig:
        axes = fig.subplots(1, 2)
        drawn = _plot_runs(axes[0], histories, "easiness", label=True)
        _finish(axes[0], "mean easiness ē of unlabeled images", "ē", drawn)
        _finish(
            axes[1],
            "confident-pixel ratio (teacher max prob ≥ τ)",
            "fraction of pixels",
            _plot_runs(axes[1], histories, "confident_ratio"),
        )
        for ax in axes:
            ax.set_ylim(0.0, 1.02)
        if drawn:
            axes[0].legend(fontsize=8, loc="lower right")
        _save(fig, path)


def histogram_epochs(epochs: Sequence[int], count: int = 3) -> list[int]:
    """`count` epochs spread from the first to the last (all of them if there are fewer)."""
    unique = sorted(set(int(e) for e in epochs))
    if len(unique) <= count:
        return unique
    picks = np.linspace(0, len(unique) - 1, count).round().astype(int)
    return [unique[i] for i in picks]


def hardness_histograms(path: Path | str, hardness: pd.DataFrame, bins: int = 20) -> None:
    """Distribution of per-image hardness γ at the first, a middle and the last epoch.

    One step outline per epoch on shared bins over [0, 1], as a fraction of that epoch's images
    so epochs of different lengths compare; the legend gives each epoch's mean and count.
    """
    epochs = histogram_epochs(hardness["epoch"].tolist()) if len(hardness) else []
    edges = np.linspace(0.0, 1.0, bins + 1)
    with _figure(7.0, 4.0, layout="constrained") as fig:
        ax = fig.subplots()
        for i, epoch in enumerate(epochs):
            values = hardness.loc[hardness["epoch"] == epoch, "hardness"].to_numpy(float)
            weights = np.full(len(values), 1.0 / len(values))
            ax.hist(
                values,
                bins=list(edges),
                weights=weights,
                histtype="step",
                linewidth=1.8,
                color=_color(i),
                label=f"epoch {epoch}: mean γ {values.mean():.3f}, {len(values)} images",
            )
        ax.set_title("per-image hardness γ of the unlabeled images (iMAS run)", fontsize=10)
        ax.set_xlabel("hardness γ = 1 − easiness")
        ax.set_ylabel("fraction of the epoch's images")
        ax.set_xlim(0.0, 1.0)
        ax.grid(alpha=0.3)
        if epochs:
            ax.legend(fontsize=8, loc="upper right")
        else:
            ax.text(
                0.5,
                0.5,
                "not recorded",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="gray",
            )
        _save(fig, path)
