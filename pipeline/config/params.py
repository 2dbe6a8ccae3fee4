"""params.yaml, validated: the single source of every experiment knob.

The models compose the library's config sections. They are frozen and reject unknown keys; no
experiment knob has a default here, because DVC tracks params.yaml and cannot see a default that
lives in code. `load_params` fails with the field path and the offending value.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from imas.config import (
    TEACHER_STUDENT_ONLY,
    AugConfig,
    EmbeddedDataConfig,
    GarmentsDataConfig,
    ModelConfig,
    Section,
    SpeedConfig,
    SupervisedConfig,
    TeacherStudentConfig,
)
from imas.data.catalogue import published_counts
from pipeline.config.merge import merge
from pipeline.reporting.paper_numbers import PRESETS, PUBLISHED


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or invalid; the message names the field and value."""


class SplitParams(Section):
    """Where the labeled/unlabeled lists come from (the split stage)."""

    source: Literal["generated", "published"] = Field(
        description="generated: a seeded draw; published: the iMAS authors' lists (voc, cityscapes)"
    )
    family: Literal["classic", "blended"] = Field(
        description="classic: labeled ids from the finely annotated images (VOC's 1,464); "
        "blended: from all of VOC train_aug (voc only)"
    )
    urls: list[str] = Field(min_length=1, description="mirrors of the published split folder")


class VocParams(Section):
    voc_urls: list[str] = Field(min_length=1, description="mirrors of VOCtrainval_11-May-2012.tar")
    sbd_urls: list[str] = Field(min_length=1, description="mirrors of SBD's benchmark.tgz")
    downloads: str = Field(min_length=1, description="folder for the archives and their trees")


class CityscapesParams(Section):
    downloads: str = Field(min_length=1, description="folder for the packages and their trees")


class DataParams(Section):
    """One section per dataset; only the one `dataset` names is required (and read)."""

    garments: GarmentsDataConfig | None = None
    embedded: EmbeddedDataConfig | None = None
    embedded_seed: int | None = Field(
        None, description="seed of the digit scenes (dataset: embedded)"
    )
    split: SplitParams
    voc: VocParams
    cityscapes: CityscapesParams


class _Continues(Section):
    init: Literal["continue", "warmup", "scratch"] = Field(
        description="continue: one poly schedule, warmup then this run, which starts from the "
        "warmup's last weights, iteration and SGD momentum; warmup: from the warmup's best "
        "weights with a fresh schedule; scratch: from the pretrained backbone alone"
    )


class SupervisedRun(SupervisedConfig, _Continues):
    """SupOnly: the warmup's supervised training continued (the `supervised` ablation, or
    `--set train.method=supervised`). The teacher–student fields of the section it switches
    stay in params.yaml for the runs that switch back; here they are dropped, never read."""

    @model_validator(mode="before")
    @classmethod
    def _drop_teacher_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in TEACHER_STUDENT_ONLY}
        return data


class TeacherStudentRun(TeacherStudentConfig, _Continues):
    """Mean teacher or iMAS, started from the warmup as `init` says."""


# A run after the warmup (the `train` section, each ablation), its class chosen by `method`.
RunParams = Annotated[SupervisedRun | TeacherStudentRun, Field(discriminator="method")]
RUN_PARAMS: TypeAdapter[SupervisedRun | TeacherStudentRun] = TypeAdapter(RunParams)


class EvaluateParams(Section):
    split: Literal["val", "tune"] = Field(
        description="the list the per-epoch evaluation and best-epoch selection read: val (the "
        "paper's number) or tune (where settings are chosen, so val and test stay unseen)"
    )
    batch_size: int = Field(ge=1)
    figure_images: int = Field(ge=1, description="val images in the qualitative grid")
    mode: Literal["whole", "sliding"] = Field(
        description="whole: one pass per image; sliding: window x window tiles every stride "
        "pixels, softmax summed over overlaps (SPEC §7: Cityscapes 769 / 512)"
    )
    window: int | None = Field(ge=8, description="tile side in pixels (sliding), else null")
    stride: int | None = Field(ge=1, description="tile step in pixels (sliding), else null")
    tiling: Literal["clip", "shift"] | None = Field(
        description="sliding: clip (the authors': tiles cut at the image border) or shift (full "
        "tiles, the last moved inside the image); whole: null"
    )

    @model_validator(mode="after")
    def _window(self) -> EvaluateParams:
        if self.mode == "whole":
            for name in ("window", "stride", "tiling"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"evaluate.{name}={getattr(self, name)} but evaluate.mode='whole' "
                        f"takes no {name}; set it to null"
                    )
            return self
        for name in ("window", "stride", "tiling"):
            if getattr(self, name) is None:
                raise ValueError(f"evaluate.mode='sliding' needs evaluate.{name}, got null")
        assert self.window is not None and self.stride is not None
        if self.stride > self.window:
            raise ValueError(
                f"evaluate.stride={self.stride} exceeds evaluate.window={self.window}: the tiles "
                "would leave gaps"
            )
        return self

    def tiles(self) -> dict[str, Any]:
        """The keyword arguments `imas.evaluate.evaluate` takes for this section's mode."""
        if self.mode == "whole":
            return {"mode": "whole"}
        return {
            "mode": "sliding",
            "window": self.window,
            "stride": self.stride,
            "tiling": self.tiling,
        }


class RuntimeParams(SpeedConfig):
    """How to run, not what to compute: the speed switches `fit` takes (this section is one),
    threads, device, workers, tracking. The training stages list only `nproc` and `sync_bn` as
    DVC params: they change the batches BatchNorm and iMAS's per-batch draws see."""

    device: Literal["cpu", "cuda", "auto"]
    threads: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        description="torch threads per stage, or auto: cores // parallel jobs; among parallel "
        "DVC queue jobs at most cores // jobs either way (pipeline/control/threads.py)"
    )
    num_workers: int = Field(ge=0)
    progress: bool = Field(description="progress bars: true, false or auto (on a terminal only)")
    checkpoint_every: int = Field(
        ge=0,
        description="iterations between resume checkpoints (<out>.resume.pt, removed once the "
        "stage finishes; a rerun after a crash resumes from it bit-identically); 0: none",
    )
    experiment: str | None = Field(
        default=None, min_length=1, description="MLflow experiment; null: imas-<dataset>"
    )
    nproc: int = Field(
        ge=1,
        description="processes per training stage (one per GPU); > 1: the stage relaunches "
        "itself under torchrun",
    )

    @model_validator(mode="after")
    def _resumable(self) -> RuntimeParams:
        if self.checkpoint_every and self.num_workers:
            raise ValueError(
                f"runtime.checkpoint_every={self.checkpoint_every} needs runtime.num_workers: 0 "
                f"(got {self.num_workers}): worker processes draw augmentations from RNG streams "
                "a resume checkpoint cannot hold"
            )
        return self

    @field_validator("progress", mode="before")
    @classmethod
    def _auto_progress(cls, value: Any) -> Any:
        # A bar redrawn in place is one line on a terminal, but every redraw is a new line in
        # a CI log; `auto` keeps logs quiet without a second params file for CI.
        if value == "auto":
            return sys.stderr.isatty()
        return value


class PretrainParams(Section):
    """The pretrain stage (dataset: garments): garment classification on the pretraining pool."""

    crop: int = Field(ge=16, description="side of the one-garment training images")
    images: int | None = Field(ge=10, description="crops used; null: the whole pretraining pool")
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    seed: int = Field(ge=0, description="fixed: every run starts from the same weights")


class BenchmarkParams(Section):
    """The grid of benchmarks/protocol: every label count × seed × method is one run, and every
    ablation × seed one more at each of `ablation_labeled`."""

    labeled: list[int] = Field(min_length=1, description="label counts, smallest first")
    seeds: list[int] = Field(min_length=1)
    methods: list[Literal["supervised", "mean_teacher", "imas"]] = Field(min_length=1)
    ablations: list[str] = Field(description="keys of the top-level `ablations` section to run")
    ablation_labeled: list[int] = Field(description="the label counts the ablations run at")
    published: str | None = Field(
        description="null, or a preset of pipeline/reporting/paper_numbers.py printed beside "
        "our numbers"
    )

    @model_validator(mode="after")
    def _consistent(self) -> BenchmarkParams:
        for name in ("labeled", "seeds", "methods", "ablations", "ablation_labeled"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"benchmark.{name}={values} repeats a value")
        # An ablation starts from the warmup of its cell, which only `labeled` counts have.
        for count in self.ablation_labeled:
            if count not in self.labeled:
                raise ValueError(
                    f"benchmark.ablation_labeled: {count} is not one of benchmark.labeled "
                    f"{self.labeled}"
                )
        if self.published is not None and self.published not in PUBLISHED:
            raise ValueError(
                f"benchmark.published: {self.published!r} is not a preset (have: null, "
                f"{', '.join(PUBLISHED)})"
            )
        return self


# Class counts and the (labeled pool, train pool) sizes of the real datasets: classic VOC labels
# come from the 1,464 finely annotated train images, the unlabeled rest from train_aug.
REAL_DATASETS = {"voc": (21, 1464, 10582), "cityscapes": (19, 2975, 2975)}
# What one continuous schedule (warmup, then a training run) shares.
CONTINUOUS = ("lr", "head_lr_mult", "weight_decay", "momentum", "poly_power")
# Datasets generated offline from params (their section of `data` says how).
GENERATED = ("garments", "embedded")


class Params(Section):
    preset: str | None = Field(description="the paper setting applied by `imas preset`, or null")
    dataset: Literal["garments", "embedded", "voc", "cityscapes"]
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
