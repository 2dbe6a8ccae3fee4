"""The published split lists (the iMAS authors' files), fetched and verified by sha256.

Semi-supervised segmentation results are only comparable on the same labeled sets, so the
benchmark uses the authors' lists rather than its own draw when asked to. They are downloaded
(not vendored) from a pinned commit and checked against the table below; any mirror serving
the same relative paths (another HTTP host, a `file://` folder) works.

Families. VOC "classic" lists draw their labeled ids from the 1,464 VOC train images (the
finely annotated ones); "blended" lists draw from all 10,582 train_aug ids, so most labeled
masks are SBD's coarser ones. In both, unlabeled = train_aug − labeled. 5291 (half of
train_aug) is blended: 662 ⊂ 1323 ⊂ 2646 ⊂ 5291 as labeled sets, and only 742 of its ids are
VOC train images (a uniform draw from train_aug expects 732), whereas every classic list lies
inside VOC train. The classic and Cityscapes lists are byte-identical to U2PL's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from imas.data import DataError
from imas.data.splits import make_split, read_list
from pipeline.acquire.fetch import download

Dataset = Literal["pascal", "cityscapes"]
Family = Literal["classic", "blended"]

SPLITS_COMMIT = "96e57e03b627164c0894fdf5cc47edb87a369444"
SPLITS_URL = f"https://raw.githubusercontent.com/ZhenZHAO/iMAS/{SPLITS_COMMIT}/data/splits"

# path (relative to SPLITS_URL), ids in the file, sha256 of the file.
_TABLE = """
cityscapes/1488/labeled.txt 1488 1c345bd7ed630b201bc3c3cde2604dce0d65df35c142bbf35ffea8a699485488
cityscapes/1488/unlabeled.txt 1487 be9e936decc74da8575cd57974e3b0ed4a669317873a5748125330b7d10409dc
cityscapes/186/labeled.txt 186 b325a363ec870628cbf3265bf48f9d9bf3e6e87a6e5c004ca989cda6279a0fd4
cityscapes/186/unlabeled.txt 2789 0adcdcf9cf5db4276dfcdba1c207b2e5439ee465102d923eff3eec61573c5393
cityscapes/372/labeled.txt 372 a7fa9c926a15c3983a6b2b884dc455bcfaf59ddc2cbe63f895e1d067d5a7f9b4
cityscapes/372/unlabeled.txt 2603 de6eeec7ec6d43403138d840e91e671af0033dc09a09cbcd14a7b872963b034f
cityscapes/744/labeled.txt 744 489d49d7dde31150a862dbd0aabfa8e787b9278ee51978d7d3d2c8e67d666c66
cityscapes/744/unlabeled.txt 2231 e7b30bf5cee9103f546818e61fd8e26eb63c3a763fdd2a45343744bb6d96618a
cityscapes/val.txt 500 8115b5b627fe0b24001c541804788b8c2bb16076b78ad036a9905d471abd11fd
pascal/1323/labeled.txt 1323 c9ca45b4e688d408cd0856e9d17bdf99a8c9bd1de09d33023e578cdb9a49f1a3
pascal/1323/unlabeled.txt 9259 0ff7a0ae65046a6dc058eac0c7ed648d8aa759703c9b74c3b8ed5301b8445c8a
pascal/1464/labeled.txt 1464 129f1fe991729b1862115b77738c938c149c1f167baa02b4b3186aea9f0d6a84
pascal/1464/unlabeled.txt 9118 ba34ae09804b56761fbb46667ed6eb962a498205c068521b1105a0944f08ac40
pascal/183/labeled.txt 183 5dac0b72efebf63344c90c3700537e6d667c80bfa4c17205d96d459e655ec976
pascal/183/unlabeled.txt 10399 4a3f4c77c01bae73b342439dbb3eb9f09b102e5ca5680fcfd941785bafd0cc98
pascal/2646/labeled.txt 2646 fd0e8dca3dac524cf3b8c2b8540bc67bac1fb5df93e562faf35232e90c444295
pascal/2646/unlabeled.txt 7936 dc5e8c04738506348f5a037465aa196038ad7dcb86abb9c6b60197ce345a41df
pascal/366/labeled.txt 366 97abd8fe7d52346b2663e6faed73e89560a171788ea0a12c012bff26c74a25d4
pascal/366/unlabeled.txt 10216 2cb6fe3645fa20e66653209b003e9d8b059e18bc664341515ea352eac2ef273c
pascal/5291/labeled.txt 5291 5338f277730143e02973ac654d6f0fb43e6758bd22769161397c42f08c818e0b
pascal/5291/unlabeled.txt 5291 42ae9d1941af68208ea7814553f704186d78af00e167240fdce394e7ba9a21a2
pascal/662/labeled.txt 662 baa85754594fcd33c7f06d9ef173db9f70a0c32f826a2958668ee406db9f7c5a
pascal/662/unlabeled.txt 9920 c38f02fc6adc3443bbd0cb490dae009ed94c6a1915dae8cb4c3123dd573c3a35
pascal/732/labeled.txt 732 b2973f8d47b780e0bc53f598a51fb651c21c7485f4d02111296452abb931ce44
pascal/732/unlabeled.txt 9850 077f8aab596629403bb38177c3c678a17a30eb7132a38f4952237763b311a170
pascal/92/labeled.txt 92 7feeb5314d99485739e79c385d3b70145d44dc60190acb4d5df63165c630ef6a
pascal/92/unlabeled.txt 10490 9ae9c7726c7e06f8ef40cddfea55911128157c5a21c3c5195074e4e45e48031f
pascal/val.txt 1449 6f8edc37993764f6e212237d39546fb595246244147e8a050813c520aac0ade1
"""
# Kept as the README's rows (one per line, diffable against it) and parsed once.
SPLITS: dict[str, tuple[int, str]] = {
    path: (int(lines), sha)
    for path, lines, sha in (row.split() for row in _TABLE.strip().splitlines())
}


def _fetch(
    rel: str,
    dest: Path,
    base_urls: Sequence[str],
    table: Mapping[str, tuple[int, str]],
    progress: bool,
) -> Path:
    lines, sha = table[rel]
    urls = [f"{base.rstrip('/')}/{rel}" for base in base_urls]
    path = download(urls, dest, sha256=sha, progress=progress)
    # The checksum already pins the content; the count guards the table itself (a sha256 and a
    # line count copied from different rows would disagree here).
    n = len(read_list(path))
    if n != lines:
        path.unlink()
        raise DataError(f"{path}: {n} ids, the table for {rel} says {lines}")
    return path


def _available(dataset: str, table: Mapping[str, tuple[int, str]]) -> list[int]:
    """Counts with a `<dataset>/<count>/labeled.txt` row in the table."""
    parts = (p.split("/") for p in table)
    return sorted(
        int(p[1]) for p in parts if len(p) == 3 and p[0] == dataset and p[2] == "labeled.txt"
    )


def fetch_split(
    dataset: Dataset,
    labeled: int,
    dest_dir: Path,
    *,
    base_urls: Sequence[str] = (SPLITS_URL,),
    table: Mapping[str, tuple[int, str]] = SPLITS,
    progress: bool = False,
) -> tuple[Path, Path]:
    """Download `<dataset>/<labeled>/{labeled,unlabeled}.txt` as dest_dir/{labeled,unlabeled}.txt.

    Both files are verified by sha256 (a verified existing file is not downloaded again) and by
    id count, and must be disjoint. `base_urls` are mirrors of SPLITS_URL, tried in order.
    DataError lists the available counts when `labeled` has no published list.
    """
    rel = f"{dataset}/{labeled}"
    if f"{rel}/labeled.txt" not in table or f"{rel}/unlabeled.txt" not in table:
        counts = _available(dataset, table)
        raise DataError(
            f"no published {dataset} split with {labeled} labeled ids; available: {counts}"
        )
    dest_dir = Path(dest_dir)
    lab = _fetch(f"{rel}/labeled.txt", dest_dir / "labeled.txt", base_urls, table, progress)
    unl = _fetch(f"{rel}/unlabeled.txt", dest_dir / "unlabeled.txt", base_urls, table, progress)
    both = set(read_list(lab)) & set(read_list(unl))
    if both:
        raise DataError(f"{lab} and {unl} share {len(both)} ids, e.g. {sorted(both)[0]!r}")
    return lab, unl


def fetch_val_list(
    dataset: Dataset,
    dest_dir: Path,
    *,
    base_urls: Sequence[str] = (SPLITS_URL,),
    table: Mapping[str, tuple[int, str]] = SPLITS,
    progress: bool = False,
) -> Path:
    """Download the published `<dataset>/val.txt` to dest_dir/val.txt, verified like fetch_split."""
    rel = f"{dataset}/val.txt"
    if rel not in table:
        raise DataError(f"no published val list for {dataset!r}")
    return _fetch(rel, Path(dest_dir) / "val.txt", base_urls, table, progress)


def generated_split(
    labeled_pool: Sequence[str], pool: Sequence[str], labeled: int, seed: int
) -> tuple[list[str], list[str]]:
    """A seeded split with a published count, for running without the published lists.

    Labeled ids are drawn from `labeled_pool` with `make_split` (so smaller counts nest inside
    larger ones for one seed); unlabeled = `pool` − labeled, in pool order. Pools per family:
    VOC classic draws from the 1,464 VOC train ids, VOC blended from all of train_aug, and
    Cityscapes from its train set; `pool` is train_aug (VOC) or train (Cityscapes).
    """
    pool_set = set(pool)
    outside = [i for i in labeled_pool if i not in pool_set]
    if outside:
        raise ValueError(
            f"{len(outside)} labeled-pool ids are not in the pool, e.g. {outside[0]!r}"
        )
    lab, _ = make_split(list(labeled_pool), labeled, seed)
    chosen = set(lab)
    return lab, [i for i in pool if i not in chosen]
