"""Command `paper-table`: the paper's main table from a benchmark grid's runs.

benchmarks/paper/dvc.yaml trains, for every label count × seed of params.yaml's `benchmark`
section, SupOnly, mean teacher and iMAS from one warmup, and each of `benchmark.ablations` at the
counts of `benchmark.ablation_labeled`, writing `<results>/<labeled>-s<seed>/<run>.json`. This
command reads exactly the runs that grid names (a missing or malformed one is an error naming
its file, and nothing is written) and writes the table as markdown, JSON and a PNG: rows SupOnly,
mean teacher, the ablations, iMAS, the gains over SupOnly, and, for a GPU preset, the paper's
published numbers; columns the label counts. Every output is a pure function of the runs and
params (no timestamps, no absolute paths), so reruns are byte-identical.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Annotated

import typer

from pipeline.benchmark import (
    LABELS,
    BenchmarkError,
    equal_iterations,
    mean_std,
    read_miou,
    relative_link,
    runs_or_exit,
    write_tables,
)
from pipeline.options import ParamsOpt, SetOpt, params_or_exit
from pipeline.params import BenchmarkParams, Params
from pipeline.published import PUBLISHED
from pipeline.report import ablation_name
from pipeline.table_figure import Row, table_figure

MISSING = "—"  # a method not run at that count, or a count the paper publishes nothing for
GAINS = ("mean_teacher", "imas")  # the methods whose gain over SupOnly gets a row
REPRODUCE = "`make paper-table` (= `cd benchmarks/paper && dvc repro`)"

Table = dict[str, dict[str, list[float]]]  # {"<labeled>": {run: [mIoU per seed]}}


def planned_runs(params: Params) -> dict[int, list[str]]:
    """`{labeled: [run name, …]}` in row order (SupOnly, mean teacher, ablations, iMAS)."""
    grid = _grid(params)
    out: dict[int, list[str]] = {}
    for count in grid.labeled:
        ablations = grid.ablations if count in grid.ablation_labeled else []
        out[count] = [m for m in ("supervised", "mean_teacher") if m in grid.methods]
        out[count] += [*ablations, *(["imas"] if "imas" in grid.methods else [])]
    return out


def collect(results: Path, params: Params) -> tuple[Table, dict[str, dict[str, int]]]:
    """The mIoU of every planned run, per seed in `benchmark.seeds` order, and the iterations
    per count, `{"<labeled>": {"warmup": n, "train": m}}`. Every train and ablation run of a
    count must have trained equally long from equally long warmups, or this raises."""
    grid = _grid(params)
    table: Table = {}
    its: dict[str, dict[str, int]] = {}
    for count, names in planned_runs(params).items():
        row: dict[str, list[float]] = {name: [] for name in names}
        runs: list[tuple[str, Path]] = []
        for seed in grid.seeds:
            folder = results / f"{count}-s{seed}"
            runs.append(("warmup", folder / "warmup.json"))
            for name in names:
                path = folder / f"{name}.json"
                # An ablation's file names the method its overridden train section ran.
                method = name if name in LABELS else params.ablation(name).method
                row[name].append(read_miou(path, method))
                runs.append(("train", path))
        table[str(count)] = row
        its[str(count)] = equal_iterations(runs)
    return table, its


def _grid(params: Params) -> BenchmarkParams:
    if params.benchmark is None:
        raise BenchmarkError("params have no `benchmark` section: nothing names the runs")
    return params.benchmark


def row_label(name: str) -> str:
    return LABELS.get(name) or ablation_name(name)


def table_rows(table: Table, published: str | None = None) -> list[Row]:
    """Our rows, the gain rows, then the preset's published rows, one cell per label count."""
    counts = list(table)
    names: list[str] = []
    for by_run in table.values():  # union of the runs in row order (ablations run at some)
        names += [n for n in by_run if n not in names]
    # Ablations run at some counts only, so the union is re-sorted into the paper's order.
    names.sort(key=lambda n: {"supervised": 0, "mean_teacher": 1, "imas": 3}.get(n, 2))
    rows = [
        Row(row_label(n), [mean_std(table[c][n]) if n in table[c] else MISSING for c in counts])
        for n in names
    ]
    for name in GAINS:
        if name in names and "supervised" in names:
            cells = [_gain(table[c].get(name), table[c].get("supervised")) for c in counts]
            rows.append(Row(f"{row_label(name)} gain over SupOnly", cells, "gain"))
    if published is not None:
        rows += _published_rows(PUBLISHED[published].miou, [int(c) for c in counts])
    return rows


def _gain(ours: list[float] | None, sup: list[float] | None) -> str:
    if not ours or not sup:
        return MISSING
    return f"{statistics.fmean(ours) - statistics.fmean(sup):+.2f}"


def _published_rows(miou: dict[str, dict[int, float | None]], counts: list[int]) -> list[Row]:
    def value(method: str, count: int) -> float | None:
        return miou.get(method, {}).get(count)

    rows = [
        Row(
            f"{LABELS[m]} (published)",
            [MISSING if value(m, c) is None else f"{value(m, c):.1f}" for c in counts],
            "published",
        )
        for m in ("supervised", "imas")
    ]
    gains = []
    for c in counts:
        imas, sup = value("imas", c), value("supervised", c)
        gains.append(MISSING if imas is None or sup is None else f"{imas - sup:+.1f}")
    rows.append(Row("iMAS gain over SupOnly (published)", gains, "published"))
    return rows


def spread(seeds: list[int]) -> str:
    listed = ", ".join(str(s) for s in seeds)
    if len(seeds) > 1:
        return f"mean ± sample standard deviation over {len(seeds)} seeds ({listed})"
    return f"one seed ({listed}), so no spread"


def caption(params: Params, its: dict[str, dict[str, int]]) -> list[str]:
    """Sentences under the title: data, seeds, run lengths, and where published numbers are."""
    grid = _grid(params)
    data = params.data.embedded
    lengths = {(v["warmup"], v["train"]) for v in its.values()}
    if len(lengths) == 1:
        warmup, train = lengths.pop()
        length = f"a warmup of {warmup:,} iterations, then {train:,} for every run"
    else:
        length = "; ".join(
            f"{n} labels: warmup {v['warmup']:,}, then {v['train']:,} for every run"
            for n, v in its.items()
        )
    lines = [
        f"Built-in dataset: digits {', '.join(str(d) for d in data.digits)} on photos "
        f"({len(data.digits)} classes + background), {data.train_scenes:,} train scenes "
        f"(labeled + unlabeled), {data.val_scenes:,} val scenes. Val mIoU (%) of the best "
        f"teacher (SupOnly: the student), {spread(grid.seeds)}. At every label count all runs "
        f"start from one warmup checkpoint and train equally long: {length}. A {MISSING} cell: "
        "the method was not run at that count.",
        "",
    ]
    if grid.published is None:
        lines.append(
            "The built-in dataset has no published numbers (`benchmark.published: null`): the "
            "paper reports PASCAL VOC and Cityscapes only, so no published rows are shown."
        )
    else:
        preset = PUBLISHED[grid.published]
        lines.append(
            f"Rows marked (published) are the iMAS paper's numbers at the same label counts "
            f"({MISSING}: none published), for {preset.title}: its data and backbone, not "
            f"ours. {preset.note}".rstrip()
        )
    return [*lines, ""]


def render_markdown(
    params: Params, table: Table, its: dict[str, dict[str, int]], figure: str | None = None
) -> str:
    counts = list(table)
    rows = table_rows(table, _grid(params).published)
    lines = [
        "# Paper-style table",
        "",
        *caption(params, its),
        "| method | " + " | ".join(f"{c} labels" for c in counts) + " |",
        "| --- |" + " ---: |" * len(counts),
        *(f"| {row.label} | " + " | ".join(row.cells) + " |" for row in rows),
        "",
        f"Reproduce: {REPRODUCE}; per-seed numbers: `reports/paper_table.json`.",
        "",
    ]
    if figure:
        lines += [f"![the table as a figure]({figure})", ""]
    return "\n".join(lines)


def command(
    results: Annotated[Path, typer.Option(help="folder of <labeled>-s<seed>/<run>.json")] = Path(
        "results"
    ),
    params_file: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="JSON table to write")] = Path(
        "reports/paper_table.json"
    ),
    markdown: Annotated[Path, typer.Option(help="markdown table to write")] = Path(
        "reports/paper_table.md"
    ),
    figure: Annotated[Path | None, typer.Option(help="PNG rendering of the table")] = None,
    overrides: SetOpt = None,
) -> None:
    """Tabulate SupOnly, mean teacher, the ablations and iMAS per label count, with gains over
    SupOnly and, for a `benchmark.published` preset, the paper's numbers beside ours."""
    params = params_or_exit(params_file, overrides)
    with runs_or_exit():
        table, its = collect(results, params)
    link = None
    if figure is not None:
        grid = _grid(params)
        title = f"Val mIoU (%) on the built-in dataset, {spread(grid.seeds)}"
        counts = [f"{c} labels" for c in table]
        table_figure(figure, counts, table_rows(table, grid.published), title)
        link = relative_link(figure, markdown)
    write_tables(out, table, markdown, render_markdown(params, table, its, link))
