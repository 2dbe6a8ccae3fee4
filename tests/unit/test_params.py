"""params.yaml validation: unknown keys and bad values fail with the field and value named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config.params import ParamsError, flatten, load_params
from pipeline.config.sections import EvaluateParams

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_repository_params_are_valid() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.train.method == "imas"
    # The default pipeline's baselines: SupOnly (the warmup continued, the evaluate stage's
    # baseline) and mean teacher, each continuing the warmup for as long as iMAS.
    assert {"supervised", "mean_teacher"} <= set(params.ablations)
    sup = params.ablation("supervised")
    assert (sup.method, sup.init) == ("supervised", params.train.init) == ("supervised", "continue")
    assert (sup.epochs, sup.iters_per_epoch) == (params.train.epochs, params.train.iters_per_epoch)
    mt = params.ablation("mean_teacher").effective_adaptive()
    assert (mt.intensity, mt.cutmix, mt.loss_weight) == ("strong", True, False)
    assert (mt.cutmix_trigger, mt.cutmix_pairing) == ("fixed", "random")
    # Any ablation of iMAS itself turns off exactly one switch of train.adaptive.
    full = params.train.adaptive.model_dump()
    for name in params.ablations:
        if params.ablation(name).method != "imas":
            continue
        switches = params.ablation(name).effective_adaptive().model_dump()
        assert len([k for k in full if full[k] != switches[k]]) == 1, name


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda p: p["train"].update(tua=0.9), "train.tua"),
        (lambda p: p["train"].update(tau=1.5), "train.tau"),
        (lambda p: p["train"].update(tau=0), "train.tau"),
        (lambda p: p.update(labeled=0), "labeled"),
        (lambda p: p.update(labeled=5000), "labeled=5000"),
        (lambda p: p["model"].update(backbone="vgg"), "model.backbone"),
        (lambda p: p["train"]["adaptive"].update(cutmix="always"), "train.adaptive.cutmix"),
        (
            lambda p: p["train"]["adaptive"].update(cutmix_pairing="shuffled"),
            "train.adaptive.cutmix_pairing",
        ),
        (lambda p: p["train"]["adaptive"].update(intensity=True), "train.adaptive.intensity"),
        (lambda p: p["warmup"].update(method="imas"), "warmup"),
        (lambda p: p["train"].pop("tau"), "tau"),
        (lambda p: p["train"].pop("aux_weight"), "train.aux_weight"),
        (lambda p: p["warmup"].pop("ohem"), "warmup.ohem"),
        (lambda p: p["model"].pop("stem"), "model.stem"),
        (lambda p: p["train"].update(aux_weight=0.4), "train.aux_weight=0.4 needs model.aux_head"),
        (
            lambda p: p["ablations"].update(aux={"aux_weight": 0.4}),
            "ablations.aux.aux_weight=0.4 needs model.aux_head",
        ),
        (lambda p: p["train"].update(ohem={"thresh": 0.7, "min_kept": 0}), "train.ohem.min_kept"),
        (lambda p: p["model"].update(stem="deep"), "model.stem: null"),
        (
            lambda p: p["ablations"].update(bad={"adaptive": {"loss_wieght": False}}),
            "ablations.bad.adaptive.loss_wieght",
        ),
    ],
)
def test_invalid_params_name_the_field(tmp_path: Path, mutate, needle: str) -> None:
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, mutate))
    assert needle in str(err.value)


def test_bad_value_is_quoted(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"got 1\.5"):
        load_params(write(tmp_path, lambda p: p["train"].update(tau=1.5)))


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="no such file"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("labeled: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_flatten_dotted_keys() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": None}}, "e": [1, 2]}) == {
        "a.b": 1,
        "a.c.d": None,
        "e": [1, 2],
    }


def test_set_overrides_dotted_keys_with_yaml_values() -> None:
    params = load_params(
        ROOT / "params.yaml",
        ["labeled=183", "train.adaptive.cutmix_trigger=fixed", "aug.scale=[1.0, 1.5]", "seed=3"],
    )
    assert params.labeled == 183 and params.seed == 3
    assert params.train.adaptive.cutmix_trigger == "fixed" and params.aug.scale == (1.0, 1.5)
    assert load_params(ROOT / "params.yaml").labeled != 183  # the file is untouched


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("labeled", "expected KEY=VALUE"),
        ("train.tua=0.5", "train.tua is not in params"),
        ("labeled.x=1", "labeled is not a section"),
        ("train.tau=[", "not valid YAML"),
        ("train.tau=2", "train.tau"),
    ],
)
def test_bad_set_overrides_are_named(item: str, needle: str) -> None:
    with pytest.raises(ParamsError, match=needle.replace("[", r"\[")):
        load_params(ROOT / "params.yaml", [item])


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [True, False])
def test_progress_auto_follows_whether_stderr_is_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tty: bool
) -> None:
    monkeypatch.setattr("sys.stderr", _Stream(tty))
    path = write(tmp_path, lambda raw: raw["runtime"].update(progress="auto"))
    assert load_params(path).runtime.progress is tty


@pytest.mark.parametrize("value", [True, False])
def test_progress_true_or_false_ignores_the_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: bool
) -> None:
    monkeypatch.setattr("sys.stderr", _Stream(not value))
    path = write(tmp_path, lambda raw: raw["runtime"].update(progress=value))
    assert load_params(path).runtime.progress is value


def test_progress_rejects_other_words(tmp_path: Path) -> None:
    path = write(tmp_path, lambda raw: raw["runtime"].update(progress="sometimes"))
    with pytest.raises(ParamsError, match=r"runtime\.progress.*'sometimes'"):
        load_params(path)


def _evaluate(**values):
    return lambda raw: raw["evaluate"].update(values)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (_evaluate(mode="sliding"), "evaluate.mode='sliding' needs evaluate.window, got null"),
        (
            _evaluate(mode="sliding", window=769),
            "evaluate.mode='sliding' needs evaluate.stride, got null",
        ),
        (
            _evaluate(mode="sliding", window=769, stride=800, tiling="clip"),
            "evaluate.stride=800 exceeds evaluate.window=769",
        ),
        (
            _evaluate(mode="sliding", window=769, stride=512),
            "evaluate.mode='sliding' needs evaluate.tiling, got null",
        ),
        (
            _evaluate(mode="sliding", window=769, stride=512, tiling="pad"),
            "evaluate.tiling: Input should be 'clip' or 'shift'",
        ),
        (_evaluate(tiling="clip"), "evaluate.tiling=clip but evaluate.mode='whole' takes no"),
        (lambda raw: raw["evaluate"].pop("tiling"), "evaluate.tiling: Field required"),
        (
            _evaluate(mode="sliding", window=4, stride=2, tiling="clip"),
            "evaluate.window: Input should be",
        ),
        (
            _evaluate(mode="sliding", window=8, stride=0, tiling="clip"),
            "evaluate.stride: Input should be",
        ),
        (_evaluate(window=769), "evaluate.window=769 but evaluate.mode='whole' takes no window"),
        (_evaluate(stride=512), "evaluate.stride=512 but evaluate.mode='whole' takes no stride"),
        (_evaluate(mode="tiles"), "evaluate.mode: Input should be 'whole' or 'sliding'"),
        (lambda raw: raw["evaluate"].pop("mode"), "evaluate.mode: Field required"),
        (lambda raw: raw["evaluate"].pop("window"), "evaluate.window: Field required"),
        (lambda raw: raw["evaluate"].pop("stride"), "evaluate.stride: Field required"),
    ],
)
def test_evaluate_window_params_are_checked(tmp_path: Path, mutate, needle: str) -> None:
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, mutate))
    assert needle in str(err.value)


def test_evaluate_whole_and_sliding_are_valid(tmp_path: Path) -> None:
    default = load_params(ROOT / "params.yaml").evaluate
    assert (default.mode, default.window, default.stride) == ("whole", None, None)
    assert default.tiling is None and default.tiles() == {"mode": "whole"}
    sliding = load_params(
        write(tmp_path, _evaluate(mode="sliding", window=769, stride=512, tiling="clip"))
    )
    assert (sliding.evaluate.window, sliding.evaluate.stride) == (769, 512)
    assert sliding.evaluate.tiles() == dict(mode="sliding", window=769, stride=512, tiling="clip")
    equal = load_params(
        write(tmp_path, _evaluate(mode="sliding", window=8, stride=8, tiling="shift"))
    )
    assert equal.evaluate.stride == 8 and equal.evaluate.tiling == "shift"


@pytest.mark.parametrize("params_file", ["params.yaml", "benchmarks/protocol/params.yaml"])
def test_every_params_file_evaluates_whole_images(params_file: str) -> None:
    ev = load_params(ROOT / params_file).evaluate
    assert (ev.mode, ev.window, ev.stride) == ("whole", None, None)


@pytest.mark.parametrize(
    "preset", sorted(p.stem for p in (ROOT / "pipeline/config/presets").glob("*"))
)
def test_preset_evaluate_sections_are_valid(preset: str) -> None:
    base = yaml.safe_load((ROOT / "params.yaml").read_text())["evaluate"]
    overlay = yaml.safe_load((ROOT / "pipeline/config/presets" / f"{preset}.yaml").read_text())
    ev = EvaluateParams.model_validate({**base, **overlay["evaluate"]})
    # SPEC §7: VOC whole image, Cityscapes 769 windows every 512 pixels, cut at the border as
    # the authors' validate_citys does
    cityscapes = ("sliding", 769, 512, "clip")
    want = cityscapes if preset.startswith("cityscapes") else ("whole", None, None, None)
    assert (ev.mode, ev.window, ev.stride, ev.tiling) == want


def test_checkpoint_every_is_a_required_runtime_field_that_needs_single_process_loading(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, lambda raw: raw["runtime"].pop("checkpoint_every"))
    with pytest.raises(ParamsError, match=r"runtime\.checkpoint_every"):
        load_params(path)
    path = write(tmp_path, lambda raw: raw["runtime"].update(checkpoint_every=-1))
    with pytest.raises(ParamsError, match=r"runtime\.checkpoint_every.*-1"):
        load_params(path)
    path = write(tmp_path, lambda raw: raw["runtime"].update(checkpoint_every=50, num_workers=2))
    with pytest.raises(ParamsError, match=r"checkpoint_every=50 needs runtime\.num_workers: 0"):
        load_params(path)
    path = write(tmp_path, lambda raw: raw["runtime"].update(checkpoint_every=50))
    assert load_params(path).runtime.checkpoint_every == 50


def _runtime(**values):
    return lambda raw: raw["runtime"].update(values)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda raw: raw["runtime"].pop("nproc"), "runtime.nproc: Field required"),
        (_runtime(nproc=0), "runtime.nproc: Input should be greater than or equal to 1"),
        (lambda raw: raw["runtime"].pop("sync_bn"), "runtime.sync_bn: Field required"),
        (_runtime(sync_bn="sometimes"), "runtime.sync_bn: Input should be a valid boolean"),
        (_runtime(amp="fp16"), "runtime.amp: Input should be 'off' or 'bf16' (got 'fp16')"),
        (lambda raw: raw["runtime"].pop("amp"), "runtime.amp: Field required"),
        (_runtime(channels_last="nhwc"), "runtime.channels_last: Input should be a valid"),
        (lambda raw: raw["runtime"].pop("compile"), "runtime.compile: Field required"),
        (lambda raw: raw["warmup"].pop("accumulate"), "warmup.accumulate: Field required"),
        (lambda raw: raw["train"].update(accumulate=0), "train.accumulate: Input should be"),
        (
            _runtime(nproc=3),
            "warmup.batch_labeled=8 does not split into 3 process(es) × warmup.accumulate=1 = 3 "
            "equal micro-batches; make it a multiple of 3",
        ),
        (
            lambda raw: raw["ablations"].update(big={"accumulate": 16}),
            "ablations.big.batch_labeled=8 does not split into 1 process(es) × "
            "ablations.big.accumulate=16 = 16",
        ),
    ],
)
def test_parallel_and_speed_fields_are_checked(tmp_path: Path, mutate, needle: str) -> None:
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, mutate))
    assert needle in str(err.value)


def test_parallel_and_speed_fields_default_off_and_take_valid_values(tmp_path: Path) -> None:
    for params_file in ("params.yaml", "benchmarks/protocol/params.yaml"):
        params = load_params(ROOT / params_file)
        rt = params.runtime
        switches = (rt.nproc, rt.sync_bn, rt.amp, rt.channels_last, rt.compile)
        assert switches == (1, False, "off", False, False)
        assert params.warmup.accumulate == params.train.accumulate == 1
    # A bare `off` is false to PyYAML (and to --set): it still means off.
    assert load_params(write(tmp_path, _runtime(amp=False))).runtime.amp == "off"
    assert load_params(ROOT / "params.yaml", ["runtime.amp=off"]).runtime.amp == "off"
    switched = load_params(
        ROOT / "params.yaml",
        ["runtime.nproc=2", "runtime.amp=bf16", "train.accumulate=2", "warmup.accumulate=4"],
    )
    assert (switched.runtime.nproc, switched.runtime.amp) == (2, "bf16")
    assert switched.train.micro_batches(2) == (2, 2)
    assert switched.ablation("mean_teacher").accumulate == 2


@pytest.mark.parametrize(
    "preset", sorted(p.stem for p in (ROOT / "pipeline/config/presets").glob("*"))
)
def test_presets_keep_the_published_total_batch_on_any_hardware(preset: str) -> None:
    from pipeline.config.presets import preset_params

    params = preset_params(preset, ROOT / "params.yaml")
    for section in (params.warmup, params.train):
        assert (section.batch_labeled, section.batch_unlabeled, section.accumulate) == (16, 16, 1)
        # 16 + 16 on 2 GPUs with accumulate 2: micro-batches of 4 + 4
        assert section.model_copy(update={"accumulate": 2}).micro_batches(2) == (4, 4)
