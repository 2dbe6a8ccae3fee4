"""A custom dataset's files, read and checked: the images, the index-PNG masks, the class list and
the id lists, in the user's folder (the download stage) or in the root prepared from it (the
split stage).

Nothing stops at the first problem: every check appends a line that starts with the file it is
about, and the caller raises one `CustomDataError` with all of them, so one run shows a user
everything to fix (the message lists the first `MAX_SHOWN`, and how many more there are).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from imas.data import DataError
from imas.data.catalogue import IGNORE_INDEX
from imas.data.layout import RGB, Classes, open_decoded

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
MASK_SUFFIXES = (".png",)
# Index masks hold classes 0..254; 255 is the ignore value.
MAX_CLASSES = IGNORE_INDEX
MAX_SHOWN = 20
# Decodable but not 8-bit: converting them to RGB would clip or rescale silently.
_WIDE_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")
_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")


class CustomDataError(DataError):
    """Problems with a custom dataset, each naming its file; all found, the first shown."""

    def __init__(self, where: Path | str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = [f"{where}: {count} problem{'s' if count != 1 else ''} with the custom dataset"]
        lines += [f"  {p}" for p in self.problems[:MAX_SHOWN]]
        if count > MAX_SHOWN:
            lines.append(f"  … and {count - MAX_SHOWN} more (the first {MAX_SHOWN} are shown)")
        super().__init__("\n".join(lines))


def read_classes(path: Path, problems: list[str]) -> Classes | None:
    """The class list: one class per non-blank line in index order, its name optionally
    followed by a colour `#RRGGBB` (`background`, `cell #FF0000`). None when unusable."""
    if not path.is_file():
        problems.append(f"{path}: class list not found")
        return None
    names: list[str] = []
    colours: list[RGB | None] = []
    seen: dict[str, int] = {}
    before = len(problems)
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        words = line.split()
        if not words:
            continue
        colour: RGB | None = None
        if len(words) > 1 and words[-1].startswith("#"):
            token = words.pop()
            if not _COLOUR.fullmatch(token):
                problems.append(f"{path}: line {lineno}: colour {token!r} is not #RRGGBB")
            else:
                colour = (int(token[1:3], 16), int(token[3:5], 16), int(token[5:7], 16))
        name = " ".join(words)
        if name in seen:
            problems.append(f"{path}: line {lineno}: class {name!r} repeats line {seen[name]}")
        seen.setdefault(name, lineno)
        names.append(name)
        colours.append(colour)
    if len(names) < 2:
        problems.append(
            f"{path}: {len(names)} class(es); a segmentation needs at least 2 (e.g. background "
            "and the object)"
        )
    elif len(names) > MAX_CLASSES:
        problems.append(
            f"{path}: {len(names)} classes; index masks hold at most {MAX_CLASSES} (255 is ignore)"
        )
    if len(problems) > before:
        return None
    voc = Classes.voc(names).colours
    return Classes(names, [c if c is not None else v for c, v in zip(colours, voc, strict=True)])


def read_ids(path: Path, problems: list[str]) -> list[str]:
    """An id list (one id per line, blank lines skipped); a missing file or a repeated id is a
    problem, and the repeat is left out."""
    if not path.is_file():
        problems.append(f"{path}: list not found")
        return []
    ids: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        item = line.strip()
        if not item:
            continue
        if item in seen:
            problems.append(f"{path}: line {lineno}: id {item!r} repeats line {seen[item]}")
            continue
        seen[item] = lineno
        ids.append(item)
    return ids


def scan(folder: Path, suffixes: Sequence[str], kind: str, problems: list[str]) -> dict[str, Path]:
    """id → file of every `kind` ("image" or "mask") under `folder`, the id being the path
    relative to it without the suffix (`a.jpg` → `a`, `sub/b.png` → `sub/b`), in sorted order.

    Hidden files and folders (.DS_Store, .ipynb_checkpoints) are skipped; any other file
    whose suffix is not one of `suffixes`, and two files with one id, are problems.
    """
    if not folder.is_dir():
        problems.append(f"{folder}: {kind}s folder not found")
        return {}
    found: dict[str, Path] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() not in suffixes:
            problems.append(f"{path}: not an accepted {kind} file ({', '.join(suffixes)})")
            continue
        i = rel.with_suffix("").as_posix()
        if i != i.strip() or "\n" in i or "\r" in i:
            problems.append(f"{path}: its id {i!r} has surrounding white space; rename it")
        elif i in found:
            problems.append(f"{found[i]}, {path}: two {kind}s with the id {i!r}")
        else:
            found[i] = path
    if not found:
        problems.append(f"{folder}: no {kind}s ({', '.join(suffixes)})")
    return dict(sorted(found.items()))


def load_image(path: Path) -> tuple[np.ndarray | None, str | None]:
    """(uint8 RGB `[H, W, 3]`, None) or (None, the problem). Grayscale, palette and alpha
    images become RGB as PIL's `convert("RGB")` does: gray replicated to three channels, the
    palette looked up, alpha dropped."""
    try:
        img = open_decoded(path, "image")
    except DataError as err:
        return None, str(err)
    if img.mode in _WIDE_MODES:
        return None, (
            f"{path}: a {img.mode} image (16-bit or float); save it as 8-bit grayscale or RGB"
        )
    return np.asarray(img.convert("RGB")), None


def load_mask(
    path: Path, image: Path, size: tuple[int, int], classes: int, classes_file: Path
) -> tuple[np.ndarray | None, str | None]:
    """(uint8 `[H, W]` class indices, None) or (None, the problem): a single-channel PNG (index,
    grayscale or 1-bit) of the image's `size` (width, height), values below `classes` or 255."""
    try:
        img = open_decoded(path, "mask")
    except DataError as err:
        return None, str(err)
    if img.mode not in ("P", "L", "1"):
        return None, (
            f"{path}: a mode {img.mode} image, not an index mask; save the class index of "
            "every pixel as a single-channel PNG"
        )
    if img.size != size:
        return None, (
            f"{path}: mask is {img.size[0]}×{img.size[1]} (width×height) but its image "
            f"{image} is {size[0]}×{size[1]}"
        )
    arr = np.asarray(img).astype(np.uint8)
    present = np.unique(arr)
    bad = present[(present >= classes) & (present != IGNORE_INDEX)]
    if bad.size:
        return None, (
            f"{path}: values {bad.tolist()} but {classes_file} lists {classes} classes (values "
            f"0..{classes - 1}, and 255 = ignore)"
        )
    return arr, None


@dataclass
class Decoded:
    """One image read and checked, with its mask when it has one."""

    id: str
    image: np.ndarray
    mask: np.ndarray | None


def decode_all(
    ids: Sequence[str],
    image_path: Callable[[str], Path],
    mask_path: Callable[[str], Path],
    masked: set[str],
    classes: int,
    classes_file: Path,
    problems: list[str],
    progress: bool,
) -> Iterator[Decoded]:
    """Decode and check the image of every id and the mask of those in `masked`, in order;
    yield the ones without a problem, append a line for each problem."""
    for i in tqdm(ids, desc="check images", disable=not progress, mininterval=1.0):
        image, problem = load_image(image_path(i))
        if image is None:
            problems.append(str(problem))
            continue
        mask = None
        if i in masked:
            size = (image.shape[1], image.shape[0])
            mask, problem = load_mask(mask_path(i), image_path(i), size, classes, classes_file)
            if mask is None:
                problems.append(str(problem))
                continue
        yield Decoded(i, image, mask)


def class_count_problem(num_classes: int, names: Sequence[str], classes_file: Path) -> str | None:
    """The problem when params' `model.num_classes` is not the class list's length."""
    if num_classes == len(names):
        return None
    return (
        f"{classes_file}: lists {len(names)} classes ({', '.join(names)}) but "
        f"model.num_classes={num_classes}; set model.num_classes: {len(names)}"
    )
