"""What the training and evaluation stages share: runtime setup, checkpoints, data loaders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from imas import distributed
from imas.checkpoint import NonFiniteError, canonical, nonfinite_keys
from imas.data.catalogue import layout_for
from imas.data.datasets import LabeledDataset, UnlabeledDataset, ValDataset
from imas.data.splits import read_list
from pipeline.config.params import Params, RuntimeParams
from pipeline.control.outputs import atomic_path
from pipeline.control.threads import apply_threads


def setup_runtime(runtime: RuntimeParams, seed: int) -> torch.device:
    """Threads, determinism and device; returns the device to train on.

    Threads are shared fairly among parallel queue jobs, and the processes torchrun starts on
    one machine split a job's share: each takes `threads // processes` (at least one) and, on
    CUDA, the GPU of its local rank.
    """
    apply_threads(runtime.threads, processes=distributed.local_world())
    torch.manual_seed(seed)
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is available")
    use_cuda = runtime.device == "cuda" or (runtime.device == "auto" and torch.cuda.is_available())
    if not use_cuda:
        # CPU kernels are deterministic with this flag; same seed, same numbers.
        torch.use_deterministic_algorithms(True)
        return torch.device("cpu")
    if distributed.local_world() == 1:
        return torch.device("cuda")
    torch.cuda.set_device(distributed.local_rank())
    return torch.device("cuda", distributed.local_rank())


def save_checkpoint(path: Path | str, payload: dict[str, Any]) -> None:
    """Write `payload` atomically; refuse (NonFiniteError, nothing written) if any tensor holds
    NaN or Inf, so a diverged run never replaces a good checkpoint or resume state."""
    bad = nonfinite_keys(payload)
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise NonFiniteError(
            f"{path}: not written, non-finite values in {', '.join(bad[:5])}{more}; the "
            "previous file (if any) is kept"
        )
    # Through a file object: given a path, torch.save names the archive's inner folder after the
    # (random) temp file, so equal weights gave different bytes and DVC hashes on every run.
    # canonical: equal values give equal bytes, however the payload was built (a resumed run's
    # best snapshot was read back from the resume file).
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        torch.save(canonical(payload), fh)


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint written by a stage; tensors and plain types only (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (run its stage first)")
    return torch.load(path, map_location="cpu", weights_only=True)


class ResumeError(RuntimeError):
    """A resume checkpoint exists but cannot be used; the message names the file."""


def resume_path(out: Path | str) -> Path:
    """Where a stage writing `out` keeps its resume checkpoint: `models/imas.pt` →
    `models/imas.resume.pt`, beside the output and outside what DVC tracks."""
    out = Path(out)
    return out.with_name(f"{out.stem}.resume{out.suffix or '.pt'}")


def remove_resume_temps(path: Path | str) -> None:
    """Delete the temporaries of `path` that a process killed while writing it left behind
    (`atomic_path` names them `.<name>.<random>.tmp`)."""
    path = Path(path)
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def save_resume(path: Path | str, run: str, state: dict[str, Any]) -> None:
    """Write `fit`'s resume state, tagged with the run it belongs to, atomically: a crash while
    writing leaves the previous resume checkpoint in place."""
    save_checkpoint(path, {"run": run, "state": state})


def load_resume(path: Path | str, run: str) -> dict[str, Any] | None:
    """The resume state at `path` if it belongs to `run`; None if there is no file, or it is
    from a run with other params or inputs (then the caller starts over and replaces it).

    A file that cannot be read is an error, never silently ignored or overwritten: it names the
    file and says what to do.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, foreign types: all mean unusable
        raise ResumeError(
            f"resume checkpoint {path} is unreadable ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}); delete it to train "
            "from the start"
        ) from err
    if not isinstance(payload, dict) or not {"run", "state"} <= payload.keys():
        raise ResumeError(
            f"resume checkpoint {path} is not a resume checkpoint (no run/state); delete it to "
            "train from the start"
        )
    if payload["run"] != run:
        return None
    return payload["state"]


def _loader(dataset, batch: int, shuffle: bool, seed: int, runtime: RuntimeParams, drop: bool):
    # Worker processes seed their augmentations from this generator: one stream per rank.
    generator = torch.Generator().manual_seed(distributed.rank_seed(seed, distributed.rank()))
    sampler = None
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
    labeled_ids = read_list(split / "labeled.txt")
    unlabeled_ids = read_list(split / "unlabeled.txt")
    n_cls = params.model.num_classes
    kwargs = _dataset_kwargs(params)
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
    dataset = ValDataset(data, ids, params.model.num_classes, **_dataset_kwargs(params))
    if shard and distributed.active():
        indices = distributed.shard(len(dataset), distributed.rank(), distributed.world_size())
        dataset = torch.utils.data.Subset(dataset, list(indices))
    return _loader(dataset, params.evaluate.batch_size, False, 0, params.runtime, drop=False)
