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
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
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


def _cells(results: Path) -> dict[int, dict[int, Path]]:
    """`{labeled: {seed: folder}}` of the `<labeled>-s<seed>` folders, both keys ascending."""
    cells: dict[int, dict[int, Path]] = {}
    for folder in sorted(results.iterdir()) if results.is_dir() else []:
        match = _CELL.match(folder.name)
        if match and folder.is_dir():
            cells.setdefault(int(match[1]), {})[int(match[2])] = folder
    return {n: dict(sorted(by_seed.items())) for n, by_seed in sorted(cells.items())}


def read_json(path: Path) -> dict:
    """A run's metrics file as a dict; missing, unreadable or not an object → error naming it."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchmarkError(f"{path}: no such file (its run is missing)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BenchmarkError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise BenchmarkError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_miou(path: Path, method: str) -> float:
    """The run's best val mIoU (2 decimals); the file must say it trained with `method`."""
    data = read_json(path)
    if data.get("method") != method or not isinstance(data.get("miou"), int | float):
        raise BenchmarkError(f"{path}: expected method {method!r} and a numeric miou")
    return round(float(data["miou"]), 2)


def equal_iterations(runs: Iterable[tuple[str, Path]]) -> dict[str, int]:
    """`{group: iterations}` over `(group, metrics file)` pairs, "warmup" before "train".

    Every file of a group must report the same integer `iterations`, or the comparison is
    unfair: this raises naming the first file that differs and the one it differs from.
    """
    seen: dict[str, tuple[int, Path]] = {}
    for key, path in runs:
        its = read_json(path).get("iterations")
        if not isinstance(its, int):
            raise BenchmarkError(f"{path}: expected an integer 'iterations'")
        if key in seen and seen[key][0] != its:
            raise BenchmarkError(
                f"{path}: {its} iterations, but {seen[key][1]} ran {seen[key][0]} "
                "(every method must train equally long)"
            )
        seen.setdefault(key, (its, path))
    return {key: value[0] for key, value in sorted(seen.items(), reverse=True)}


def collect(results: Path) -> dict[str, dict[str, list[float]]]:
    """`{"<labeled>": {method: [mIoU per seed, ascending seed]}}`, every cell complete."""
    cells = _cells(results)
    if not cells:
        raise BenchmarkError(f"{results}: no <labeled>-s<seed> folders (run the benchmark first)")
    out: dict[str, dict[str, list[float]]] = {}
    for labeled, by_seed in cells.items():
        row: dict[str, list[float]] = {m: [] for m in METHODS}
        for folder in by_seed.values():
            for method in METHODS:
                row[method].append(read_miou(folder / f"{method}.json", method))
        out[str(labeled)] = row
    return out


def iterations(results: Path, table: dict[str, dict[str, list[float]]]) -> dict[str, dict]:
    """`{"<labeled>": {"warmup": n, "train": m}}`; every method of every seed must have trained
    the same number of iterations from a warmup of the same length, or the comparison is unfair
    and this raises, naming the run."""
    cells = _cells(results)
    return {
        labeled: equal_iterations(
            ("warmup" if name == "warmup" else "train", folder / f"{name}.json")
            for folder in cells[int(labeled)].values()
            for name in ("warmup", *METHODS)
        )
        for labeled in table
    }


def load_histories(results: Path, table: dict[str, dict[str, list[float]]]) -> dict:
    """`{(labeled, seed, method): history frame}` for every run of the table; missing → error."""
    cells = _cells(results)
    out = {}
    for labeled in table:
        for seed, folder in cells[int(labeled)].items():
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
    """iMAS's mean easiness and confident-pixel ratio per label count, mean over seeds:
    `{"<labeled>": {"easiness": {"copy", "first", "last"}, ...}}`.

    `copy` is epoch 0, where the teacher is a copy of the student (SPEC §6): the two maps agree,
    so ē there is just the confident ratio. `first` is epoch 1, the first with an EMA teacher,
    and the trend is read from it (epoch 0 when a run has one epoch only).
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for labeled in sorted({key[0] for key in histories}):
        frames = [f for (n, _, m), f in sorted(histories.items()) if n == labeled and m == "imas"]
        row = {}
        for column in ("easiness", "confident_ratio"):
            if not all(column in f.columns for f in frames):
                continue

            row[column] = {
                name: round(
                    statistics.fmean(float(f[column].iloc[min(at, len(f) - 1)]) for f in frames), 4
                )
                for name, at in (("copy", 0), ("first", 1), ("last", -1))
            }
        out[str(labeled)] = row
    return out


def render_dynamics(dyn: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Markdown lines saying whether ē and the confident ratio rise, as in the paper (SPEC §2)."""
    lines = [
        "## Training dynamics of iMAS",
        "",
        "Mean easiness ē of the unlabeled batches and the fraction of confident teacher pixels "
        "(max probability ≥ τ), mean over seeds, at epoch 0 (teacher = copy of the student, so "
        "the maps agree and ē is the confident ratio), epoch 1 (first EMA epoch) and the last "
        "epoch. A trend is read from epoch 1 to the last. The paper's runs go from "
        "ē ≈ 0.57–0.67 to 0.89–0.94 and from 0.63–0.71 to 0.94–0.98 confident pixels.",
        "",
        "| labels | ē: epoch 0 / 1 → last | confident ratio: epoch 0 / 1 → last | both rise? |",
        "| --- | --- | --- | --- |",
    ]
    for labeled, row in dyn.items():
        e, c = row.get("easiness"), row.get("confident_ratio")
        if e is None or c is None:
            lines.append(f"| {labeled} | not recorded | not recorded | n/a |")
            continue
        rise = e["last"] > e["first"] and c["last"] > c["first"]
        lines.append(
            f"| {labeled} | {e['copy']:.3f} / {e['first']:.3f} → {e['last']:.3f} | "
            f"{c['copy']:.3f} / {c['first']:.3f} → {c['last']:.3f} | {'yes' if rise else 'no'} |"
        )
    return lines


def mean_std(values: Sequence[float]) -> str:
    """A table cell: `mean ± sample std` over seeds, or just the mean of a single seed."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}"


def render_markdown(
    table: dict[str, dict[str, list[float]]],
    dyn: dict[str, dict[str, dict[str, float]]] | None = None,
    figure: str | None = None,
    its: dict[str, dict] | None = None,
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
        cells = [mean_std(table[c][method]) for c in counts]
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
    if its:
        lines += [
            "Iterations: "
            + "; ".join(
                f"{n} labels: warmup {v['warmup']} + {v['train']} for every method"
                for n, v in its.items()
            )
            + ".",
            "",
        ]
    if dyn:
        lines += [*render_dynamics(dyn), ""]
    if figure:
        lines += [f"![per-epoch curves of the first seed]({figure})", ""]
    return "\n".join(lines)


@contextmanager
def runs_or_exit() -> Iterator[None]:
    """Run the reading block; a BenchmarkError exits 2 with its message, before any write."""
    try:
        yield
    except BenchmarkError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None


def relative_link(figure: Path, markdown: Path) -> str:
    """The figure's path as a link target in the markdown file, wherever the two are."""
    return os.path.relpath(figure, markdown.parent).replace(os.sep, "/")


def write_tables(out: Path, table: dict, markdown: Path, text: str) -> None:
    """The JSON table and the markdown page, each atomically."""
    write_json(out, table)
    with atomic_path(markdown) as tmp:
        tmp.write_text(text)
    typer.echo(f"wrote {out} and {markdown}")


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
    with runs_or_exit():
        table = collect(results)
        histories = load_histories(results, table)
        its = iterations(results, table)
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
        link = relative_link(figure, markdown)
    write_tables(out, table, markdown, render_markdown(table, dynamics(histories), link, its))
