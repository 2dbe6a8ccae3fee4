"""Every DVC stage lists, among its `deps`, each module of this repository that its command
imports, so that an edit to any of them makes the stage's results stale. A missing dep is a
correctness bug: the stage's result stays in dvc.lock, `dvc status` clean, after the code that
made it changed.

The closure is read statically (every `import` in a module, also those inside functions, which
the stages use to load torch late), from the module that `pipeline/cli.py` maps the stage's
sub-command to. cli.py itself only names those modules, so it is not counted. A package's
`__init__.py` counts when it holds code (imas/data/ defines DataError there).
"""

from __future__ import annotations

import ast
import shlex
from functools import cache
from pathlib import Path

import pytest
from dvc.repo import Repo

from pipeline.cli import STAGES

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("imas", "pipeline")
DVC_FILES = sorted(
    p.relative_to(ROOT).as_posix()
    for p in ROOT.rglob("dvc.yaml")
    if ".dvc" not in p.parts and "site-packages" not in p.parts
)


def _file_of(module: str) -> Path | None:
    """The repository file that defines `module`, if it is one of ours."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _has_code(init: Path) -> bool:
    body = ast.parse(init.read_text()).body
    return any(
        not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
        and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")
        for n in body
    )


def imported(path: Path) -> set[Path]:
    """Our files that `path` imports directly, with the packages that hold code on the way."""
    module = _module_of(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import name`: name is a submodule or something pkg defines.
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                file = _file_of(".".join(parts[:depth]))
                if file is None:
                    continue
                if file.name != "__init__.py" or _has_code(file):
                    found.add(file)
    return found - {path}


@cache
def closure(module: str) -> frozenset[str]:
    """Repository-relative paths of every file of ours that `module` imports, transitively,
    and its own."""
    start = _file_of(module)
    assert start is not None, f"{module} is not a module of this repository"
    seen, todo = {start}, [start]
    while todo:
        for file in imported(todo.pop()):
            if file not in seen:
                seen.add(file)
                todo.append(file)
    return frozenset(p.relative_to(ROOT).as_posix() for p in seen)


def stage_rows() -> list[tuple[str, str, str, frozenset[str]]]:
    """(dvc.yaml, stage, sub-command, deps as repository-relative paths) of every stage."""
    rows = []
    repo = Repo(str(ROOT))
    for stage in repo.index.stages:
        dvcfile = Path(stage.path).relative_to(ROOT).as_posix()
        if dvcfile not in DVC_FILES:
            continue
        words = shlex.split(stage.cmd)
        assert words[0] == "imas", f"{dvcfile}:{stage.name} does not run an imas command"
        deps = frozenset(
            Path(dep.fs_path).resolve().relative_to(ROOT).as_posix() for dep in stage.deps
        )
        rows.append((dvcfile, stage.name, words[1], deps))
    return rows


def test_the_closure_reads_relative_and_late_imports() -> None:
    # The training stages reach imas.data's DataError through the package, and pretrain
    # renders its crops with a function that imports torch inside it.
    files = closure("pipeline.stages.train")
    assert {"pipeline/stages/train.py", "pipeline/training/runner.py", "imas/train.py"} <= files
    assert "imas/data/__init__.py" in files
    assert "pipeline/cli.py" not in files and "imas/__init__.py" not in files
    # The method never reaches acquisition: a training stage imports no downloader.
    assert not any(f.startswith("pipeline/acquire/") for f in files)
    assert "pipeline/acquire/garments.py" in closure("pipeline.stages.pretrain")


@pytest.mark.parametrize("dvcfile", DVC_FILES)
def test_every_stage_depends_on_the_modules_it_imports(dvcfile: str) -> None:
    missing = {
        f"{name} (imas {command})": sorted(closure(STAGES[command].module) - deps)
        for file, name, command, deps in stage_rows()
        if file == dvcfile
    }
    missing = {stage: files for stage, files in missing.items() if files}
    assert not missing, f"{dvcfile}: stages miss deps they import:\n" + "\n".join(
        f"  {stage}: {', '.join(files)}" for stage, files in missing.items()
    )
