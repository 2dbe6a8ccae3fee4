"""Checkpoints never unpickle code, and every server the project starts listens on loopback."""

from __future__ import annotations

import ast
import itertools
import pickle
import re
from pathlib import Path

import pytest
import torch

from imas.model import build_model
from imas.weights import load_pretrained, read_state_dict
from pipeline.config.params import load_params
from pipeline.training.checkpoints import ResumeError, load_checkpoint, load_resume

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", ".dvc", "data", "models", "node_modules", "__pycache__"}


def project_files(pattern: str) -> list[Path]:
    """Files of the code base matching `pattern`, outside data, caches and environments."""
    return sorted(
        p
        for p in ROOT.rglob(pattern)
        if p.is_file() and not SKIP_DIRS & set(p.relative_to(ROOT).parts[:-1])
    )


# This file is left out: it loads one checkpoint unsafely on purpose, to show the payload works.
SOURCES = [p for p in project_files("*.py") if p != Path(__file__).resolve()]
# Calls that unpickle a checkpoint: torch.load and torch.hub's loader (which torchvision's
# weights enums call through get_state_dict). Each must pass weights_only=True.
UNPICKLERS = {"load", "load_state_dict_from_url", "get_state_dict"}


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return f"{_name(func.value)}.{func.attr}"
    return func.id if isinstance(func, ast.Name) else "?"


def unsafe_loads(path: Path) -> list[str]:
    """`file:line call` of every checkpoint-loading call without weights_only=True."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        last = name.rsplit(".", 1)[-1]
        if last not in UNPICKLERS or (last == "load" and name not in {"torch.load", "load"}):
            continue
        safe = any(
            kw.arg == "weights_only"
            and isinstance(kw.value, ast.Constant)
            and kw.value.value is True
            for kw in node.keywords
        )
        if not safe:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return found


def test_every_checkpoint_load_passes_weights_only_true() -> None:
    assert len(SOURCES) > 50  # the scan sees the code base
    assert unsafe_loads(Path(__file__).parents[1] / "support" / "params.py") == []
    assert [u for path in SOURCES for u in unsafe_loads(path)] == []


def test_the_scan_finds_an_unsafe_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("test_security.ROOT", tmp_path)
    code = tmp_path / "bad.py"
    code.write_text(
        "import torch\n"
        "a = torch.load('x')\n"
        "b = torch.load('x', weights_only=False)\n"
        "c = torch.load('x', weights_only=True)\n"
        "d = W.get_state_dict(progress=False)\n"
        "e = torch.hub.load_state_dict_from_url(u, weights_only=flag)\n"
        "f = yaml.load(text)\n"  # not a checkpoint loader
    )
    assert unsafe_loads(code) == [
        "bad.py:2 torch.load",
        "bad.py:3 torch.load",
        "bad.py:5 W.get_state_dict",
        "bad.py:6 torch.hub.load_state_dict_from_url",
    ]


def _ran(marker: str) -> None:
    Path(marker).write_text("code ran while loading a checkpoint")


class Payload:
    """Unpickling this calls `_ran`: what a tampered checkpoint would do with os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_ran, (self.marker,))


def evil_checkpoint(path: Path, marker: Path, around: dict | None = None) -> Path:
    torch.save({**(around or {}), "extra": Payload(marker)}, path)
    return path


def test_a_checkpoint_carrying_code_is_refused_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "ran.txt"
    weights = {"w": torch.zeros(2)}
    stage_ckpt = evil_checkpoint(tmp_path / "warmup.pt", marker, {"best": {"student": weights}})
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(stage_ckpt)
    resume = evil_checkpoint(tmp_path / "x.resume.pt", marker, {"run": "r", "state": {}})
    with pytest.raises(ResumeError, match=r"x\.resume\.pt is unreadable \(UnpicklingError"):
        load_resume(resume, "r")
    pretrained = evil_checkpoint(tmp_path / "resnet101.pth", marker, weights)
    with pytest.raises(pickle.UnpicklingError):
        read_state_dict(pretrained)
    # torchvision's ImageNet weights come from torch.hub's cache: a file planted there is loaded
    # without any download (the hash is checked on download only), so it must be refused too.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch/hub/checkpoints"
    cache.mkdir(parents=True)
    evil_checkpoint(cache / "resnet18-f37072fd.pth", marker, weights)
    params = load_params(
        ROOT / "params.yaml",
        ["model.backbone=resnet18", "model.stem=torchvision", "model.pretrained=imagenet"],
    )
    with pytest.raises(pickle.UnpicklingError):
        load_pretrained(build_model(params.model), params.model)
    assert not marker.exists()
    # The same file does run code when unpickled without weights_only: the payload is live.
    torch.load(stage_ckpt, weights_only=False)
    assert marker.exists()


LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SHELL_TEXTS = [ROOT / "Makefile", *project_files("*.md"), *project_files("*.sh")]
SHELL_TEXTS += [p for p in sorted((ROOT / ".ci").iterdir()) if p.is_file()]


def server_commands(text: str) -> list[str]:
    """`mlflow ui|server`, `mlflow models serve` and `http.server` command lines, continuation
    lines joined."""
    joined = re.sub(r"\s*\\\n\s*", " ", text)
    return [
        line.strip()
        for line in joined.splitlines()
        if re.search(r"\bmlflow (ui|server|models serve)\b|http\.server\b", line) and "--" in line
    ]


def non_loopback_servers(path: Path) -> list[str]:
    bad = []
    for cmd in server_commands(path.read_text()):
        host = re.search(r"(?:--host|--bind|-h)[ =](\S+)", cmd)
        if host is None or host.group(1).strip("'\"") not in LOOPBACK:
            bad.append(f"{path.relative_to(ROOT)}: {cmd}")
    return bad


def non_loopback_binds(path: Path) -> list[str]:
    """Servers and sockets in Python code bound to anything but loopback, and `--host` values
    in argument lists."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            name = _name(node.func)
            server = name.endswith(("HTTPServer", "TCPServer", "UDPServer", "create_server"))
            if (server or name.endswith(".bind")) and node.args:
                address = node.args[0]
                host = address.elts[0] if isinstance(address, ast.Tuple) else address
                if not (isinstance(host, ast.Constant) and host.value in LOOPBACK):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
        if isinstance(node, ast.List):
            values = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            for flag, value in itertools.pairwise(values):
                if flag in ("--host", "--bind") and value not in LOOPBACK:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {flag} {value}")
    return bad


def test_every_server_listens_on_loopback_only() -> None:
    commands = [c for p in SHELL_TEXTS for c in server_commands(p.read_text())]
    assert any("mlflow ui" in c for c in commands)  # make mlflow-ui is seen
    assert any("mlflow server" in c for c in commands)  # the README's shared server too
    assert any("mlflow models serve" in c for c in commands)  # and its model server
    assert [b for p in SHELL_TEXTS for b in non_loopback_servers(p)] == []
    assert [b for p in SOURCES for b in non_loopback_binds(p)] == []


def test_the_binding_checks_catch_an_open_server(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("test_security.ROOT", tmp_path)
    make = tmp_path / "Makefile"
    make.write_text(
        "ui:\n\tmlflow ui --backend-store-uri sqlite:///x.db \\\n\t\t--host 0.0.0.0 --port 5000\n"
        "ui2:\n\tmlflow ui --backend-store-uri sqlite:///x.db --port 5000\n"
        "ok:\n\tmlflow server --host 127.0.0.1 --port 5000\n"
        "serve:\n\tmlflow models serve -m models:/m/1 --env-manager local --port 5001\n"
    )
    assert non_loopback_servers(make) == [
        "Makefile: mlflow ui --backend-store-uri sqlite:///x.db --host 0.0.0.0 --port 5000",
        "Makefile: mlflow ui --backend-store-uri sqlite:///x.db --port 5000",
        "Makefile: mlflow models serve -m models:/m/1 --env-manager local --port 5001",
    ]
    code = tmp_path / "srv.py"
    code.write_text(
        "a = HTTPServer(('', 0), H)\n"
        "b = ThreadingHTTPServer(('127.0.0.1', 0), H)\n"
        "sock.bind(('0.0.0.0', 0))\n"
        "cmd = ['mlflow', 'server', '--host', '0.0.0.0']\n"
        "ok = ['mlflow', 'server', '--host', '127.0.0.1']\n"
    )
    assert non_loopback_binds(code) == [
        "srv.py:1 HTTPServer",
        "srv.py:3 sock.bind",
        "srv.py:4 --host 0.0.0.0",
    ]
