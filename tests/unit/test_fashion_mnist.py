"""Fashion-MNIST source (issue 17): strict IDX parsing, the Debian package's files when they
are installed and intact, else a checksum-verified download; fixtures are small IDX files."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from imas.data import DataError
from pipeline.acquire import fashion_mnist as fm

NAMES = [name for pair in fm.FILES.values() for name in pair]
SMALL = {"train": 12, "test": 5}


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_set(folder: Path, seed: int = 0) -> dict[str, str]:
    """The four .gz files of a small Fashion-MNIST in `folder`; returns their md5s."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, (images, labels) in fm.FILES.items():
        n = SMALL[split]
        (folder / images).write_bytes(
            gzip.compress(idx_bytes(rng.integers(0, 256, (n, 28, 28))), mtime=0)
        )
        (folder / labels).write_bytes(gzip.compress(idx_bytes(np.arange(n) % 10), mtime=0))
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in NAMES}


def test_read_idx_round_trips_raw_and_gzip(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(array))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(array)))
    for name in ("a.idx", "a.idx.gz"):
        got = fm.read_idx(tmp_path / name)
        assert got.dtype == np.uint8 and np.array_equal(got, array)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    (tmp_path / "l.idx").write_bytes(idx_bytes(labels))
    assert fm.read_idx(tmp_path / "l.idx").tolist() == [3, 1, 4]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"\0" * 4, "not an unsigned-byte IDX"),  # floats
        (b"\x89PNG\r\n", "not an unsigned-byte IDX"),
        (bytes([0, 0, 8, 3, 0, 0]), "header cut short"),
        (idx_bytes(np.zeros((2, 2, 2)))[:-1], r"\(2, 2, 2\) = 8 bytes of data, the file has 7"),
        (idx_bytes(np.zeros((2, 2))) + b"\0", "the file has 5"),
    ],
)
def test_a_bad_idx_file_is_an_error_naming_it(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "bad.idx"
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"bad\.idx: .*{needle}"):
        fm.read_idx(path)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(b"x" * 100)[:-8])
    with pytest.raises(DataError, match=r"broken\.gz: unreadable"):
        fm.read_idx(broken)


def test_the_installed_debian_files_are_used_without_a_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    debian = tmp_path / "debian"
    monkeypatch.setattr(fm, "DEBIAN_MD5", write_set(debian))
    files = fm.locate(tmp_path / "downloads", [], debian_dir=debian)
    assert files == {name: debian / name for name in NAMES}
    assert not (tmp_path / "downloads").exists()
    images, labels = fm.load(files, "train", SMALL)
    assert images.shape == (12, 28, 28) and labels.tolist() == [i % 10 for i in range(12)]
    # A damaged package is an error naming the file and the fix, not a silent download.
    (debian / NAMES[1]).write_bytes(b"damaged")
    with pytest.raises(DataError, match=rf"{NAMES[1]}: md5 .*reinstall"):
        fm.locate(tmp_path / "downloads", ["file:///nowhere"], debian_dir=debian)


def test_without_the_package_each_file_is_downloaded_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    monkeypatch.setattr(fm, "OFFICIAL_MD5", write_set(mirror, seed=1))
    downloads = tmp_path / "downloads"
    urls = ["file:///no/such/mirror/", mirror.as_uri()]  # the first mirror fails, the second serves
    files = fm.locate(downloads, urls, debian_dir=tmp_path / "no-package")
    assert files == {name: downloads / name for name in NAMES}
    for name in NAMES:
        assert (downloads / name).read_bytes() == (mirror / name).read_bytes()
    assert fm.load(files, "test", SMALL)[0].shape == (5, 28, 28)
    # A file that does not match the official checksum never appears under its name.
    other = tmp_path / "other"
    write_set(other, seed=2)
    fresh = tmp_path / "fresh"
    with pytest.raises(DataError, match="download failed from every mirror"):
        fm.locate(fresh, [other.as_uri()], debian_dir=tmp_path / "no-package")
    assert not any(p.suffix == ".gz" for p in fresh.glob("*"))
    with pytest.raises(DataError, match="no URL to download it from"):
        fm.locate(fresh, [], debian_dir=tmp_path / "no-package")


def test_load_checks_counts_and_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "set"
    write_set(folder)
    files = {name: folder / name for name in NAMES}
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: shape \(12, 28, 28\)"):
        fm.load(files, "train")  # the official count is 60,000
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.full(5, 10))))
    with pytest.raises(DataError, match=r"t10k-labels.*label 10 outside 0\.\.9"):
        fm.load(files, "test", SMALL)
    with pytest.raises(ValueError, match="split must be one of"):
        fm.load(files, "val", SMALL)


@pytest.mark.skipif(
    not (fm.DEBIAN_DIR / NAMES[0]).is_file(),
    reason="dataset-fashion-mnist is not installed (make setup installs it as root with apt)",
)
def test_the_real_package_holds_the_official_dataset() -> None:
    files = fm.locate(Path("unused"), [])
    for split, per_class in (("train", 6000), ("test", 1000)):
        images, labels = fm.load(files, split)
        assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10
        assert images.dtype == np.uint8 and 60 < images.mean() < 90  # dark garments on black


def test_glyph_pools_are_disjoint_balanced_and_fixed_by_their_seed() -> None:
    labels = np.repeat(np.arange(10), 100)[np.random.default_rng(3).permutation(1000)]
    sizes = {"pretrain": 500, "train_aug": 303, "val": 120, "tune": 77}
    pools = fm.glyph_pools(labels, sizes)
    assert {k: len(v) for k, v in pools.items()} == sizes
    together = np.concatenate(list(pools.values()))
    assert len(np.unique(together)) == len(together) == 1000  # every glyph in exactly one pool
    # Balanced: ⌊size/10⌋ of every class, one more of the size % 10 classes with the most
    # glyphs left, so pools that take every glyph together fit exactly.
    assert np.bincount(labels[pools["train_aug"]], minlength=10).tolist() == [31] * 3 + [30] * 7
    assert np.bincount(labels[pools["val"]], minlength=10).tolist() == [12] * 10
    assert np.bincount(labels[pools["tune"]], minlength=10).tolist() == [7] * 3 + [8] * 7
    # Shuffled within a pool (a renderer taking glyphs in order mixes classes) ...
    assert len(set(labels[pools["val"][:10]].tolist())) > 3
    # ... and the same for the same seed, other for another.
    again = fm.glyph_pools(labels, sizes)
    assert all(np.array_equal(pools[k], again[k]) for k in sizes)
    assert not np.array_equal(pools["val"], fm.glyph_pools(labels, sizes, seed=1)["val"])
    # Changing later pools leaves the earlier ones as they were.
    grown = fm.glyph_pools(labels, {**sizes, "tune": 70, "spare": 7})
    assert all(np.array_equal(pools[k], grown[k]) for k in ("pretrain", "train_aug", "val"))


def test_glyph_pools_refuse_to_reuse_a_glyph() -> None:
    labels = np.repeat(np.arange(10), 10)
    with pytest.raises(ValueError, match=r"pool 'val' needs 2 glyphs of class 0 .*only 1 are left"):
        fm.glyph_pools(labels, {"train": 90, "val": 20})
    with pytest.raises(ValueError, match="size -1"):
        fm.glyph_pools(labels, {"train": -1})
