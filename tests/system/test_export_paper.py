"""`imas export` of the paper's model: voc_classic_r101's DeepLabV3+ (deep-stem ResNet-101,
output stride 16, multi-grid, 21 classes, 59.5 M parameters) to ONNX, run by ONNX Runtime at
two sizes within 1e-4 of PyTorch.

About 30 s of CPU: the torch.export-based exporter takes ~20 s on this model. torch.export and
TorchScript exports of it gave PyTorch's logits exactly (0.0) by hand; tests/stage/test_export.py
checks those formats on the tiny model.
"""

from __future__ import annotations

import re
from pathlib import Path

from support.exports import realistic, write_training_checkpoint
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config.presets import preset_params

ROOT = Path(__file__).resolve().parents[2]


def test_resnet101_exports_to_onnx_within_1e_4(tmp_path: Path) -> None:
    cfg = preset_params("voc_classic_r101", ROOT / "params.yaml").model
    assert (cfg.backbone, cfg.output_stride, cfg.num_classes) == ("resnet101", 16, 21)
    checkpoint = write_training_checkpoint(tmp_path / "r101.pt", cfg, realistic(cfg))
    result = CliRunner().invoke(
        app,
        ["export", str(checkpoint), "--check", "129x129", "--check", "97x161"],
        catch_exceptions=False,
    )
    print(result.output)  # the parity figures, for the log
    assert result.exit_code == 0, result.output
    figures = re.findall(
        r"^parity (\S+): max \|logit diff\| (\S+) \(PyTorch float32 vs float64 (\S+); "
        r"\|logits\| up to (\S+)\)$",
        result.output,
        flags=re.MULTILINE,
    )
    assert [f[0] for f in figures] == ["2×3×129×129", "1×3×97×161"]
    for _, diff, _, scale in figures:
        assert float(diff) <= 1e-4
        assert float(scale) > 1  # a trained model's logit scale, where errors would show
    assert (tmp_path / "r101.onnx").stat().st_size > 59_000_000 * 4  # the weights are inside
