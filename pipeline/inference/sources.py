"""Where `imas predict` gets its segmenter: a checkpoint a training stage wrote (weights picked by
`--weights`, inference from params, classes and normalisation from the dataset), or an MLflow
model (which carries all of them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from imas.data import DataError
from imas.data.catalogue import CITYSCAPES_CLASSES, VOC_CLASSES
from imas.predict import Classes, Inference, Segmenter, build_segmenter
from pipeline.config.params import GENERATED, Params
from pipeline.training.checkpoints import load_checkpoint, weight_snapshots
from pipeline.training.loaders import input_normalization

Pick = Literal["auto", "best-teacher", "last-teacher", "best-student", "last-student"]
PICKS: tuple[Pick, ...] = ("auto", "best-teacher", "last-teacher", "best-student", "last-student")


class SourceError(ValueError):
    """A checkpoint or model cannot give a segmenter; the message names the file or URI."""


def dataset_classes(params: Params, data: Path) -> Classes:
    """Classes of `params.dataset`: names in class-index order, VOC's colours. A custom
    dataset's come from its prepared root `data` (`classes.json`, `palette.json`: the class
    list's own colours)."""
    if params.dataset == "custom":
        try:
            names = json.loads((data / "classes.json").read_text(encoding="utf-8"))
            colours = json.loads((data / "palette.json").read_text(encoding="utf-8"))
            return Classes(names, [(int(r), int(g), int(b)) for r, g, b in colours])
        except FileNotFoundError as err:
            raise SourceError(
                f"{err.filename}: not found; prepare the custom dataset first (imas download "
                f"--out {data}), or pass its root with --data"
            ) from None
        except (ValueError, TypeError) as err:
            raise SourceError(f"{data}: invalid classes.json or palette.json ({err})") from None
    if params.dataset in GENERATED:
        section = getattr(params.data, params.dataset)
        return Classes.voc(list(section.class_names))
    return Classes.voc(list(VOC_CLASSES if params.dataset == "voc" else CITYSCAPES_CLASSES))


def pick_weights(payload: dict[str, Any], path: Path, pick: Pick) -> tuple[dict, str]:
    """The state dict `pick` names in a checkpoint, and what it is ("best teacher").

    Stage checkpoints hold `best` and `last` snapshots of student and teacher (no teacher for
    supervised runs); `--weights` files of the protocol benchmark hold the last ones only.
    `auto` is the best teacher, else the best student, else the last of either.
    """
    snapshots = weight_snapshots(payload)
    if snapshots is None:
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


def from_checkpoint(
    path: Path, pick: Pick, params: Params, data: Path
) -> tuple[Segmenter, Classes, str]:
    """Segmenter, classes and a description of checkpoint `path`: its model config and the
    weights `pick` names, applied as `params.evaluate` says, with the classes and the input
    normalisation of `params.dataset` (a custom one's from its prepared root `data`)."""
    try:
        payload = load_checkpoint(path)
    except FileNotFoundError as err:
        raise SourceError(str(err)) from None
    except Exception as err:  # truncated zip, pickled code refused by weights_only, …
        raise SourceError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or "model" not in payload:
        raise SourceError(f"{path}: not a checkpoint of a training stage (no model config)")
    weights, what = pick_weights(payload, path, pick)
    classes = dataset_classes(params, data)
    count = payload["model"].get("num_classes")
    if count != len(classes.names):
        raise SourceError(
            f"{path}: a model of {count} classes, but params.yaml's dataset {params.dataset} "
            f"has {len(classes.names)}; pass the --params the checkpoint was trained with"
        )
    try:
        norm = input_normalization(params, data)
    except DataError as err:
        raise SourceError(str(err)) from None
    inference = Inference(**params.evaluate.tiles())
    try:
        segmenter = build_segmenter(payload["model"], weights, inference, norm)
    except (ValueError, RuntimeError) as err:  # a config or state dict that does not fit
        raise SourceError(f"{path}: cannot build its model ({err})") from err
    return segmenter, classes, f"{path} ({what})"
