"""Command `benchmark`: gather the SSL benchmark's runs into reports/ssl_benchmark.{json,md}.

The benchmark pipeline (benchmarks/ssl/dvc.yaml) trains SupOnly, mean teacher and iMAS from the
same warmup checkpoint for the same iterations, for every label count and seed, and writes
`<results>/<labeled>-s<seed>/<method>.json` and `<method>_history.csv`. This command only reads
those files; every output is a pure function of them (no timestamps), so reruns are identical.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from pipeline.outputs import atomic_path, write_json

METHODS = ("supervised", "mean_teacher", "imas")
LABELS = {"supervised": "SupOnly", "mean_teacher": "Mean teacher", "imas": "iMAS"}
_CELL = re.compile(r"^(\d+)-s(\d+)$")


class BenchmarkError(ValueError):
    """A run of the benchmark is missing or malformed; the message names the file."""


def collect(results: Path) -> dict[str, dict[str, list[float]]]:
    """`{"<labeled>": {method: [mIoU per seed, ascending seed]}}`, every cell complete."""
    cells: dict[int, dict[int, Path]] = {}
    for folder in sorted(results.iterdir()) if results.is_dir() else []:
        match = _CELL.match(folder.name)
        if match and folder.is_dir():
            cells.setdefault(int(match[1]), {})[int(match[2])] = folder
    if not cells:
        raise BenchmarkError(f"{results}: no <labeled>-s<seed> folders (run the benchmark first)")
    out: dict[str, dict[str, list[float]]] = {}
    for labeled in sorted(cells):
        row: dict[str, list[float]] = {m: [] for m in METHODS}
        for seed in sorted(cells[labeled]):
            for method in METHODS:
                path = cells[labeled][seed] / f"{method}.json"
                try:
                    data = json.loads(path.read_text())
                except FileNotFoundError:
                    raise BenchmarkError(f"{path}: no such file (its run is missing)") from None
                if data.get("method") != method or not isinstance(data.get("miou"), int | float):
                    raise BenchmarkError(f"{path}: expected method {method!r} and a numeric miou")
                row[method].append(round(float(data["miou"]), 2))
        out[str(labeled)] = row
    return out


def load_histories(results: Path, table: dict[str, dict[str, list[float]]]) -> dict:
    """`{(labeled, seed, method): history frame}` for every run of the table; missing → error."""
    out = {}
    for labeled in table:
        folders = sorted(
            (int(m[2]), f)
            for f in results.iterdir()
            if (m := _CELL.match(f.name)) and m[1] == labeled and f.is_dir()
        )
        for seed, folder in folders:
            for method in METHODS:
                path = folder / f"{method}_history.csv"
                if not path.is_file():
                    raise BenchmarkError(f"{path}: no such file (its run is missing)")
                frame = pd.read_csv(path)
                if "epoch" not in frame.columns or frame.empty:
                    raise BenchmarkError(f"{path}: expected an epoch column and at least one row")
                out[(int(labeled), seed, method)] = frame
    return out


def dynamics(histories: dict) -> dict[str, dict[str, dict[str, float]]]:
    """iMAS's mean easiness and confident-pixel ratio in its first and last epoch, mean over
    seeds, per label count: `{"<labeled>": {"easiness": {"first", "last"}, ...}}`."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for labeled in sorted({key[0] for key in histories}):
        frames = [f for (n, _, m), f in sorted(histories.items()) if n == labeled and m == "imas"]
        row = {}
        for column in ("easiness", "confident_ratio"):
            if not all(column in f.columns for f in frames):
                continue
            firsts = [float(f[column].iloc[0]) for f in frames]
            lasts = [float(f[column].iloc[-1]) for f in frames]
            row[column] = {
                "first": round(statistics.fmean(firsts), 4),
                "last": round(statistics.fmean(lasts), 4),
            }
        out[str(labeled)] = row
    return out


def render_dynamics(dyn: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Markdown lines saying whether ē and the confident ratio rise, as in the paper (SPEC §2)."""
    lines = [
        "## Training dynamics of iMAS",
        "",
        "Mean easiness ē of the unlabeled batches and the fraction of confident teacher pixels "
        "(max probability ≥ τ), first → last epoch, mean over seeds. The paper's runs go from "
        "ē ≈ 0.57–0.67 to 0.89–0.94 and from 0.63–0.71 to 0.94–0.98 confident pixels.",
        "",
        "| labels | ē first → last | confident ratio first → last | both rise? |",
        "| --- | --- | --- | --- |",
    ]
    for labeled, row in dyn.items():
        e, c = row.get("easiness"), row.get("confident_ratio")
        if e is None or c is None:
            lines.append(f"| {labeled} | not recorded | not recorded | n/a |")
            continue
        rise = e["last"] > e["first"] and c["last"] > c["first"]
        lines.append(
            f"| {labeled} | {e['first']:.3f} → {e['last']:.3f} | "
            f"{c['first']:.3f} → {c['last']:.3f} | {'yes' if rise else 'no'} |"
        )
    return lines


def _cell(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}"


def render_markdown(
    table: dict[str, dict[str, list[float]]],
    dyn: dict[str, dict[str, dict[str, float]]] | None = None,
    figure: str | None = None,
) -> str:
    """Rows = methods, columns = label counts; mean ± sample std over seeds, then Δ rows."""
    counts = list(table)
    seeds = len(next(iter(table.values()))["imas"])
    head = "| method | " + " | ".join(f"{c} labels" for c in counts) + " |"
    rule = "| --- |" + " ---: |" * len(counts)
    lines = [
        "# SSL benchmark on the built-in dataset",
        "",
        f"Val mIoU (%) of the best teacher (SupOnly: the student), mean ± sample standard "
        f"deviation over {seeds} seed(s). Every method starts from the same warmup checkpoint "
        "and trains the same number of iterations on the same data.",
        "",
        head,
        rule,
    ]
    for method in METHODS:
        cells = [_cell(table[c][method]) for c in counts]
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    for method in ("mean_teacher", "imas"):
        deltas = [
            statistics.fmean(table[c][method]) - statistics.fmean(table[c]["supervised"])
            for c in counts
        ]
        lines.append(
            f"| Δ {LABELS[method]} − SupOnly | " + " | ".join(f"{d:+.2f}" for d in deltas) + " |"
        )
    lines += [
        "",
        "Reproduce: `cd benchmarks/ssl && dvc repro` (settings: `benchmarks/ssl/params.yaml`; "
        "per-seed numbers: `reports/ssl_benchmark.json`).",
        "",
    ]
    if dyn:
        lines += [*render_dynamics(dyn), ""]
    if figure:
        lines += [f"![per-epoch curves of the first seed]({figure})", ""]
    return "\n".join(lines)


def command(
    results: Annotated[Path, typer.Option(help="folder of <labeled>-s<seed>/<method>.json")] = Path(
        "results"
    ),
    out: Annotated[Path, typer.Option(help="JSON table to write")] = Path(
        "reports/ssl_benchmark.json"
    ),
    markdown: Annotated[Path, typer.Option(help="markdown table to write")] = Path(
        "reports/ssl_benchmark.md"
    ),
    figure: Annotated[
        Path | None, typer.Option(help="PNG of per-epoch curves (first seed of every count)")
    ] = None,
) -> None:
    """Tabulate SupOnly, mean teacher and iMAS per label count over seeds, with iMAS's ē and
    confident-ratio dynamics and (with --figure) their per-epoch curves."""
    try:
        table = collect(results)
        histories = load_histories(results, table)
    except BenchmarkError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    link = None
    if figure is not None:
        from pipeline.plots import training_curves

        first = min(seed for _, seed, _ in histories)
        curves = {
            f"{n} labels · {LABELS[m]}": f
            for (n, seed, m), f in sorted(histories.items())
            if seed == first
        }
        training_curves(figure, curves)
        link = os.path.relpath(figure, markdown.parent).replace(os.sep, "/")
    write_json(out, table)
    with atomic_path(markdown) as tmp:
        tmp.write_text(render_markdown(table, dynamics(histories), link))
    typer.echo(f"wrote {out} and {markdown}")
