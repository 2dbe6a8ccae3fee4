"""The images `imas predict` reads: an image file, a folder of them, or a list file of paths,
each given an id (its file name without the suffix) that names its outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Files of a folder that are read as images; anything else in it (lists, notes) is left alone.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
# A file with one of these suffixes lists image paths, one a line.
LIST_SUFFIXES = (".txt", ".lst")


class InputError(ValueError):
    """An INPUT argument cannot be used at all (missing, empty, clashing ids); the message names
    it. Unreadable images are not this: they are reported per image, by `--on-error`."""


@dataclass(frozen=True)
class Item:
    id: str
    path: Path


def read_list_file(path: Path) -> list[Path]:
    """Image paths of a list file: one a line, relative to the list file's folder unless
    absolute; blank lines and lines starting with # are skipped."""
    paths = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            listed = Path(entry).expanduser()
            paths.append(listed if listed.is_absolute() else path.parent / listed)
    return paths


def expand(inputs: Sequence[Path]) -> list[Item]:
    """Every image the INPUT arguments name, in order (a folder's images sorted by name).

    A listed file that does not exist is kept: reading it fails like any unreadable image, by
    path. Two images with one id would write the same outputs, so they are refused, as are
    arguments that do not exist and folders or lists with no image.
    """
    if not inputs:
        raise InputError("no INPUT given: name an image, a folder of images or a list file")
    items: list[Item] = []
    for given in inputs:
        if given.is_dir():
            found = sorted(
                p for p in given.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            what = f"folder {given} holds no image ({', '.join(IMAGE_SUFFIXES)})"
        elif given.is_file() and given.suffix.lower() in LIST_SUFFIXES:
            found = read_list_file(given)
            what = f"list file {given} names no image"
        elif given.is_file():
            found, what = [given], ""
        else:
            raise InputError(f"INPUT {given} does not exist")
        if not found:
            raise InputError(what)
        items.extend(Item(p.stem, p) for p in found)
    seen: dict[str, Path] = {}
    for item in items:
        if item.id in seen:
            raise InputError(
                f"{seen[item.id]} and {item.path} would both write {item.id}.png; predict them "
                "into separate --out folders"
            )
        seen[item.id] = item.path
    return items
