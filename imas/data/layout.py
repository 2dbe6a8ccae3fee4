"""Where a dataset's files live, how they are checked and the colours its classes are shown
in, without torch.

The download and split stages use only this part of the data code, so they start without
importing torch (a few seconds per stage command).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from imas.data import DataError


@dataclass(frozen=True)
class Layout:
    """Where an id's image and mask live under a root: relative paths with one `{id}` field.

    The id is substituted verbatim, so ids may hold subdirectories
    (Cityscapes' `train/aachen/aachen_000000_000019`).
    """

    image: str
    mask: str

    def __post_init__(self) -> None:
        for pattern in (self.image, self.mask):
            # One field and a relative path: a second field or an absolute pattern would
            # silently read files outside the root.
            if pattern.count("{id}") != 1 or Path(pattern).is_absolute():
                raise ValueError(f"layout pattern {pattern!r} must be relative with one {{id}}")

    def image_path(self, root: Path, i: str) -> Path:
        return root / self.image.replace("{id}", i)

    def mask_path(self, root: Path, i: str) -> Path:
        return root / self.mask.replace("{id}", i)


def check_listed(root: Path | str, ids: Sequence[str], layout: Layout, with_masks: bool) -> None:
    """Raise DataError naming the first listed id whose image (or mask) file is missing, and
    how many listed ids lack files; a stat per file, so a split is checked before training."""
    root = Path(root)
    missing = [
        (i, p)
        for i in ids
        for p in [layout.image_path(root, i)] + ([layout.mask_path(root, i)] if with_masks else [])
        if not p.is_file()
    ]
    if missing:
        i, p = missing[0]
        ids_missing = len({j for j, _ in missing})
        more = f" ({ids_missing} listed ids lack files)" if ids_missing > 1 else ""
        raise DataError(f"{p}: listed id {i!r} has no file{more}")


def voc_palette() -> list[int]:
    """The 256-entry VOC colour palette (flat RGB list), so index masks display like VOC's."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Classes:
    """Class names in index order and a display colour for each (VOC's palette unless the
    dataset names its own, as a custom class list may)."""

    names: list[str]
    colours: list[RGB]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colours):
            raise ValueError(f"{len(self.names)} class names but {len(self.colours)} colours")
        if not all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in self.colours):
            raise ValueError(f"colours must be RGB triples in 0..255, got {self.colours}")

    @classmethod
    def voc(cls, names: list[str]) -> Classes:
        """`names` in VOC's palette colours (index i gets VOC's colour of class i)."""
        flat = voc_palette()
        return cls(
            list(names),
            [(flat[3 * i], flat[3 * i + 1], flat[3 * i + 2]) for i in range(len(names))],
        )

    def palette(self) -> list[int]:
        """A flat 768-value PNG palette: these colours first, VOC's for the other indices."""
        flat = voc_palette()
        for i, rgb in enumerate(self.colours):
            flat[3 * i : 3 * i + 3] = list(rgb)
        return flat


def open_decoded(path: Path, what: str) -> Image.Image:
    """Open and decode an image file; DataError naming the file (and `what` it is) if absent
    or unreadable."""
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        img = Image.open(path)
        # Decode now: PIL is lazy and a truncated file would otherwise fail later, far away.
        img.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable {what} ({e})") from e
    return img
