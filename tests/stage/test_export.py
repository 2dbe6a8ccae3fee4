"""`imas export` on the tiny model: each format matches PyTorch at sizes it was not traced at,
exports the teacher by default, and writes nothing when parity fails or input is bad."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support.exports import realistic, write_training_checkpoint
from typer.testing import CliRunner

from imas.config import ModelConfig
from imas.model import build_model
from pipeline.cli import app

# The default pipeline's model (params.yaml).
CFG = ModelConfig(
    backbone="tiny", num_classes=11, width=16, aspp_channels=32, aspp_rates=(2, 4, 6),
    low_level_channels=16, output_stride=8, stem=None, multi_grid=None, pretrained=None,
    aux_head=False,
)  # fmt: skip
CHECKS = ["--check", "65x65", "--check", "49x81"]
# Not a --check size and batch 3: the file must take sizes and batches it never saw.
OTHER = (3, 3, 40, 57)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    return write_training_checkpoint(folder / "imas.pt", CFG, realistic(CFG))


def network(checkpoint: Path, net: str) -> torch.nn.Module:
    model = build_model(CFG)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["last"][net])
    return model.eval()


def run(*args: str):
    return CliRunner().invoke(app, ["export", *args], catch_exceptions=False)


def other_input() -> torch.Tensor:
    return torch.randn(OTHER, generator=torch.Generator().manual_seed(11))


def test_onnx_matches_pytorch_at_any_size_with_named_free_dimensions(checkpoint: Path) -> None:
    import onnx
    import onnxruntime as ort

    result = run(str(checkpoint), *CHECKS)
    assert result.exit_code == 0, result.output
    out = checkpoint.with_suffix(".onnx")
    lines = [line for line in result.output.splitlines() if line.startswith("parity ")]
    assert [line.split(":")[0] for line in lines] == ["parity 2×3×65×65", "parity 1×3×49×81"]
    assert f"export: wrote {out}" in result.output

    graph = onnx.load(str(out)).graph
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in
            (graph.input[0], graph.output[0])]  # fmt: skip
    assert dims == [["batch", 3, "height", "width"], ["batch", 11, "height", "width"]]
    note = {p.key: p.value for p in onnx.load(str(out)).metadata_props}["imas.input"]
    assert "mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)" in note

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = other_input()
    (logits,) = session.run(["logits"], {"image": images.numpy()})
    with torch.no_grad():
        teacher = network(checkpoint, "teacher")(images).numpy()
        student = network(checkpoint, "student")(images).numpy()
    assert logits.shape == (3, 11, 40, 57)
    assert np.abs(logits - teacher).max() <= 1e-4  # the teacher, exported by default
    assert np.abs(teacher).max() > 1  # logits of a trained model's scale, not near zero
    assert np.abs(logits - student).max() > 0.1
    # Any size: even 8 × 8, whose stride-8 feature map is a single pixel.
    tiny = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(12))
    (small,) = session.run(["logits"], {"image": tiny.numpy()})
    with torch.no_grad():
        assert np.abs(small - network(checkpoint, "teacher")(tiny).numpy()).max() <= 1e-4


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("fmt", ["torch-export", "torchscript"])
def test_torch_formats_give_pytorchs_logits_exactly(checkpoint: Path, fmt: str) -> None:
    out = checkpoint.parent / f"student.{fmt}"
    result = run(str(checkpoint), "--format", fmt, "--net", "student", "--out", str(out), *CHECKS)
    assert result.exit_code == 0, result.output
    assert result.output.count("max |logit diff| 0.00e+00 (") == 2, result.output
    reader = (lambda f: torch.export.load(f).module()) if fmt == "torch-export" else torch.jit.load
    module = reader(str(out))
    student = network(checkpoint, "student")
    with torch.no_grad():
        for images in (other_input(), torch.randn(1, 3, 9, 9)):
            assert torch.equal(module(images), student(images))
        if fmt == "torch-export":
            # Its guards refuse a stride-8 feature map of one pixel (torch specialises size 1).
            with pytest.raises(AssertionError, match=r"^Guard failed: "):
                module(torch.randn(1, 3, 8, 9))


def test_a_failed_parity_check_writes_nothing(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.export import command, formats

    def off_by(path: Path, fmt: str, threads: int = 1):
        exported = formats.load_export(path, fmt, threads)
        return lambda images: exported(images) + 1e-3

    monkeypatch.setattr(command, "load_export", off_by)
    out = checkpoint.parent / "kept.torchscript.pt"
    out.write_bytes(b"a previous export")
    result = run(str(checkpoint), "--format", "torchscript", "--out", str(out), *CHECKS)
    assert result.exit_code == 1
    assert (
        f"error: parity failed: max |logit diff| 1.00e-03 exceeds --tolerance 0.0001; {out} not "
        "written (PyTorch's own float32 error on these inputs is "
    ) in result.output
    assert out.read_bytes() == b"a previous export"
    assert not list(checkpoint.parent.glob(".kept*"))  # no temporary left behind


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "tflite"], "error: unknown format 'tflite' (have: onnx, torch-export, "),
        (["--check", "65by65"], "error: size '65by65': expected HEIGHTxWIDTH"),
        (["--net", "ema"], "error: --net 'ema': use auto, teacher or student"),
        (["--tolerance", "0"], "error: --tolerance 0.0: must be above 0"),
    ],
)
def test_bad_options_are_refused_before_any_work(
    checkpoint: Path, args: list[str], message: str
) -> None:
    before = sorted(checkpoint.parent.iterdir())
    result = run(str(checkpoint), "--out", str(checkpoint.parent / "bad.onnx"), *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert sorted(checkpoint.parent.iterdir()) == before


def test_a_custom_datasets_statistics_go_into_the_onnx_metadata(
    checkpoint: Path, tmp_path: Path
) -> None:
    import onnx

    root = tmp_path / "custom"
    root.mkdir()
    out = tmp_path / "custom.onnx"
    missing = run(str(checkpoint), "--data", str(root), "--out", str(out))
    assert missing.exit_code == 2 and not out.exists()
    expected = f"error: {root / 'normalization.json'}: not found; run the download stage"
    assert expected in missing.output
    stats = {"mean": [0.33, 0.33, 0.33], "std": [0.172, 0.172, 0.172]}
    (root / "normalization.json").write_text(json.dumps(stats))
    result = run(str(checkpoint), "--data", str(root), "--out", str(out), "--check", "33x33")
    assert result.exit_code == 0, result.output
    note = {p.key: p.value for p in onnx.load(str(out)).metadata_props}["imas.input"]
    assert "mean (0.33, 0.33, 0.33) and std (0.172, 0.172, 0.172)" in note


def test_a_missing_checkpoint_is_named(tmp_path: Path) -> None:
    result = run(str(tmp_path / "none.pt"))
    assert result.exit_code == 2
    assert f"error: checkpoint {tmp_path / 'none.pt'} does not exist" in result.output
