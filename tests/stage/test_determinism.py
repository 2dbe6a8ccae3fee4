"""Stage-level determinism on CPU: one seed, the same split lists and the same training outputs
byte for byte; another seed, another split and other numbers. (tests/unit/test_train.py checks the
same for `fit` alone.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.project import build
from typer.testing import CliRunner

from pipeline.cli import app


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("determinism"), ["download"])


@pytest.fixture
def imas(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")

    def run(*args: str) -> None:
        result = CliRunner().invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output

    return run


def split(imas, name: str, seed: int) -> tuple[bytes, bytes]:
    imas("split", "--out", f"splits/{name}", "--set", f"seed={seed}")
    folder = Path("splits") / name
    return (folder / "labeled.txt").read_bytes(), (folder / "unlabeled.txt").read_bytes()


def test_one_seed_one_split_another_seed_another(imas) -> None:
    first, again, other = split(imas, "a", 0), split(imas, "b", 0), split(imas, "c", 1)
    assert first == again
    assert first[0] != other[0]  # another labeled set
    assert sorted(first[0].split() + first[1].split()) == sorted(
        other[0].split() + other[1].split()
    )


def warmup(imas, name: str, seed: int) -> dict[str, bytes]:
    files = {"--out": f"models/{name}.pt", "--metrics": f"metrics/{name}.json"}
    files["--history"] = f"metrics/{name}.csv"
    args = [a for pair in files.items() for a in pair]
    imas("warmup", "--split", "splits/a", *args, "--set", f"seed={seed}")
    return {flag: Path(path).read_bytes() for flag, path in files.items()}


def test_one_seed_the_same_outputs_another_seed_other_numbers(imas) -> None:
    split(imas, "a", 0)
    first, again, other = warmup(imas, "a", 0), warmup(imas, "b", 0), warmup(imas, "c", 1)
    assert first == again  # checkpoint, metrics and history, byte for byte
    assert first["--metrics"] != other["--metrics"]
    assert first["--out"] != other["--out"]
