"""The code of the MLflow model the train stage logs ("models from code"): MLflow copies this
file into the model and runs it when the model is loaded or served, with the model's copy of
`imas` on the path. It imports nothing of `pipeline`, which the model does not carry.

Input: uint8 RGB images `[B, 3, H, W]` (one size per request); output: int64 class indices
`[B, H, W]`, computed by `imas.predict.Segmenter` with the inference (whole image or sliding
window) the model was trained and evaluated with.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from imas.predict import Classes, Segmenter, read_segmenter


class ImasSegmenter(PythonModel):
    """The pyfunc face of a segmenter file (the model's `segmenter` artifact)."""

    segmenter: Segmenter
    classes: Classes

    def load_context(self, context: Any) -> None:
        self.segmenter, self.classes = read_segmenter(context.artifacts["segmenter"])

    # Unannotated: MLflow reads annotations as the input's schema, and none can say "uint8
    # [B, 3, H, W]" as the logged TensorSpec signature does (MLflow warns about it at load).
    def predict(self, context, model_input, params=None):
        images = np.asarray(model_input)
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 RGB [B, 3, H, W], got dtype {images.dtype}")
        labels = self.segmenter(torch.from_numpy(np.ascontiguousarray(images)))
        return labels.numpy()


set_model(ImasSegmenter())
