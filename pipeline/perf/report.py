"""benchmarks/perf/benchmarks.md from the JSONs of `imas perf ...` (missing ones are listed as
such)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _machine(m: dict[str, Any]) -> str:
    gpu = m.get("gpu") or "no GPU"
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {gpu}; torch {m['torch']} "
        f"with {m['torch_threads']} threads, Python {m['python']}"
    )


def _ms(t: dict[str, float]) -> str:
    return f"{t['min_ms']:.1f} ({t['median_ms']:.1f})"


def _hardness(r: dict[str, Any]) -> list[str]:
    lines = [
        "Per-image hardness γ of a batch from its two hard maps. *Authors-style*: per image and",
        "direction a numpy bincount confusion matrix, a pass per class to count pixels, a weighted",
        "nansum (written from SPEC §2 in `pipeline/perf/hardness_bench.py`). *Ours*:",
        "`imas.hardness.hardness_from_maps`, one bincount over the batch. *First step*: max/argmax",
        "over C of both probability tensors, which `hardness()` does before the maps. Times in ms,",
        f"minimum (median) of {r['repeats']} calls.",
        "",
        "| batch × classes × crop | first step | authors-style | ours | speed-up | end-to-end "
        "`hardness()` | max abs diff |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in r["shapes"]:
        lines.append(
            f"| {s['batch']} × {s['classes']} × {s['side']}² | {_ms(s['first_step'])} | "
            f"{_ms(s['authors_style'])} | {_ms(s['ours'])} | **{s['speedup']}×** | "
            f"{_ms(s['end_to_end'])} | {s['max_abs_diff']:.1e} |"
        )
    return lines


def _augment(r: dict[str, Any]) -> list[str]:
    return [
        f"Strong views (k = {r['k']}) of {r['images']} images at {r['side']}×{r['side']}, "
        f"batches of {r['batch']}.",
        "",
        "| way | images/s |",
        "| --- | ---: |",
        f"| ours: torchvision ops on uint8 tensors in the training process "
        f"({r['ours_threads']} threads) | {r['ours_images_per_s']} |",
        f"| authors': PIL per image in {r['authors_workers']} DataLoader workers | "
        f"{r['authors_images_per_s']} |",
    ]


def _steps(r: dict[str, Any]) -> list[str]:
    m = r["methods"]
    lines = [
        f"Default built-in setting (params.yaml), from the warmup weights, median of {r['steps']}",
        "steps after 2 warm-up steps; same model, batch and data for every method.",
        "",
        "| method | step (ms) | × mean teacher | hardness share |",
        "| --- | ---: | ---: | ---: |",
    ]
    mt = m["mean_teacher"]["step_ms"]
    order = ("supervised", "mean_teacher", "mean_teacher_drop_weak", "imas", "imas_drop_weak")
    for name in sorted(m, key=lambda k: (order.index(k) if k in order else len(order), k)):
        row = m[name]
        share = f"{100 * row['hardness_share']:.2f} %" if name.startswith("imas") else "—"
        lines.append(f"| {name} | {row['step_ms']} | {row['step_ms'] / mt:.2f} | {share} |")
    lines += [
        "",
        f"iMAS / mean teacher: **{r['imas_over_mean_teacher']}** (both with the weak-view group "
        f"in the training forward); without it: "
        f"{r['imas_drop_weak_over_mean_teacher_drop_weak']}.",
        f"Throughput: training {r['train_images_per_s']} images/s (labeled + unlabeled, iMAS), "
        f"evaluation {r['eval_images_per_s']} images/s.",
    ]
    return lines


def _repro(r: dict[str, Any]) -> list[str]:
    return [
        f"`dvc repro` of the default pipeline in a fresh clone (commit {r['commit']}): "
        f"**{r['seconds'] / 60:.1f} min** wall time, peak resident memory "
        f"**{r['peak_rss_mib']} MiB** (largest process).",
    ]


# name: (title, renderer); each section's command is `imas perf <name>`.
_SECTIONS = {
    "hardness": ("Hardness", _hardness),
    "augment": ("Strong augmentation", _augment),
    "steps": ("Step cost", _steps),
    "repro": ("End to end", _repro),
}


def render(folder: Path) -> str:
    """The markdown report of every benchmark JSON in `folder`."""
    out = [
        "# Benchmarks",
        "",
        "Every figure below comes from a command anyone can rerun (`make perf` runs them all);",
        "each section names its command and the machine it ran on. Regenerate this page with",
        "`imas perf report`.",
    ]
    for name, (title, section) in _SECTIONS.items():
        out += ["", f"## {title}", ""]
        result = _load(folder, name)
        if result is None:
            out.append(f"Not measured yet: run `imas perf {name}`.")
            continue
        out += [f"Command: `imas perf {name}`. Machine: {_machine(result['machine'])}.", ""]
        out += section(result)
    profile = folder / "profile.txt"
    if profile.is_file():
        out += [
            "",
            "## Profile",
            "",
            "Command: `imas perf profile` (torch.profiler, self CPU time of 20 iMAS steps at the",
            f"default setting; the full table is `{profile.as_posix()}`). Top rows:",
            "",
            "```",
            *profile.read_text().splitlines()[:14],
            "```",
        ]
    return "\n".join(out) + "\n"
