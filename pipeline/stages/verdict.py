"""Stage `verdict` of a benchmark project: the grid judged by the rules fixed before it ran
(pipeline/reporting/verdict.py), written as JSON, a paper-style table and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config.options import ParamsOpt, params_or_exit
from pipeline.control.outputs import atomic_path, write_json
from pipeline.reporting.inputs import ReportInputError
from pipeline.reporting.verdict import (
    judge,
    load_grid,
    scene_bootstrap,
    verdict_json,
)
from pipeline.reporting.verdict_figures import draw_figures, figure_data
from pipeline.reporting.verdict_markdown import render_markdown, rule_lines


def command(
    results: Annotated[
        Path, typer.Option(help="folder of <labeled>-s<seed>/ run files of the benchmark grid")
    ] = Path("results"),
    params_file: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="verdict JSON to write")] = Path("reports/verdict.json"),
    markdown: Annotated[
        Path, typer.Option(help="paper-style table with intervals and the rule lines to write")
    ] = Path("reports/verdict.md"),
    figures: Annotated[
        Path, typer.Option(help="folder for forest.png, premise.png and easiness.png")
    ] = Path("reports/verdict"),
    partial: Annotated[
        bool,
        typer.Option(
            help="judge only the complete (count, seed) cells and list the missing ones, "
            "instead of failing on the first missing run file"
        ),
    ] = False,
) -> None:
    """Judge the benchmark grid by the rules fixed before it ran: verdict JSON, a paper-style
    table with 95 % intervals over seeds, and forest, premise and easiness figures.

    Nothing is written unless every input reads: a missing or malformed run file exits 1
    naming the file.
    """
    params = params_or_exit(params_file)
    if params.benchmark is None:
        typer.echo(f"error: {params_file}: no `benchmark` section names the grid", err=True)
        raise typer.Exit(1)
    try:
        g = load_grid(results, params.benchmark, partial)
        v = judge(g, params.benchmark.methods)
        boot = scene_bootstrap(g)
        text = render_markdown(g, v, boot)
        drawn = figure_data(g, v)
    except ReportInputError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    write_json(out, verdict_json(g, v, boot))
    with atomic_path(markdown) as tmp:
        tmp.write_text(text)
    draw_figures(figures, drawn)
    if g.missing:
        typer.echo(f"partial grid: missing cells {', '.join(g.missing)}")
    for name, _, outcome in rule_lines(v):
        typer.echo(f"{name}: {outcome}")
