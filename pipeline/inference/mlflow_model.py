"""The MLflow model of a train run, and the way back from a model URI to a segmenter.

The train stage logs its best teacher (the best student of a supervised run) as a pyfunc model
registered as `imas-<dataset>`: uint8 RGB images `[B, 3, H, W]` in, int64 class indices
`[B, H, W]` out, computed as the evaluation computes them (whole image or sliding window). It is
a "model from code" (`pyfunc_model.py`) carrying the library `imas/` and a segmenter file of
plain tensors, not the `mlflow.pytorch` flavour: that flavour either pickles the module
(MLflow refuses to load pickles unless MLFLOW_ALLOW_PICKLE_DESERIALIZATION is set, and this
project never unpickles code) or traces it with torch.export, which fixes the sliding-window
loop to the input example's image size and returns whatever the traced graph computes, not
the evaluation's own code.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

import imas
from imas.config import TrainConfig
from imas.data.catalogue import layout_for
from imas.data.datasets import read_image
from imas.data.splits import read_list
from imas.predict import Classes, Inference, Segmenter, read_segmenter, segmenter_payload
from imas.train import FitResult
from pipeline.config.params import Params
from pipeline.control.tracking import registry_lock
from pipeline.inference.sources import SourceError, dataset_classes
from pipeline.training.checkpoints import save_checkpoint
from pipeline.training.loaders import input_normalization

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
LIBRARY = Path(imas.__file__).parent
# The model's artifact key for the segmenter file, as pyfunc_model.py reads it.
ARTIFACT = "segmenter"
# The input example is a real image, cropped to at most this side: a whole Cityscapes image
# is 6 M numbers, stored twice as JSON in the model.
EXAMPLE_SIDE = 128


def registered_name(params: Params) -> str:
    return f"imas-{params.dataset}"


def imported_distributions(files: list[Path]) -> set[str]:
    """Installed distributions whose top-level modules `files` import (stdlib and `imas`
    left out): what the model's code needs besides itself."""
    modules: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    modules -= {*sys.stdlib_module_names, "__future__", "imas"}
    owners = importlib.metadata.packages_distributions()
    missing = sorted(m for m in modules if m not in owners)
    if missing:
        raise RuntimeError(f"no installed distribution provides {', '.join(missing)}")
    return {dist for m in modules for dist in owners[m]}


def pinned_requirements() -> list[str]:
    """`name==version` of every distribution the model's code imports, as installed: the
    versions the model was trained with. A local label (`2.14.1+cpu`) is dropped, since only
    its own index serves it; the public release has the same code."""
    files = [MODEL_CODE, *sorted(LIBRARY.rglob("*.py"))]
    pins = []
    for dist in sorted(imported_distributions(files), key=str.lower):
        version = importlib.metadata.version(dist).split("+")[0]
        pins.append(f"{dist}=={version}")
    return pins


def input_example(params: Params, data: Path) -> np.ndarray:
    """The first image of the evaluation list, uint8 `[1, 3, h, w]`, cropped to
    `EXAMPLE_SIDE` at most."""
    ids = read_list(data / "ImageSets" / "Segmentation" / f"{params.evaluate.split}.txt")
    image = read_image(layout_for(params.dataset).image_path(data, ids[0]))
    return image[None, :, :EXAMPLE_SIDE, :EXAMPLE_SIDE].numpy().copy()


def signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, 3, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.int64), (-1, -1, -1))]),
    )


@contextmanager
def _path_kept() -> Iterator[None]:
    # Logging loads the model once to check the input example, which puts the model's copy of
    # imas/ (a temporary folder) in front of sys.path for the rest of the process.
    saved = list(sys.path)
    try:
        yield
    finally:
        sys.path[:] = saved


def log_best_teacher(
    run_id: str, params: Params, cfg: TrainConfig, result: FitResult, val_miou: float, data: Path
) -> tuple[str, str]:
    """Log the best teacher (the best student without one) of `result` to the active run as
    model `model`, register it as `imas-<dataset>` and tag the version; (name, version)."""
    import mlflow

    net = "teacher" if result.best.get("teacher") is not None else "student"
    weights = result.best[net]
    assert weights is not None  # every fit keeps a best student
    inference = Inference(**params.evaluate.tiles())
    classes = dataset_classes(params, data)
    norm = input_normalization(params, data)
    name = registered_name(params)
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "segmenter.pt"
        payload = segmenter_payload(params.model, weights, inference, classes, norm)
        save_checkpoint(file, payload)
        with _path_kept(), registry_lock():
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_CODE),
                artifacts={ARTIFACT: str(file)},
                code_paths=[str(LIBRARY)],
                signature=signature(),
                input_example=input_example(params, data),
                pip_requirements=pinned_requirements(),
                metadata={
                    "class_names": classes.names,
                    "inference": inference.kwargs(),
                    "normalization": norm.as_dict(),
                    "weights": net,
                },
                registered_model_name=name,
            )
    version = str(info.registered_model_version)
    commit = client.get_run(run_id).data.tags.get("mlflow.source.git.commit", "unknown")
    tags = {
        "method": cfg.method,
        "labeled": params.labeled,
        "seed": params.seed,
        "val_miou": val_miou,
        "git_commit": commit,
        "dataset": params.dataset,
        "weights": f"best {net}",
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
    mlflow.set_tag("registered_model", f"models:/{name}/{version}")
    return name, version


def load_model_uri(uri: str, tracking_uri: str) -> tuple[Segmenter, Classes]:
    """Download the MLflow model `uri` (models:/NAME/VERSION, runs:/…, a folder) and read its
    segmenter file with `torch.load(weights_only=True)`: no code of the model runs here."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # A bar per downloaded file (the model's code is dozens); predict's own bar follows.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(download_artifacts(artifact_uri=uri, dst_path=tmp))
            flavor = Model.load(str(local)).flavors.get("python_function", {})
        except (MlflowException, OSError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise SourceError(f"MLflow model {uri}: cannot load it ({first})") from None
        artifact = flavor.get("artifacts", {}).get(ARTIFACT, {}).get("path")
        if artifact is None:
            raise SourceError(f"MLflow model {uri}: not an imas model (no {ARTIFACT} artifact)")
        try:
            return read_segmenter(local / artifact)
        except (OSError, ValueError) as err:
            raise SourceError(f"MLflow model {uri}: {err}") from None
