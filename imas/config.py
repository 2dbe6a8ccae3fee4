"""Typed configuration sections of the library.

Every knob lives in params.yaml; these models only say what is valid. They carry no defaults for
experiment knobs, so a value DVC cannot see never changes a result. All models are frozen and
reject unknown keys, so a typo in params.yaml fails loudly with the field named.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EmbeddedDataConfig(Section):
    """The built-in dataset: MNIST digits pasted on real photos/textures (VOC layout)."""

    train_scenes: int = Field(ge=1, description="scenes in the train pool (labeled + unlabeled)")
    val_scenes: int = Field(ge=1)
    size: int = Field(ge=16, description="square scene side in pixels")
    digits: tuple[int, ...] = Field(
        min_length=1, description="MNIST digits that appear; digit digits[k] is class k + 1"
    )
    digits_per_scene: tuple[int, int] = Field(description="min, max objects per scene")
    digit_size: tuple[int, int] = Field(description="min, max object side in pixels")
    ignore_border: bool = Field(description="255 on anti-aliased object borders, as in VOC")
    stroke: int = Field(ge=0, le=4, description="pixels added to each side of a digit's strokes")

    @model_validator(mode="after")
    def _distinct_digits(self) -> EmbeddedDataConfig:
        if len(set(self.digits)) != len(self.digits) or not all(0 <= d <= 9 for d in self.digits):
            raise ValueError(f"digits={list(self.digits)} must be distinct values in 0..9")
        return self

    @property
    def class_names(self) -> list[str]:
        return ["background", *(f"digit {d}" for d in self.digits)]


class GarmentsDataConfig(Section):
    """The built-in dataset: Fashion-MNIST garments on CC0 photos (`pipeline.acquire.garments`), in
    VOC's shape: a train_aug pool whose first `fine_scenes` are the labeled pool (VOC's 1,464
    fine images), val, a tune split for every choice of ours, and test scenes of Fashion-MNIST's
    own test glyphs. Disjoint glyph pools: no garment appears twice anywhere."""

    seed: int = Field(ge=0, description="seed of the scenes and glyph pools (never the run's)")
    size: int = Field(ge=16, description="square scene side in pixels")
    objects: tuple[int, int] = Field(description="min, max garments per scene")
    foreground: tuple[float, float] = Field(description="min, max share of garment pixels")
    train_scenes: int = Field(ge=2, description="the train_aug pool (labeled + unlabeled)")
    fine_scenes: int = Field(ge=1, description="its first scenes: the pool labels come from")
    val_scenes: int = Field(ge=1)
    tune_scenes: int = Field(ge=1)
    test_scenes: int = Field(ge=1)
    urls: list[str] = Field(
        min_length=1, description="folder URLs of the official Fashion-MNIST files"
    )
    downloads: str = Field(min_length=1, description="folder for downloaded Fashion-MNIST files")

    @model_validator(mode="after")
    def _fine_inside_train(self) -> GarmentsDataConfig:
        if self.fine_scenes >= self.train_scenes:
            raise ValueError(
                f"fine_scenes={self.fine_scenes} must be below train_scenes={self.train_scenes}: "
                "the unlabeled pool would be empty"
            )
        return self

    @property
    def class_names(self) -> list[str]:
        from imas.data.catalogue import GARMENT_CLASSES

        return list(GARMENT_CLASSES)


class AugConfig(Section):
    """Weak geometric transform shared by both views, and the strong intensity pool (SPEC §3)."""

    crop: int = Field(ge=8)
    scale: tuple[float, float] = Field(description="random rescale range before cropping")
    hflip: bool = Field(
        description="random horizontal flip (off for digits: flips make non-digits)"
    )
    strong_ops: int = Field(ge=0, description="k ops drawn with replacement from the 12-op pool")


# ResNets whose blocks are Bottlenecks: DeepLab's multi-grid multiplies the one 3×3 conv of each
# layer4 block; a BasicBlock has two, and no published multi-grid rule for them.
BOTTLENECK_RESNETS = ("resnet50", "resnet101")


class ModelConfig(Section):
    """DeepLabV3+ on a tiny CPU backbone or a ResNet (SPEC §7).

    The ResNet-only fields (`stem`, `multi_grid`) must be null for `tiny`, which has its own 3×3
    stem; its `pretrained` may name a local backbone file (the built-in pipeline's pretrain
    stage writes one), never torchvision's ImageNet weights. Rejecting them, rather than ignoring
    them, means a preset never silently trains something other than what its params file says.
    """

    backbone: Literal["tiny", "resnet18", "resnet50", "resnet101"]
    num_classes: int = Field(ge=2)
    width: int = Field(ge=4, description="tiny backbone: channels of the first stage")
    aspp_channels: int = Field(ge=8, description="ASPP, decoder and auxiliary head width")
    aspp_rates: tuple[int, int, int]
    low_level_channels: int = Field(ge=4)
    output_stride: Literal[8, 16]
    stem: Literal["deep", "torchvision"] | None = Field(
        description="resnets: deep (the paper's three 3×3 convs, 128 channels) or torchvision "
        "(7×7, a deviation from the paper); null for tiny"
    )
    multi_grid: tuple[int, int, int] | None = Field(
        description="layer4 dilation multipliers per block, e.g. (1, 2, 4) (resnet50/101); "
        "null: torchvision's dilation rule"
    )
    pretrained: str | None = Field(
        description="null: random init; imagenet: torchvision's ImageNet weights (stem "
        "torchvision); otherwise a local backbone state dict (.pth)"
    )
    aux_head: bool = Field(description="FCN head on layer3 for the auxiliary loss (U2PL)")

    @model_validator(mode="after")
    def _backbone_options(self) -> ModelConfig:
        if self.pretrained == "":
            raise ValueError("pretrained: use null for random weights, not an empty string")
        if self.backbone == "tiny":
            for name in ("stem", "multi_grid"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name}={getattr(self, name)!r}: the tiny backbone has its own 3×3 stem "
                        f"and no multi-grid; set model.{name}: null"
                    )
            if self.pretrained == "imagenet":
                raise ValueError(
                    "pretrained='imagenet': torchvision has no ImageNet weights for the tiny "
                    "backbone; use null or a local backbone file (the pretrain stage's)"
                )
            return self
        if self.stem is None:
            raise ValueError(
                f"backbone {self.backbone!r} needs model.stem: deep (the paper) or torchvision"
            )
        if self.multi_grid is not None:
            if self.backbone not in BOTTLENECK_RESNETS:
                raise ValueError(
                    f"multi_grid={list(self.multi_grid)} needs a Bottleneck ResNet "
                    f"({', '.join(BOTTLENECK_RESNETS)}), not {self.backbone!r}"
                )
            if min(self.multi_grid) < 1:
                raise ValueError(f"multi_grid={list(self.multi_grid)}: multipliers must be ≥ 1")
        if self.pretrained == "imagenet" and self.stem == "deep":
            raise ValueError(
                "pretrained='imagenet' loads torchvision's weights, which exist for the 7×7 stem "
                "only: use stem: torchvision, or a local deep-stem checkpoint path"
            )
        if self.pretrained == "":
            raise ValueError("pretrained: use null for random weights, not an empty string")
        return self

    def paper_deviation(self) -> str | None:
        """'torchvision-stem' when a ResNet uses the 7×7 stem instead of the paper's deep stem
        (SPEC §7 asks to report it); None otherwise. The tiny backbone is no paper model."""
        if self.backbone != "tiny" and self.stem == "torchvision":
            return "torchvision-stem"
        return None


class AdaptiveConfig(Section):
    """One switch per adaptive part of iMAS, each changing one thing, so an ablation can turn
    off exactly one; `mean_teacher` turns them all off (`TeacherStudentConfig.effective_adaptive`).
    """

    intensity: Literal["mix", "sample", "strong"] = Field(
        description="mix: û_s = e·u_s + (1 − e)·u_w per image (SPEC §3, the released default); "
        "sample: the strong view with probability e, else the weak view (the authors' "
        "flag_augs_mixup_by_hard: False); strong: the full strong view for every image"
    )
    cutmix: bool = Field(description="whether the CutMix view is made at all (SPEC §4)")
    cutmix_trigger: Literal["easiness", "fixed"] = Field(
        description="easiness: CutMix fires with p = the batch's mean easiness; fixed: with "
        "p = cutmix_prob (the authors' flag_cmix_trigger_by_hard: False)"
    )
    cutmix_prob: float = Field(ge=0.0, le=1.0, description="trigger probability when fixed")
    cutmix_pairing: Literal["easiness", "random"] = Field(
        description="easiness: the easiest image trades a box with the hardest; random: a "
        "random permutation"
    )
    loss_weight: bool = Field(description="weight each image's unsupervised loss by easiness (§5)")
    signal: Literal["easiness", "hardness"] = Field(
        description="what the adaptive parts read: easiness e = 1 − γ (iMAS), or hardness γ in "
        "its place (the anti-iMAS control: a sign error must not score like iMAS)"
    )
    scaled_magnitude: bool = Field(
        description="scale strong-op magnitudes by easiness (the paper's text; off in the code)"
    )

    @property
    def uses_hardness(self) -> bool:
        """Whether any switch reads γ; if none does (the mean-teacher baseline), a step skips
        the student's extra forward on the weak view that γ needs."""
        cutmix_reads = self.cutmix and "easiness" in (self.cutmix_trigger, self.cutmix_pairing)
        return (
            self.intensity != "strong" or self.loss_weight or self.scaled_magnitude or cutmix_reads
        )


class OhemConfig(Section):
    """Online hard example mining of the supervised loss (U2PL's Cityscapes criterion)."""

    thresh: float = Field(gt=0, le=1, description="keep pixels whose true-class prob ≤ thresh")
    min_kept: int = Field(ge=1, description="…but at least this many hardest pixels per batch")


class _RunConfig(Section):
    """What every training run has: its length, batches, optimiser and supervised loss."""

    epochs: int = Field(ge=1)
    iters_per_epoch: int | None = Field(
        ge=1, description="null: one pass over the unlabeled set (SPEC §6)"
    )
    batch_labeled: int = Field(ge=1, description="labeled images per optimizer step, all ranks")
    batch_unlabeled: int = Field(
        ge=1,
        description="unlabeled images per optimizer step, all ranks; also sets the epoch "
        "length when supervised",
    )
    accumulate: int = Field(
        ge=1,
        description="micro-batches per optimizer step; the batch sizes stay the step's total",
    )
    lr: float = Field(gt=0)
    head_lr_mult: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    momentum: float = Field(ge=0, lt=1)
    poly_power: float = Field(ge=0)
    eval_every: int = Field(ge=1, description="evaluate on val every N epochs")
    aux_weight: float = Field(
        ge=0, description="weight of the auxiliary head's loss on labeled images; 0: off"
    )
    ohem: OhemConfig | None = Field(
        description="null: plain cross-entropy on labeled images; else OHEM (main and aux)"
    )

    def micro_batches(self, world: int, section: str = "train") -> tuple[int, int]:
        """Labeled and unlabeled images per process and micro-batch: the total batch split over
        `world` processes and `accumulate` micro-batches, so an optimizer step sees the same
        batch on any hardware. `section` names the params section in the error."""
        parts = world * self.accumulate
        sizes = []
        for name in ("batch_labeled", "batch_unlabeled"):
            total = getattr(self, name)
            if total % parts:
                raise ValueError(
                    f"{section}.{name}={total} does not split into {world} process(es) × "
                    f"{section}.accumulate={self.accumulate} = {parts} equal micro-batches; "
                    f"make it a multiple of {parts}"
                )
            sizes.append(total // parts)
        return sizes[0], sizes[1]


class SupervisedConfig(_RunConfig):
    """Labeled images only: the warmup, and SupOnly (the warmup continued)."""

    method: Literal["supervised"]


class TeacherStudentConfig(_RunConfig):
    """An EMA teacher pseudo-labels the unlabeled images for the student: the mean-teacher
    baseline, or iMAS with the adaptive parts that `adaptive` switches on."""

    method: Literal["mean_teacher", "imas"]
    tau: float = Field(gt=0, le=1, description="confidence threshold (loss, γ)")
    lambda_u: float = Field(ge=0)
    ema_decay: float = Field(ge=0, lt=1, description="cap of the EMA decay (§6)")
    ignore_index0: bool = Field(description="drop class 0 from the hardness weights (SPEC §2)")
    drop_weak_forward: bool = Field(
        description="leave u_w out of the student's training forward (documented deviation)"
    )
    adaptive: AdaptiveConfig

    def effective_adaptive(self) -> AdaptiveConfig:
        """Switches in force: the mean-teacher baseline has no adaptive part at all."""
        if self.method == "mean_teacher":
            # The full strong view, CutMix (if on) at the fixed probability with random pairs,
            # every image weighing 1.
            return self.adaptive.model_copy(
                update=dict(
                    intensity="strong",
                    cutmix_trigger="fixed",
                    cutmix_pairing="random",
                    loss_weight=False,
                    scaled_magnitude=False,
                    signal="easiness",
                )
            )
        return self.adaptive


# The fields a teacher–student run has and a supervised one does not.
TEACHER_STUDENT_ONLY = tuple(
    name for name in TeacherStudentConfig.model_fields if name not in SupervisedConfig.model_fields
)

# One training run, its class chosen by `method`.
TrainConfig = Annotated[SupervisedConfig | TeacherStudentConfig, Field(discriminator="method")]
TRAIN_CONFIG: TypeAdapter[SupervisedConfig | TeacherStudentConfig] = TypeAdapter(TrainConfig)


class SpeedConfig(Section):
    """How `fit` runs on the hardware: none of these switches changes the algorithm, though bf16
    rounding and BatchNorm over the global batch (`sync_bn`) change the numbers."""

    amp: Literal["off", "bf16"] = Field(
        description="bf16: model forwards under torch.autocast; losses and hardness in fp32"
    )
    channels_last: bool = Field(description="NHWC weights (faster convolutions on GPUs)")
    compile: bool = Field(description="torch.compile the student's training forward")
    sync_bn: bool = Field(description="SyncBatchNorm across ranks (CUDA only)")

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_off(cls, value: Any) -> Any:
        # YAML 1.1 (PyYAML, `--set`) reads a bare `off` as false.
        return "off" if value is False else value

    @classmethod
    def off(cls) -> SpeedConfig:
        """Every switch off: plain fp32 eager training, as on a CPU."""
        return cls(amp="off", channels_last=False, compile=False, sync_bn=False)
