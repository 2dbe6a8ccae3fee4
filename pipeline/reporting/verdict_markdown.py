"""The verdict as markdown: the paper-style table with 95 % intervals over seeds, the val-best
table of the paper's protocol, one line per rule, and the scene-bootstrap lines.

A pure function of the grid (no timestamps, no paths), so the same runs give the same bytes.
"""

from __future__ import annotations

import math
import statistics

from pipeline.reporting.intervals import Interval
from pipeline.reporting.verdict import (
    MISSING,
    NOT_WORSE,
    PREMISE_MIN,
    RULE_COUNT,
    SSL_ESTIMATE,
    SSL_LOW,
    Grid,
    Verdict,
    compare,
    differences,
    interval,
    label,
    row_order,
    values,
)

# The difference rows under the table, named as the paper's text names them.
DIFFERENCES = {
    "iMAS − SupOnly": ("imas", "supervised"),
    "iMAS − mean teacher": ("imas", "mean_teacher"),
}


def fmt(iv: Interval | None, sign: bool = False) -> str:
    """`mean [low, high]` in points, ∞ for the unbounded interval of one seed."""
    if iv is None:
        return MISSING
    spec = "{:+.2f}" if sign else "{:.2f}"

    def bound(x: float) -> str:
        return ("−∞" if x < 0 else "∞") if math.isinf(x) else spec.format(x)

    return f"{spec.format(iv.estimate)} [{bound(iv.low)}, {bound(iv.high)}]"


def met(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def rule_lines(v: Verdict) -> list[tuple[str, str, str]]:
    """(rule name, rule text, outcome) for the markdown and the terminal."""
    rho = MISSING if v.spearman is None else f"{v.spearman:.3f}"
    return [
        (
            "ssl_gain",
            f"iMAS − SupOnly at {RULE_COUNT} labels, paired per seed: met if the mean is "
            f"≥ {SSL_ESTIMATE:g} points and the 95 % lower bound > {SSL_LOW:g}",
            f"{fmt(v.ssl, sign=True)}: {met(v.ssl_met)}",
        ),
        (
            "monotone",
            "the mean test mIoU over seeds of every method rises strictly with the label count",
            met(v.monotone),
        ),
        (
            "imas_vs_mean_teacher",
            "iMAS − mean teacher over every (count, seed) pair pooled: better if the 95 % "
            f"lower bound > 0, not worse if > {NOT_WORSE:g}, worse if the upper bound < 0, "
            "else undecided",
            f"{fmt(v.pooled, sign=True)}: {compare(v.pooled)}",
        ),
        (
            "anti_imas",
            f"anti-iMAS − iMAS at {RULE_COUNT} labels, paired per seed: met if the 95 % upper "
            "bound < 0",
            f"{fmt(v.anti, sign=True)}: {met(v.anti_met)}",
        ),
        (
            "premise",
            "Spearman(easiness, pseudo-label mIoU) per iMAS run and epoch, averaged: met if "
            f"> {PREMISE_MIN:g}",
            f"{rho} over {v.groups} (run, epoch) groups: {met(v.premise_met)}",
        ),
    ]


def _names(g: Grid) -> list[str]:
    return row_order(sorted({n for names in g.planned.values() for n in names}))


def _table(g: Grid, rows: list[tuple[str, list[str]]]) -> list[str]:
    return [
        "| method | " + " | ".join(f"{c} labels" for c in g.counts) + " |",
        "| --- |" + " ---: |" * len(g.counts),
        *(f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows),
    ]


def primary_rows(g: Grid) -> list[tuple[str, list[str]]]:
    """Each run's mean test mIoU [t-interval of the mean], then the paired-difference rows."""
    rows = [
        (
            label(n),
            [fmt(interval(values(g, c, n))) if n in g.planned[c] else MISSING for c in g.counts],
        )
        for n in _names(g)
    ]
    for name, (a, b) in DIFFERENCES.items():
        if all(n in _names(g) for n in (a, b)):
            cells = [fmt(interval(differences(g, c, a, b)), sign=True) for c in g.counts]
            rows.append((name, cells))
    return rows


def val_rows(g: Grid) -> list[tuple[str, list[str]]]:
    """Mean val mIoU of the best epoch: the number the paper reports, selected on val."""

    def cell(count: int, name: str) -> str:
        xs = values(g, count, name, "val_miou") if name in g.planned[count] else []
        return f"{statistics.fmean(xs):.2f}" if xs else MISSING

    return [(label(n), [cell(c, n) for c in g.counts]) for n in _names(g)]


def caption(g: Grid) -> list[str]:
    images = next(iter(next(iter(g.runs.values())).values())).confusions.shape[0]
    seeds = ", ".join(str(s) for s in g.seeds)
    lines = [
        f"Primary number: test mIoU (%) over {images} test images of the last EMA teacher "
        f"(SupOnly: the last student). Cells: mean over seeds ({seeds}) [95 % Student-t "
        "interval of the mean]; difference rows: the mean of the differences paired per seed "
        f"(same warmup, same seed) [their 95 % t-interval]. {MISSING}: not run at that count.",
    ]
    few = [c for c in g.counts if len([s for s in g.seeds if (c, s) in g.runs]) < 2]
    if few:
        lines += [
            "",
            f"With one seed (here at {', '.join(f'{c} labels' for c in few)}) "
            "a t-interval is (−∞, ∞), written null in verdict.json, so no interval rule can "
            "pass there.",
        ]
    if g.missing:
        lines += [
            "",
            f"Partial grid: the cells {', '.join(g.missing)} are incomplete and left out; "
            "every number uses the complete cells only.",
        ]
    return lines


def rule_section(g: Grid, v: Verdict) -> list[str]:
    lines = [f"- **{name}**: {text}. Result: {outcome}." for name, text, outcome in rule_lines(v)]
    means = "; ".join(
        f"{label(m)} " + " → ".join(f"{x:.2f}" for x in by.values()) for m, by in v.means.items()
    )
    lines.insert(2, f"  - means over seeds by label count: {means}")
    per_count = "; ".join(f"{c} labels {fmt(iv, sign=True)}" for c, iv in v.per_count.items())
    lines.insert(4, f"  - per count: {per_count}")
    return lines


def bootstrap_lines(boot: dict[int, dict[int, Interval]]) -> list[str]:
    return [
        f"- {count} labels: "
        + "; ".join(f"seed {seed} {fmt(iv, sign=True)}" for seed, iv in by_seed.items())
        for count, by_seed in boot.items()
    ]


def render_markdown(g: Grid, v: Verdict, boot: dict[int, dict[int, Interval]]) -> str:
    """The whole verdict page; `boot` from `scene_bootstrap`."""
    lines = [
        "# Benchmark verdict",
        "",
        *caption(g),
        "",
        "## Test mIoU (%) of the primary model",
        "",
        *_table(g, primary_rows(g)),
        "",
        "## Val mIoU (%) of the best epoch (the paper's protocol), mean over seeds",
        "",
        *_table(g, val_rows(g)),
        "",
        "## Rules, fixed before the grid ran",
        "",
        *rule_section(g, v),
        "",
        "## Scene bootstrap of iMAS − mean teacher per seed (test-set sampling noise)",
        "",
        "Difference of test mIoU on all test images [95 % percentile interval over 2,000 "
        "resamples of the test scenes, seed 0], beside the seed-to-seed intervals above.",
        "",
        *(bootstrap_lines(boot) or [f"{MISSING} (no cell has both runs)"]),
        "",
    ]
    return "\n".join(lines)
