"""Published split lists: verified fetches from a fixture mirror, the table, seeded splits."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest

from imas.data import DataError
from imas.data.catalogue import PUBLISHED_COUNTS, published_counts
from imas.data.splits import make_split, read_list
from pipeline.acquire.fetch import file_digest
from pipeline.acquire.split_lists import (
    SPLITS,
    SPLITS_URL,
    fetch_split,
    fetch_val_list,
    generated_split,
)

LISTS = {
    "pascal/3/labeled.txt": "2007_000032\n2007_000039\n2008_000123",
    "pascal/3/unlabeled.txt": "2007_000033\n2009_000001",
    "pascal/val.txt": "2007_000001\n2007_000002",
}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture()
def mirror(tmp_path) -> tuple[str, dict[str, tuple[int, str]]]:
    root = tmp_path / "mirror"
    for rel, text in LISTS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    table = {rel: (len(text.split("\n")), _sha(text)) for rel, text in LISTS.items()}
    return root.as_uri(), table


def test_fetch_split_and_val_exact(tmp_path, mirror) -> None:
    url, table = mirror
    dest = tmp_path / "split"
    missing = (tmp_path / "nowhere").as_uri()  # a dead mirror first: the next one is used
    lab, unl = fetch_split("pascal", 3, dest, base_urls=(missing, url), table=table)
    assert (lab, unl) == (dest / "labeled.txt", dest / "unlabeled.txt")
    assert lab.read_text() == LISTS["pascal/3/labeled.txt"]
    assert read_list(unl) == ["2007_000033", "2009_000001"]
    val = fetch_val_list("pascal", dest, base_urls=(url + "/",), table=table)
    assert val == dest / "val.txt" and val.read_text() == LISTS["pascal/val.txt"]
    assert sorted(p.name for p in dest.iterdir()) == ["labeled.txt", "unlabeled.txt", "val.txt"]


def test_fetch_split_wrong_sha(tmp_path, mirror) -> None:
    url, table = mirror
    table["pascal/3/unlabeled.txt"] = (2, "ab" * 32)
    with pytest.raises(DataError) as e:
        fetch_split("pascal", 3, tmp_path / "s", base_urls=(url,), table=table)
    want = f"expected {'ab' * 32}, got {_sha(LISTS['pascal/3/unlabeled.txt'])}"
    assert "unlabeled.txt" in str(e.value) and want in str(e.value)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["labeled.txt"]


def test_fetch_wrong_line_count(tmp_path, mirror) -> None:
    url, table = mirror
    table["pascal/val.txt"] = (5, table["pascal/val.txt"][1])
    with pytest.raises(DataError, match=r"val\.txt: 2 ids, the table for pascal/val\.txt says 5"):
        fetch_val_list("pascal", tmp_path, base_urls=(url,), table=table)
    assert not (tmp_path / "val.txt").exists()


def test_fetch_split_overlap(tmp_path, mirror) -> None:
    url, table = mirror
    root = Path(url.removeprefix("file://"))
    text = "2007_000033\n2007_000039"
    (root / "pascal/3/unlabeled.txt").write_text(text)
    table["pascal/3/unlabeled.txt"] = (2, _sha(text))
    with pytest.raises(DataError, match=r"share 1 ids, e\.g\. '2007_000039'"):
        fetch_split("pascal", 3, tmp_path / "s", base_urls=(url,), table=table)


def test_unknown_count_lists_available(tmp_path) -> None:
    # Fails before any download, so the real table and URL are safe to use offline.
    with pytest.raises(
        DataError, match=r"available: \[92, 183, 366, 662, 732, 1323, 1464, 2646, 5291\]"
    ):
        fetch_split("pascal", 100, tmp_path)
    with pytest.raises(DataError, match=r"cityscapes split with 92 .*\[186, 372, 744, 1488\]"):
        fetch_split("cityscapes", 92, tmp_path)
    with pytest.raises(DataError, match=r"no published val list for 'ade'"):
        fetch_val_list("ade", tmp_path)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_published_counts() -> None:
    assert published_counts("pascal", "classic") == [92, 183, 366, 732, 1464]
    assert published_counts("pascal", "blended") == [662, 1323, 2646, 5291]
    assert published_counts("cityscapes") == [186, 372, 744, 1488]
    with pytest.raises(DataError, match=r"cityscapes lists of family 'blended'"):
        published_counts("cityscapes", "blended")


def test_table_is_consistent() -> None:
    # Runs without the shared copies: every family count has both files, and each split
    # partitions the whole train pool (10,582 train_aug / 2,975 Cityscapes train ids).
    assert SPLITS_URL.startswith("https://raw.githubusercontent.com/ZhenZHAO/iMAS/96e57e0")
    assert SPLITS_URL.endswith("/data/splits")
    pools = {"pascal": 10_582, "cityscapes": 2_975}
    listed = {"pascal/val.txt", "cityscapes/val.txt"}
    for (dataset, _), counts in PUBLISHED_COUNTS.items():
        for n in counts:
            lab, unl = SPLITS[f"{dataset}/{n}/labeled.txt"], SPLITS[f"{dataset}/{n}/unlabeled.txt"]
            assert lab[0] == n and lab[0] + unl[0] == pools[dataset], (dataset, n)
            listed |= {f"{dataset}/{n}/labeled.txt", f"{dataset}/{n}/unlabeled.txt"}
    assert listed == set(SPLITS)
    assert SPLITS["pascal/val.txt"][0] == 1449 and SPLITS["cityscapes/val.txt"][0] == 500
    assert all(len(sha) == 64 and int(sha, 16) >= 0 for _, sha in SPLITS.values())


def test_the_authors_lists_match_the_table(tmp_path: Path, published_splits: Path) -> None:
    lists = published_splits
    on_disk = {p.relative_to(lists).as_posix() for p in lists.rglob("*.txt")}
    assert on_disk == set(SPLITS)
    for rel, (lines, sha) in SPLITS.items():
        assert file_digest(lists / rel, "sha256") == sha, rel
        assert len(read_list(lists / rel)) == lines, rel
    lab, _ = fetch_split("pascal", 92, tmp_path, base_urls=(lists.as_uri(),))
    assert lab.read_bytes() == (lists / "pascal/92/labeled.txt").read_bytes()


def test_the_authors_families_are_what_the_catalogue_says(published_splits: Path) -> None:
    lists = published_splits

    def lab(n: int) -> set[str]:
        return set(read_list(lists / f"pascal/{n}/labeled.txt"))

    voc_train = lab(1464)
    assert all(lab(n) <= voc_train for n in published_counts("pascal", "classic"))
    blended = published_counts("pascal", "blended")
    assert all(lab(a) <= lab(b) for a, b in itertools.pairwise(blended))
    assert len(lab(5291) & voc_train) == 742  # ~ 5291/10582 · 1464: drawn from all of train_aug


POOL = [f"2009_{i:06d}" for i in range(40)]
VOC_TRAIN = POOL[::4]  # 10 ids


def test_generated_split_classic_and_blended() -> None:
    lab, unl = generated_split(VOC_TRAIN, POOL, 4, seed=1)
    assert lab == make_split(VOC_TRAIN, 4, seed=1)[0]
    assert set(lab) <= set(VOC_TRAIN) and unl == [i for i in POOL if i not in set(lab)]
    assert len(unl) == 36
    small, _ = generated_split(VOC_TRAIN, POOL, 2, seed=1)
    assert set(small) <= set(lab)
    lab_b, unl_b = generated_split(POOL, POOL, 8, seed=1)
    assert (lab_b, unl_b) == make_split(POOL, 8, seed=1)
    assert not set(lab_b) <= set(VOC_TRAIN)
    with pytest.raises(ValueError, match=r"1 labeled-pool ids are not in the pool, e\.g\. 'x'"):
        generated_split([*VOC_TRAIN, "x"], POOL, 2, seed=0)
    with pytest.raises(ValueError, match=r"labeled=11 must be in 1\.\.10"):
        generated_split(VOC_TRAIN, POOL, 11, seed=0)
