"""Fashion-MNIST garments: the objects of the built-in scenes to come (issue 17), read from the
IDX files of Debian's `dataset-fashion-mnist` package when it is installed, else downloaded from
the official mirror, every file checksum-verified either way.

Debian recompressed the files, so its `.gz` files have checksums of their own (`DEBIAN_MD5`);
the official ones are `OFFICIAL_MD5` (the sums torchvision's FashionMNIST checks too). Whatever
the source, `load` parses the IDX format strictly and checks the counts and labels, so a wrong
or damaged file is an error naming it, never a silently smaller dataset. numpy only, no torch.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from imas.data import DataError
from imas.data.catalogue import FASHION_MNIST_CLASSES
from pipeline.acquire.fetch import download, file_digest

SIDE = 28
COUNTS = {"train": 60_000, "test": 10_000}
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# dataset-fashion-mnist 0.0~git20200523.55506a9-1 (Debian), measured on its files.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_MD5 = {
    "train-images-idx3-ubyte.gz": "cf8536b0aa1a6ac5fa3f23001093305c",
    "train-labels-idx1-ubyte.gz": "10bea18fdb374794d4bb42e356e600c9",
    "t10k-images-idx3-ubyte.gz": "f78720b4224f21cce2f2ccf2d7a94c9a",
    "t10k-labels-idx1-ubyte.gz": "0d30e22e447f3c33dab9ed536400ac01",
}
# IDX magic: two zero bytes, the element type (0x08: unsigned byte), the number of dimensions.
_UBYTE = 0x08


def read_idx(path: Path | str) -> np.ndarray:
    """An IDX file (gzip-compressed or not) as a uint8 array of the shape its header gives.

    Raises DataError naming the file when the magic number is not an unsigned-byte IDX, the
    data is shorter or longer than the header says, or gzip cannot read it.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: unreadable ({type(err).__name__}: {err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE or not 1 <= raw[3] <= 4:
        raise DataError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex() or 'none'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: IDX header cut short ({len(raw)} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: IDX header says {shape} = {expected} bytes of data, the file has "
            f"{len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def locate(
    downloads: Path | str,
    urls: Sequence[str],
    *,
    debian_dir: Path | str = DEBIAN_DIR,
    progress: bool = False,
) -> dict[str, Path]:
    """The four `.gz` files, by name: the Debian package's when all four are there with their
    checksums, else each downloaded into `downloads` from the first of `urls` (folder URLs,
    `file://` included) that serves it with the official checksum.

    A Debian file with a wrong checksum is an error naming it, not a reason to download: an
    installed package that does not match its own sums is damaged and should be reinstalled.
    """
    debian = Path(debian_dir)
    names = [name for pair in FILES.values() for name in pair]
    if all((debian / name).is_file() for name in names):
        for name in names:
            digest = file_digest(debian / name, "md5")
            if digest != DEBIAN_MD5[name]:
                raise DataError(
                    f"{debian / name}: md5 {digest}, expected {DEBIAN_MD5[name]} (the "
                    "dataset-fashion-mnist package's); reinstall it: apt-get install "
                    "--reinstall dataset-fashion-mnist"
                )
        return {name: debian / name for name in names}
    if not urls:
        raise DataError(f"Fashion-MNIST: not installed in {debian} and no URL to download it from")
    downloads = Path(downloads)
    return {
        name: download(
            [url.rstrip("/") + "/" + name for url in urls],
            downloads / name,
            md5=OFFICIAL_MD5[name],
            progress=progress,
        )
        for name in names
    }


def load(
    files: dict[str, Path], split: str, counts: dict[str, int] = COUNTS
) -> tuple[np.ndarray, np.ndarray]:
    """Images `[N, 28, 28]` and labels `[N]` (uint8, 0..9) of `split` (train | test), checked
    against `counts` (the official 60,000 / 10,000; small test fixtures pass their own)."""
    if split not in FILES:
        raise ValueError(f"split must be one of {sorted(FILES)}, got {split!r}")
    image_file, label_file = (files[name] for name in FILES[split])
    images, labels = read_idx(image_file), read_idx(label_file)
    n = counts[split]
    if images.shape != (n, SIDE, SIDE):
        raise DataError(f"{image_file}: shape {images.shape}, expected {(n, SIDE, SIDE)}")
    if labels.shape != (n,):
        raise DataError(f"{label_file}: shape {labels.shape}, expected {(n,)}")
    if labels.max() >= len(FASHION_MNIST_CLASSES):
        raise DataError(
            f"{label_file}: label {int(labels.max())} outside 0..{len(FASHION_MNIST_CLASSES) - 1}"
        )
    return images, labels


def glyph_pools(labels: np.ndarray, sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Disjoint pools of glyph indices, `sizes[name]` glyphs each, so that no glyph appears in
    two pools (pretraining, train_aug, val, tune; the test scenes draw from the test file).

    Every pool keeps the classes balanced: each class is shuffled once by `seed` (fixed for the
    dataset, never the run's seed, so every run sees the same pools) and cut into consecutive
    runs, pool after pool in the order of `sizes`, each taking ⌊size / 10⌋ glyphs of every class
    plus one more of the `size mod 10` classes with the most glyphs left. The pools' own orders
    are shuffled too, so a
    renderer that takes glyphs in order gets mixed classes. Raises ValueError naming the pool
    and the counts when a class runs out.
    """
    n_classes = len(FASHION_MNIST_CLASSES)
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(n_classes)]
    taken = [0] * n_classes
    pools: dict[str, np.ndarray] = {}
    for name, size in sizes.items():
        if size < 0:
            raise ValueError(f"pool {name!r}: size {size} must be >= 0")
        # The remainder goes to the classes with the most glyphs left (ties: lower class), so
        # pools that together take every glyph fit exactly.
        left = [len(by_class[c]) - taken[c] for c in range(n_classes)]
        extra = sorted(range(n_classes), key=lambda c: (-left[c], c))[: size % n_classes]
        per_class = [size // n_classes + (c in extra) for c in range(n_classes)]
        parts = []
        for c, want in enumerate(per_class):
            have = len(by_class[c]) - taken[c]
            if want > have:
                raise ValueError(
                    f"pool {name!r} needs {want} glyphs of class {c} ({FASHION_MNIST_CLASSES[c]}), "
                    f"only {have} are left after the pools before it"
                )
            parts.append(by_class[c][taken[c] : taken[c] + want])
            taken[c] += want
        pools[name] = rng.permutation(np.concatenate(parts)) if parts else np.empty(0, np.int64)
    return pools
