"""Labeled/unlabeled splits and id-list files.

List files use the format of the published VOC/U2PL split lists (one id per line, no newline
after the last id), so lists written here can be diffed against, or replaced by, the published
ones.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from imas.data import DataError


def make_split(pool_ids: list[str], labeled: int, seed: int) -> tuple[list[str], list[str]]:
    """Draw `labeled` ids from the pool; the rest of the pool is the unlabeled set.

    Both returned lists keep the pool's order, so the files written from them are stable and
    easy to diff. The draw is the first `labeled` entries of one seeded permutation of the pool,
    so for a fixed seed a smaller labeled set is a subset of a larger one (92 ⊂ 183 ⊂ 366 ...),
    which keeps the label-count sweep a controlled comparison. Different seeds give different
    labeled sets.

    Raises ValueError when `labeled` is not in 1..len(pool) or the pool repeats an id (a repeated
    id would end up on both sides of the split).
    """
    n = len(pool_ids)
    if labeled <= 0 or labeled > n:
        raise ValueError(f"labeled={labeled} must be in 1..{n} (pool size {n})")
    seen: set[str] = set()
    for i in pool_ids:
        if i in seen:
            raise ValueError(f"pool repeats id {i!r}")
        seen.add(i)
    order = np.random.default_rng(seed).permutation(n)
    chosen = np.zeros(n, dtype=bool)
    chosen[order[:labeled]] = True
    lab = [i for i, c in zip(pool_ids, chosen, strict=True) if c]
    unl = [i for i, c in zip(pool_ids, chosen, strict=True) if not c]
    return lab, unl


def read_list(path: Path | str) -> list[str]:
    """Read an id list: one id per line, surrounding whitespace stripped, empty lines skipped.

    Raises DataError naming the file when it is missing or repeats an id (a repeated id would
    silently double an image's weight in training or in the mIoU).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: id list not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read id list ({e})") from e
    ids: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        item = line.strip()
        if not item:
            continue
        if item in seen:
            raise DataError(f"{path}: id {item!r} repeated (lines {seen[item]} and {lineno})")
        seen[item] = lineno
        ids.append(item)
    return ids


def write_list(path: Path | str, ids: Iterable[str]) -> None:
    """Write ids one per line with no trailing newline, atomically.

    The temp file lives in the target directory so `os.replace` is a same-filesystem rename:
    a reader (or DVC) never sees a half-written list. Ids that would not round-trip through
    `read_list` (empty, surrounding whitespace, embedded newline) are rejected.
    """
    path = Path(path)
    items = list(ids)
    for i in items:
        if not i or i != i.strip() or "\n" in i or "\r" in i:
            raise ValueError(f"{path}: id {i!r} would not round-trip through read_list")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # newline="" so Windows would not turn "\n" into "\r\n" and break byte-equality.
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write("\n".join(items))
        # mkstemp makes the file owner-only; a list is not a secret.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
