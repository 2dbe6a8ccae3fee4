"""params.yaml, validated: the single source of every experiment knob.

The models compose the library's config sections. They are frozen and reject unknown keys; no
experiment knob has a default here, because DVC tracks params.yaml and cannot see a default that
lives in code. `load_params` fails with the field path and the offending value.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from imas.config import (
    AugConfig,
    ModelConfig,
    Section,
    SupervisedConfig,
)
from imas.data.catalogue import CITYSCAPES_CLASSES, POOL_SIZES, VOC_CLASSES, published_counts
from pipeline.config.merge import merge
from pipeline.config.paper_numbers import PRESETS
from pipeline.config.sections import (
    RUN_PARAMS,
    BenchmarkParams,
    DataParams,
    EvaluateParams,
    PretrainParams,
    RunParams,
    RuntimeParams,
    SupervisedRun,
    TeacherStudentRun,
)


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or invalid; the message names the field and value."""


# Class counts and the (labeled pool, train pool) sizes of the real datasets: classic VOC labels
# come from the 1,464 finely annotated train images, the unlabeled rest from train_aug.
REAL_DATASETS = {
    "voc": (len(VOC_CLASSES), POOL_SIZES["voc"]["train"], POOL_SIZES["voc"]["train_aug"]),
    "cityscapes": (
        len(CITYSCAPES_CLASSES),
        POOL_SIZES["cityscapes"]["train"],
        POOL_SIZES["cityscapes"]["train"],
    ),
}
# What one continuous schedule (warmup, then a training run) shares.
CONTINUOUS = ("lr", "head_lr_mult", "weight_decay", "momentum", "poly_power")
# Datasets generated offline from params (their section of `data` says how).
GENERATED = ("garments", "embedded")


class Params(Section):
    preset: str | None = Field(description="the paper setting applied by `imas preset`, or null")
    dataset: Literal["garments", "embedded", "voc", "cityscapes", "custom"]
    labeled: int = Field(ge=1, description="number of labeled images in the split")
    seed: int = Field(ge=0)
    data: DataParams
    pretrain: PretrainParams | None = Field(description="the pretrain stage (dataset: garments)")
    aug: AugConfig
    model: ModelConfig
    warmup: SupervisedConfig
    train: RunParams
    ablations: dict[str, dict[str, Any]]
    evaluate: EvaluateParams
    runtime: RuntimeParams
    benchmark: BenchmarkParams | None = None  # only a benchmark's params file has one
    # The `train` section as written: ablations merge over it, so the teacher–student fields
    # of a train section switched to supervised still reach an ablation that switches back.
    _train_raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _with_raw_train(cls, data: Any, handler: Any) -> Params:
        params = handler(data)
        if isinstance(data, dict) and isinstance(data.get("train"), dict):
            params._train_raw = copy.deepcopy(data["train"])
        else:  # built from a model: its train section is complete
            params._train_raw = params.train.model_dump()
        params._consistent()
        return params

    def _consistent(self) -> Params:
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r} is not one of: null, {', '.join(PRESETS)}")
        if self.dataset in GENERATED:
            section = getattr(self.data, self.dataset)
            if section is None or (self.dataset == "embedded" and self.data.embedded_seed is None):
                need = (
                    "data.embedded and data.embedded_seed"
                    if self.dataset == "embedded"
                    else (f"data.{self.dataset}")
                )
                raise ValueError(f"dataset {self.dataset!r} needs {need} in params")
            names = section.class_names
            if self.model.num_classes != len(names):
                raise ValueError(
                    f"model.num_classes={self.model.num_classes} but data.{self.dataset} gives "
                    f"{len(names)} classes ({', '.join(names)})"
                )
        elif self.dataset == "custom":
            # Its class count is in the folder's class list, which the download and split
            # stages compare with model.num_classes (params are checked without reading files).
            if self.data.custom is None:
                raise ValueError("dataset 'custom' needs data.custom in params")
        else:
            classes = REAL_DATASETS[self.dataset][0]
            if self.model.num_classes != classes:
                raise ValueError(
                    f"model.num_classes={self.model.num_classes} but dataset {self.dataset} has "
                    f"{classes} classes"
                )
        if self.dataset == "voc" and self.evaluate.batch_size != 1:
            # Whole-image evaluation: VOC images differ in size, so a batch cannot be stacked.
            raise ValueError(
                f"evaluate.batch_size={self.evaluate.batch_size}: VOC images differ in size, use 1"
            )
        self._check_split()
        self._check_pool("labeled=", self.labeled)
        self._check_continuous()
        sections = [("warmup", self.warmup), ("train", self.train)]
        sections += [(f"ablations.{name}", self.ablation(name)) for name in self.ablations]
        for where, section in sections:
            if section.aux_weight > 0 and not self.model.aux_head:
                raise ValueError(
                    f"{where}.aux_weight={section.aux_weight} needs model.aux_head: true"
                )
            section.micro_batches(self.runtime.nproc, where)  # raises naming the fields
        if self.benchmark is not None:
            self._check_grid(self.benchmark)
        return self

    def _check_continuous(self) -> None:
        """A run continuing the warmup's schedule must share its optimiser: one schedule has one
        base LR, momentum and decay."""
        sections = [("train", self.train)]
        sections += [(f"ablations.{name}", self.ablation(name)) for name in self.ablations]
        for where, section in sections:
            if section.init != "continue":
                continue
            for name in CONTINUOUS:
                mine, warm = getattr(section, name), getattr(self.warmup, name)
                if mine != warm:
                    raise ValueError(
                        f"{where}.{name}={mine} differs from warmup.{name}={warm}, but "
                        f"{where}.init='continue' continues the warmup's schedule; make them equal"
                    )
            if (section.epochs, section.iters_per_epoch) != (
                self.train.epochs,
                self.train.iters_per_epoch,
            ):
                raise ValueError(
                    f"{where} trains {section.epochs} × {section.iters_per_epoch} iterations, "
                    f"train {self.train.epochs} × {self.train.iters_per_epoch}: runs continuing "
                    "one warmup share its schedule, so they must train equally long"
                )

    def _check_split(self) -> None:
        split = self.data.split
        if split.family == "blended" and self.dataset != "voc":
            raise ValueError(
                f"data.split.family='blended' exists for voc only, not dataset {self.dataset!r}"
            )
        if split.source == "published":
            if self.dataset in GENERATED:
                raise ValueError(
                    "data.split.source='published': the built-in dataset has no published "
                    "lists; use 'generated'"
                )
            if self.dataset == "custom":
                raise ValueError(
                    "data.split.source='published': a custom dataset has no published lists; "
                    "use 'generated' (your own lists: data.custom.split: lists)"
                )
            dataset = "pascal" if self.dataset == "voc" else "cityscapes"
            counts = published_counts(dataset, split.family)
            if self.labeled not in counts:
                raise ValueError(
                    f"labeled={self.labeled} has no published {self.dataset} {split.family} "
                    f"list (have: {', '.join(map(str, counts))})"
                )

    def _check_pool(self, field: str, count: int) -> None:
        """A label count must fit the labeled pool and leave unlabeled images for SSL."""
        if self.dataset == "garments":
            assert self.data.garments is not None
            fine = self.data.garments.fine_scenes
            if count > fine:
                raise ValueError(
                    f"{field}{count} exceeds the {fine} scenes (data.garments.fine_scenes) labels "
                    "are drawn from"
                )
            return
        if self.dataset == "embedded":
            assert self.data.embedded is not None
            pool = self.data.embedded.train_scenes
            if count >= pool:
                raise ValueError(
                    f"{field}{count} leaves no unlabeled image in the {pool}-scene train pool"
                )
            return
        if self.dataset == "custom":
            return  # the pool is the folder's: the split stage checks the count against it
        _, fine, pool = REAL_DATASETS[self.dataset]
        limit = pool - 1 if self.data.split.family == "blended" or fine == pool else fine
        if count > limit:
            raise ValueError(
                f"{field}{count} exceeds the {limit} images a {self.dataset} "
                f"{self.data.split.family} split can label"
            )

    def _check_grid(self, grid: BenchmarkParams) -> None:
        for count in grid.labeled:
            self._check_pool("benchmark.labeled: ", count)
        for name in grid.ablations:
            if name not in self.ablations:
                raise ValueError(
                    f"benchmark.ablations: {name!r} is not a key of ablations (have: "
                    f"{', '.join(sorted(self.ablations)) or 'none'})"
                )
            # Runs write <method>.json side by side: an ablation named like a method or the
            # warmup would overwrite that run's files.
            if name in {*grid.methods, "warmup"}:
                raise ValueError(
                    f"benchmark.ablations: {name!r} is also a method name; rename the ablation"
                )

    def ablation(self, name: str) -> SupervisedRun | TeacherStudentRun:
        """The train section with ablation `name`'s overrides merged in, validated."""
        if name not in self.ablations:
            raise ParamsError(
                f"ablation {name!r} is not in params.yaml (have: "
                f"{', '.join(sorted(self.ablations)) or 'none'})"
            )
        merged = copy.deepcopy(self._train_raw)
        merge(merged, copy.deepcopy(self.ablations[name]), strict=False)
        try:
            return RUN_PARAMS.validate_python(merged)
        except ValidationError as err:
            raise ParamsError(_describe(err, prefix=f"ablations.{name}")) from None


# pydantic puts the `method` of a run section into an error's location (train.imas.tau); the
# field path a user edits has no such step.
_METHOD_TAGS = ("supervised", "mean_teacher", "imas")


def _field_path(loc: tuple[int | str, ...]) -> str:
    kept = [
        str(part)
        for i, part in enumerate(loc)
        if not (part in _METHOD_TAGS and (i == 0 or loc[i - 1] in ("train", "warmup")))
    ]
    return ".".join(kept)


def _describe(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        loc = _field_path(e["loc"])
        field = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "<root>")
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {field}: {e['msg']}{shown}")
    return "invalid params:\n" + "\n".join(lines)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set dotted `key=value` pairs (values parsed as YAML) on a copy of the raw params.

    The same syntax as `dvc exp run -S`; a matrix stage in dvc.yaml passes its cell this way,
    so the values stay visible in the stage command that DVC tracks.
    """
    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ParamsError(f"--set {item!r}: expected KEY=VALUE, e.g. train.tau=0.9")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ParamsError(f"--set {item!r}: value is not valid YAML: {err}") from None
        parts = key.split(".")
        node = out
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                where = ".".join(parts[: depth + 1])
                raise ParamsError(f"--set {item!r}: {where} is not a section of params")
            node = node[part]
        if parts[-1] not in node:
            raise ParamsError(f"--set {item!r}: {key} is not in params")
        # Assigned, not merged, as `dvc exp run -S` does: `--set ablations={…}` replaces them all.
        node[parts[-1]] = value
    return out


def load_params(path: Path | str = "params.yaml", overrides: Sequence[str] = ()) -> Params:
    """Read and validate params.yaml (with `--set` overrides); raise ParamsError naming each
    bad field and its value."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such file") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    raw = apply_overrides(raw, overrides)
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(f"{path}: " + _describe(err)) from None
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys for MLflow params (`{"train": {"tau": 0.8}}` → `{"train.tau": 0.8}`)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out
