"""The sections of params.yaml besides the library's own (imas/config.py): where the data and
the split come from, a run after the warmup, evaluation, runtime, pretraining and a benchmark's
grid. Frozen, unknown keys rejected, no defaults for a knob (DVC cannot see a default)."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, field_validator, model_validator

from imas.config import (
    TEACHER_STUDENT_ONLY,
    EmbeddedDataConfig,
    GarmentsDataConfig,
    Section,
    SpeedConfig,
    SupervisedConfig,
    TeacherStudentConfig,
)
from pipeline.config.paper_numbers import PUBLISHED


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


class CustomParams(Section):
    """dataset: custom, a folder of your own (pipeline/acquire/custom_folder.py): images of any
    size (jpg, png or tif; RGB or grayscale), index-PNG masks for the images that have one, a
    class list, and either your own labeled/unlabeled/val lists or a seeded draw."""

    root: str = Field(min_length=1, description="the folder (relative to the project or absolute)")
    images: str = Field(min_length=1, description="its subfolder of images, e.g. images")
    masks: str = Field(min_length=1, description="its subfolder of index-PNG masks, e.g. masks")
    classes: str = Field(
        min_length=1, description="its class list, one name per line in index order (+ #RRGGBB)"
    )
    split: Literal["draw", "lists"] = Field(
        description="draw: `labeled` images drawn with `seed` from the masked train images; "
        "lists: the folder's labeled.txt, unlabeled.txt and val.txt"
    )
    val: int | None = Field(
        ge=1,
        description="draw: masked images held out as val, drawn once with data.custom.seed; "
        "null: the folder's val.txt",
    )
    seed: int = Field(ge=0, description="the val draw's seed; fixed, so every run shares one val")
    normalize: Literal["imagenet", "computed"] = Field(
        description="imagenet: ImageNet's mean and std; computed: those of the train images"
    )

    @model_validator(mode="after")
    def _consistent(self) -> CustomParams:
        for name in ("images", "masks", "classes"):
            value = getattr(self, name)
            # Inside the folder: the prepared copy must hold everything the stages read.
            if value.startswith(("/", "\\")) or ".." in value.replace("\\", "/").split("/"):
                raise ValueError(
                    f"data.custom.{name}={value!r} must be a path inside data.custom.root"
                )
        if self.split == "lists" and self.val is not None:
            raise ValueError(
                f"data.custom.val={self.val} but data.custom.split='lists' reads the folder's "
                "val.txt; set val: null"
            )
        return self


class DataParams(Section):
    """One section per dataset; only the one `dataset` names is required (and read)."""

    garments: GarmentsDataConfig | None = None
    embedded: EmbeddedDataConfig | None = None
    embedded_seed: int | None = Field(
        None, description="seed of the digit scenes (dataset: embedded)"
    )
    custom: CustomParams | None = None
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
    log_model: bool = Field(
        description="the train stage logs its best teacher as an MLflow model and registers it "
        "as imas-<dataset> (`imas predict --model`, `mlflow models serve`)"
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
        description="null, or a preset of pipeline/config/paper_numbers.py printed beside "
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
