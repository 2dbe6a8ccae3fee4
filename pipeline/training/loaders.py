"""Data loaders of the training and evaluation stages over a prepared dataset root: labeled and
unlabeled streams of a split, and evaluation lists in order (sharded under DDP); and what a root
says about its inputs: the normalisation statistics and, for a custom dataset, its classes."""

from __future__ import annotations

import json
from collections.abc import Sized
from pathlib import Path
from typing import Any, cast

import torch

from imas import distributed
from imas.data import DataError
from imas.data.catalogue import layout_for
from imas.data.datasets import LabeledDataset, UnlabeledDataset, ValDataset
from imas.data.normalization import IMAGENET, Normalization
from imas.data.splits import read_list
from pipeline.config.params import Params
from pipeline.config.sections import RuntimeParams


def _loader(dataset, batch: int, shuffle: bool, seed: int, runtime: RuntimeParams, drop: bool):
    # Worker processes seed their augmentations from this generator: one stream per rank.
    generator = torch.Generator().manual_seed(distributed.rank_seed(seed, distributed.rank()))
    sampler: torch.utils.data.Sampler | None = None
    if shuffle and distributed.active():
        # The same permutation on every rank (seeded, reshuffled per pass by Stream's
        # set_epoch), each rank taking its own equal share of it.
        sampler = torch.utils.data.DistributedSampler(
            dataset,
            num_replicas=distributed.world_size(),
            rank=distributed.rank(),
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        drop_last=drop,
        num_workers=runtime.num_workers,
        generator=generator,
        persistent_workers=runtime.num_workers > 0,
    )


def input_normalization(params: Params, data: Path) -> Normalization:
    """The statistics that normalise the images of root `data`: ImageNet's, or for a custom
    dataset those its download stage wrote (`normalization.json`: ImageNet's or computed)."""
    if params.dataset != "custom":
        return IMAGENET
    return read_normalization(data)


def read_normalization(data: Path) -> Normalization:
    """The statistics of prepared root `data` (its `normalization.json`); DataError naming the
    file when it is missing or invalid."""
    path = data / "normalization.json"
    try:
        return Normalization.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run the download stage (imas download)") from None
    except ValueError as err:
        raise DataError(f"{path}: not a normalization ({err})") from None


def check_classes(params: Params, data: Path) -> None:
    """A custom root's class list must have `model.num_classes` entries (the other datasets'
    counts are checked with params): DataError naming the file and both counts."""
    if params.dataset != "custom":
        return
    path = data / "classes.json"
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read the class list ({err})") from None
    if len(names) != params.model.num_classes:
        raise DataError(
            f"{path}: lists {len(names)} classes but model.num_classes="
            f"{params.model.num_classes}; set model.num_classes: {len(names)}"
        )


def _dataset_kwargs(params: Params) -> dict[str, Any]:
    # Decoded images are kept in memory only for the generated datasets (64-px scenes: 10,582
    # take 170 MB); VOC's 10,582 would need several GB per loader.
    return {
        "cache": params.dataset in ("garments", "embedded"),
        "layout": layout_for(params.dataset),
    }


def train_loaders(
    params: Params, data: Path, split: Path, batch_labeled: int, batch_unlabeled: int
) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader, int]:
    """Labeled and unlabeled loaders of the split, and the size of the unlabeled set.

    The batch sizes are per process and micro-batch; in a process group each process loads its
    own shard of both sets.
    """
    check_classes(params, data)
    labeled_ids = read_list(split / "labeled.txt")
    unlabeled_ids = read_list(split / "unlabeled.txt")
    n_cls = params.model.num_classes
    # Padding takes the normalisation's mean colour, which normalises to ≈ 0.
    kwargs = {**_dataset_kwargs(params), "norm": input_normalization(params, data)}
    labeled = LabeledDataset(data, labeled_ids, n_cls, params.aug, **kwargs)
    unlabeled = UnlabeledDataset(data, unlabeled_ids, params.aug, **kwargs)
    # Different seeds for the two shuffles so the streams do not move in lockstep (under DDP
    # the sampler seeds pass p with seed + p: 2**32 apart, the streams never share one).
    lab = _loader(labeled, batch_labeled, True, params.seed, params.runtime, drop=True)
    unl_seed = params.seed + (2**32 if distributed.active() else 1)
    unl = _loader(unlabeled, batch_unlabeled, True, unl_seed, params.runtime, drop=True)
    return lab, unl, len(unlabeled_ids)


def val_loader(
    params: Params, data: Path, shard: bool = False, split: str | None = None
) -> torch.utils.data.DataLoader:
    """The `split` list (default `evaluate.split`: val, or tune while choosing settings) in
    order; with `shard`, in a process group, this rank's share of it (each image on exactly one
    rank: the confusion matrices then sum to the whole set's)."""
    name = split or params.evaluate.split
    ids = read_list(data / "ImageSets" / "Segmentation" / f"{name}.txt")
    return ids_loader(params, data, ids, shard)


def ids_loader(
    params: Params, data: Path, ids: list[str], shard: bool = False
) -> torch.utils.data.DataLoader:
    """Images, masks and ids of `ids` in order, batches of `evaluate.batch_size`."""
    dataset: torch.utils.data.Dataset = ValDataset(
        data, ids, params.model.num_classes, **_dataset_kwargs(params)
    )
    if shard and distributed.active():
        size = len(cast(Sized, dataset))
        indices = distributed.shard(size, distributed.rank(), distributed.world_size())
        dataset = torch.utils.data.Subset(dataset, list(indices))
    return _loader(dataset, params.evaluate.batch_size, False, 0, params.runtime, drop=False)
