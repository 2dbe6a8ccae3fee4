"""Where `imas predict` gets its segmenter: a checkpoint a training stage wrote (weights picked by
`--weights`, inference and class names from params), or an MLflow model (both carried by it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from imas.data.catalogue import CITYSCAPES_CLASSES, VOC_CLASSES
from imas.predict import Inference, Segmenter, build_segmenter
from pipeline.config.params import GENERATED, Params
from pipeline.training.checkpoints import load_checkpoint

Pick = Literal["auto", "best-teacher", "last-teacher", "best-student", "last-student"]
PICKS: tuple[Pick, ...] = ("auto", "best-teacher", "last-teacher", "best-student", "last-student")


class SourceError(ValueError):
    """A checkpoint or model cannot give a segmenter; the message names the file or URI."""


def dataset_classes(params: Params) -> list[str]:
    """Class names of `params.dataset`, in class-index order."""
    if params.dataset in GENERATED:
        section = getattr(params.data, params.dataset)
        return list(section.class_names)
    return list(VOC_CLASSES if params.dataset == "voc" else CITYSCAPES_CLASSES)


def pick_weights(payload: dict[str, Any], path: Path, pick: Pick) -> tuple[dict, str]:
    """The state dict `pick` names in a checkpoint, and what it is ("best teacher").

    Stage checkpoints hold `best` and `last` snapshots of student and teacher (no teacher for
    supervised runs); `--weights` files of the protocol benchmark hold the last ones only.
    `auto` is the best teacher, else the best student, else the last of either.
    """
    if "best" in payload and "last" in payload:
        snapshots = {"best": payload["best"], "last": payload["last"]}
    elif "student" in payload:
        snapshots = {"last": {"student": payload["student"], "teacher": payload.get("teacher")}}
    else:
        raise SourceError(f"{path}: not a checkpoint of a training stage (no best/last weights)")
    if pick == "auto":
        order = [(e, n) for e in ("best", "last") for n in ("teacher", "student")]
    else:
        epoch, _, net = pick.partition("-")
        order = [(epoch, net)]
    for epoch, net in order:
        weights = snapshots.get(epoch, {}).get(net)
        if weights is not None:
            return weights, f"{epoch} {net}"
    have = [f"{e}-{n}" for e, nets in snapshots.items() for n, w in nets.items() if w is not None]
    raise SourceError(f"{path}: no {pick} weights in this checkpoint (it has: {', '.join(have)})")


def from_checkpoint(path: Path, pick: Pick, params: Params) -> tuple[Segmenter, list[str], str]:
    """Segmenter, class names and a description of checkpoint `path`: its model config and the
    weights `pick` names, applied as `params.evaluate` says, classes of `params.dataset`."""
    try:
        payload = load_checkpoint(path)
    except FileNotFoundError as err:
        raise SourceError(str(err)) from None
    except Exception as err:  # truncated zip, pickled code refused by weights_only, …
        raise SourceError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or "model" not in payload:
        raise SourceError(f"{path}: not a checkpoint of a training stage (no model config)")
    weights, what = pick_weights(payload, path, pick)
    names = dataset_classes(params)
    classes = payload["model"].get("num_classes")
    if classes != len(names):
        raise SourceError(
            f"{path}: a model of {classes} classes, but params.yaml's dataset {params.dataset} "
            f"has {len(names)}; pass the --params the checkpoint was trained with"
        )
    try:
        segmenter = build_segmenter(payload["model"], weights, Inference(**params.evaluate.tiles()))
    except (ValueError, RuntimeError) as err:  # a config or state dict that does not fit
        raise SourceError(f"{path}: cannot build its model ({err})") from err
    return segmenter, names, f"{path} ({what})"
