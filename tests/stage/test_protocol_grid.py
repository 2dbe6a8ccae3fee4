"""The protocol benchmark's dvc.yaml expands its params' grid: one split and one warmup per
(seed, label count), every method and every ablation continuing that cell's warmup."""

from __future__ import annotations

from pathlib import Path

from support.dvc_project import grid_stages, listed_stages

from pipeline.config.params import load_params

PROTOCOL = Path(__file__).resolve().parents[2] / "benchmarks" / "protocol"


def test_protocol_params_and_dvc_grid_resolve() -> None:
    params = load_params(PROTOCOL / "params.yaml", [])
    grid = params.benchmark
    assert grid is not None and grid.labeled == sorted(grid.labeled)
    assert set(grid.methods) == {"supervised", "mean_teacher", "imas"}
    assert set(grid.ablations) <= set(params.ablations)
    assert listed_stages(PROTOCOL) == [*grid_stages(grid), "verdict"]
