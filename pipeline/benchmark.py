"""Command `benchmark`: gather the SSL benchmark's runs into reports/ssl_benchmark.{json,md}.

The benchmark pipeline (benchmarks/ssl/dvc.yaml) trains SupOnly, mean teacher and iMAS from the
same warmup checkpoint for the same iterations, for every label count and seed, and writes
`<results>/<labeled>-s<seed>/<method>.json`. This command only reads those files.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Annotated

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


def _cell(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}"


def render_markdown(table: dict[str, dict[str, list[float]]]) -> str:
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
        "Reproduce: `cd benchmarks/ssl && dvc repro` (per-seed numbers: "
        "`reports/ssl_benchmark.json`).",
        "",
    ]
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
) -> None:
    """Tabulate SupOnly, mean teacher and iMAS per label count over seeds."""
    try:
        table = collect(results)
    except BenchmarkError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    write_json(out, table)
    with atomic_path(markdown) as tmp:
        tmp.write_text(render_markdown(table))
    typer.echo(f"wrote {out} and {markdown}")
