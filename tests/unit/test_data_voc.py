"""VOC-layout readers and datasets, the weak transform's alignment, and normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from imas.config import AugConfig
from imas.data import DataError
from imas.data.catalogue import VOC_AUG_LAYOUT, VOC_LAYOUT
from imas.data.datasets import LabeledDataset, UnlabeledDataset, ValDataset, read_image, read_mask
from imas.data.layout import Layout, voc_palette
from imas.data.transforms import denormalize, normalize, pad_fill, weak_transform

AUG = AugConfig(crop=24, scale=(0.5, 2.0), hflip=True, strong_ops=2)


def _write(root: Path, sid: str, image: np.ndarray, mask: np.ndarray) -> None:
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    # PNG bytes under a .jpg name: PIL sniffs the format, and lossless keeps colours exact.
    Image.fromarray(image).save(root / "JPEGImages" / f"{sid}.jpg", format="PNG")
    m = Image.fromarray(mask.astype(np.uint8))
    m.putpalette(voc_palette())
    m.save(root / "SegmentationClass" / f"{sid}.png")


def _coded(
    h: int = 20, w: int = 30, seed: int = 0, block: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """An image whose colour encodes its label: labels {0, 3} in blocks, red = 40 + 60·label.

    Two far-apart codes make the decoding exact (threshold at the midpoint 130), so a blended
    edge pixel decodes to the side whose area dominates, as the nearest-neighbour mask does.
    """
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 2, size=(h // block, w // block)) * 3
    mask = np.kron(cells, np.ones((block, block), int))
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = 40 + 60 * mask
    image[..., 1] = np.arange(w)[None, :] * 4  # horizontal ramp: reveals a flip
    return image, mask


@pytest.fixture()
def root(tmp_path) -> Path:
    for i in range(4):
        _write(tmp_path, f"s{i}", *_coded(seed=i))
    return tmp_path


def test_read_image_and_mask(root) -> None:
    img = read_image(root / "JPEGImages/s0.jpg")
    mask = read_mask(root / "SegmentationClass/s0.png", 5, (20, 30))
    assert img.dtype == torch.uint8 and img.shape == (3, 20, 30)
    assert mask.dtype == torch.int64 and mask.shape == (20, 30)
    assert torch.equal(img[0].long(), 40 + 60 * mask)


def test_read_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(DataError, match=r"missing\.jpg.*not found"):
        read_image(tmp_path / "missing.jpg")
    good = tmp_path / "good.png"
    m = Image.fromarray(np.zeros((40, 40), np.uint8))
    m.putpalette(voc_palette())
    m.save(good)
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good.read_bytes()[:60])
    with pytest.raises(DataError, match=r"trunc\.png"):
        read_mask(trunc, 21)
    with pytest.raises(DataError, match=r"good\.png.*size \(40, 40\).*\(20, 30\)"):
        read_mask(good, 21, (20, 30))
    bad = tmp_path / "bad.png"
    arr = np.zeros((4, 4), np.uint8)
    arr[0, 0], arr[1, 1], arr[2, 2] = 21, 255, 20
    Image.fromarray(arr).save(bad)
    with pytest.raises(DataError, match=r"bad\.png.*\[21\]"):
        read_mask(bad, 21)
    assert read_mask(bad, 22).max() == 255
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb)
    with pytest.raises(DataError, match=r"rgb\.png.*mode RGB"):
        read_mask(rgb, 21)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"junk\.jpg"):
        read_image(junk)


def test_dataset_checks_listed_files_exist(root) -> None:
    with pytest.raises(DataError, match=r"nope\.jpg"):
        LabeledDataset(root, ["s0", "nope"], 5, AUG)
    (root / "SegmentationClass/s3.png").unlink()
    UnlabeledDataset(root, ["s3"], AUG)  # masks are not needed for unlabeled images
    with pytest.raises(DataError, match=r"s3\.png"):
        ValDataset(root, ["s3"], 5)


SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def _agreement(img: torch.Tensor, mask: torch.Tensor, dy: int = 0, dx: int = 0) -> float:
    """Share of valid pixels whose label matches the label decoded from the image at (dy,dx)."""
    decoded = torch.where(img[0] >= 130, 3, 0)
    decoded = torch.roll(decoded, shifts=(dy, dx), dims=(0, 1))
    valid = mask != 255
    valid[[0, -1], :] = False  # roll wraps around; edges are not comparable
    valid[:, [0, -1]] = False
    return (decoded[valid] == mask[valid]).float().mean().item()


def _check_alignment(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Labels decode from the image at offset 0, and fit clearly worse one pixel off.

    Single crops can tie (a pixel straddling a region edge 50/50, or a crop with no edge in
    one direction), so the shifted comparison is on the mean over crops.
    """
    zero = []
    for img, mask in pairs:
        assert (mask != 255).float().mean() > 0.2  # 20x30 at scale 0.5 fills 26% of 24x24
        # Padding: the mean colour where the mask is 255 (the coded images hold no such colour).
        fill = torch.tensor(pad_fill(), dtype=torch.uint8).view(3, 1)
        assert torch.all(img[:, mask == 255] == fill)
        zero.append(_agreement(img, mask))
    assert min(zero) > 0.9
    mean_zero = sum(zero) / len(zero)
    assert mean_zero > 0.98
    for dy, dx in SHIFTS:
        shifted = sum(_agreement(i, m, dy, dx) for i, m in pairs) / len(pairs)
        assert shifted < mean_zero - 0.02, (dy, dx)


def test_weak_transform_keeps_alignment() -> None:
    torch.manual_seed(0)
    image, mask = _coded(48, 48, block=8)
    img_t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    mask_t = torch.from_numpy(mask).long()
    flips, pairs = 0, []
    for _ in range(40):
        out_i, out_m = weak_transform(img_t, mask_t, AUG)
        assert out_i.shape == (3, 24, 24) and out_i.dtype == torch.uint8
        assert out_m is not None and out_m.shape == (24, 24) and out_m.dtype == torch.int64
        assert set(out_m.unique().tolist()) <= {0, 3, 255}
        pairs.append((out_i, out_m))
        ramp = out_i[1].float()[out_m != 255]
        cols = torch.arange(24).expand(24, 24)[out_m != 255].float()
        flips += int(torch.corrcoef(torch.stack([ramp, cols]))[0, 1] < 0)
    _check_alignment(pairs)
    assert 0 < flips < 40  # hflip on: both orientations occur


def test_weak_transform_pads_with_the_mean_colour_and_ignore() -> None:
    torch.manual_seed(1)
    aug = AugConfig(crop=32, scale=(1.0, 1.0), hflip=False, strong_ops=2)
    image, mask = _coded(20, 30)
    img_t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    out_i, out_m = weak_transform(img_t, torch.from_numpy(mask).long(), aug)
    assert out_m is not None
    assert torch.equal(out_m[:20, :30], torch.from_numpy(mask).long())
    assert torch.equal(out_i[:, :20, :30], img_t)  # the crop of a 32-padded image is all of it
    assert torch.all(out_m[20:] == 255) and torch.all(out_m[:, 30:] == 255)
    # The authors pad with ImageNet's mean × 255, truncated by np.uint8: (123, 116, 103).
    for channel, value in enumerate((123, 116, 103)):
        assert torch.all(out_i[channel, 20:] == value) and torch.all(
            out_i[channel, :, 30:] == value
        )
    # Another normalisation mean pads with its own colour.
    out_grey, no_mask = weak_transform(img_t, None, aug, mean=(0.5, 0.5, 0.5))
    assert no_mask is None and torch.all(out_grey[:, 20:] == 127)
    # Normalised, the padding is (almost) zero: it adds no signal to the network's input.
    assert normalize(out_i)[:, 20:].abs().max() < 0.02


def test_weak_transform_flips_before_padding() -> None:
    # The authors flip, then pad bottom/right: padding never lands on the left, flipped or not.
    aug = AugConfig(crop=32, scale=(1.0, 1.0), hflip=True, strong_ops=2)
    image, mask = _coded(20, 30)
    img_t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    flipped = 0
    for seed in range(16):
        torch.manual_seed(seed)
        out_i, out_m = weak_transform(img_t, torch.from_numpy(mask).long(), aug)
        assert out_m is not None
        assert torch.all(out_m[:, 30:] == 255) and torch.all(out_m[:20, :30] != 255)
        flipped += torch.equal(out_i[:, :20, :30], img_t.flip(-1))
    assert 0 < flipped < 16


def test_labeled_dataset_seeded_and_collates(root) -> None:
    ds = LabeledDataset(root, ["s0", "s1", "s2", "s3"], 5, AUG, cache=True)

    def run() -> list[torch.Tensor]:
        torch.manual_seed(3)
        return [t for batch in DataLoader(ds, batch_size=2, shuffle=True) for t in batch]

    a, b = run(), run()
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[0].shape == (2, 3, 24, 24) and a[1].shape == (2, 24, 24)
    torch.manual_seed(4)
    _check_alignment([ds[i % 4] for i in range(40)])


def test_cached_dataset_returns_fresh_tensors(root) -> None:
    ds = LabeledDataset(root, ["s0"], 5, None, cache=True)
    img, mask = ds[0]
    img.zero_()
    mask.fill_(3)
    img2, mask2 = ds[0]
    assert img2.max() > 0 and not torch.all(mask2 == 3)


def test_val_and_unlabeled_datasets(root) -> None:
    val = ValDataset(root, ["s1", "s2"], 5)
    img, mask, ids = next(iter(DataLoader(val, batch_size=2)))
    assert img.shape == (2, 3, 20, 30) and mask.shape == (2, 20, 30) and list(ids) == ["s1", "s2"]
    full_img, full_mask = LabeledDataset(root, ["s1"], 5, None)[0]
    assert torch.equal(full_img, img[0]) and torch.equal(full_mask, mask[0])
    unl = UnlabeledDataset(root, ["s0", "s1", "s2"], AUG)
    batch = next(iter(DataLoader(unl, batch_size=3)))
    assert batch.shape == (3, 3, 24, 24) and batch.dtype == torch.uint8


def test_normalize_roundtrip_any_rank() -> None:
    x = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    n = normalize(x)
    assert n.dtype == torch.float32 and n.shape == x.shape
    assert torch.allclose(denormalize(n) * 255, x.float(), atol=1e-3)
    assert torch.allclose(normalize(x[0]), n[0])
    assert abs(normalize(torch.full((3, 1, 1), 124, dtype=torch.uint8))[0].item()) < 0.01
    with pytest.raises(ValueError, match=r"uint8"):
        normalize(x.float())


def test_unlabeled_item_is_one_weak_crop(root) -> None:
    # The strong view is derived later from this tensor, so an item must be exactly one weak
    # transform of the image: a second, independent crop here would break pixel alignment.
    unl = UnlabeledDataset(root, ["s2"], AUG)
    torch.manual_seed(9)
    item = unl[0]
    after = torch.rand(())
    torch.manual_seed(9)
    want, mask = weak_transform(read_image(root / "JPEGImages/s2.jpg"), None, AUG)
    assert isinstance(item, torch.Tensor) and mask is None
    assert torch.equal(item, want)
    assert torch.equal(after, torch.rand(()))  # no further random draws (e.g. a second crop)


def test_layout_paths_are_exact(tmp_path) -> None:
    # The default must give exactly the paths the dataset classes built before layouts existed.
    i = "2007_000032"
    assert str(VOC_LAYOUT.image_path(tmp_path, i)) == f"{tmp_path}/JPEGImages/{i}.jpg"
    assert str(VOC_LAYOUT.mask_path(tmp_path, i)) == f"{tmp_path}/SegmentationClass/{i}.png"
    assert str(VOC_AUG_LAYOUT.image_path(tmp_path, i)) == f"{tmp_path}/JPEGImages/{i}.jpg"
    assert str(VOC_AUG_LAYOUT.mask_path(tmp_path, i)) == f"{tmp_path}/SegmentationClassAug/{i}.png"
    city = Layout("leftImg8bit/{id}_leftImg8bit.png", "gtFine/{id}_gtFine_labelTrainIds.png")
    i = "train/aachen/aachen_000000_000019"
    assert str(city.image_path(tmp_path, i)) == (
        f"{tmp_path}/leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    )
    assert str(city.mask_path(tmp_path, i)) == (
        f"{tmp_path}/gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png"
    )
    for bad in ("JPEGImages/x.jpg", "{id}/{id}.jpg", "/abs/{id}.jpg"):
        with pytest.raises(ValueError, match=r"must be relative with one \{id\}"):
            Layout(bad, "m/{id}.png")


def test_datasets_read_through_a_layout(root) -> None:
    layout = Layout("img/{id}_x.png", "lab/sub/{id}.png")
    (root / "img").mkdir()
    (root / "lab/sub").mkdir(parents=True)
    for sid in ("s0", "s1"):
        (root / "JPEGImages" / f"{sid}.jpg").rename(root / "img" / f"{sid}_x.png")
        (root / "SegmentationClass" / f"{sid}.png").rename(root / "lab/sub" / f"{sid}.png")
    want = _coded(seed=1)
    img, mask, name = ValDataset(root, ["s1"], 5, layout=layout)[0]
    assert name == "s1" and torch.equal(img[0].long(), 40 + 60 * mask)
    assert torch.equal(mask, torch.from_numpy(want[1]).long())
    lab_img, lab_mask = LabeledDataset(root, ["s0"], 5, None, layout=layout)[0]
    assert lab_img.shape == (3, 20, 30) and torch.equal(lab_img[0].long(), 40 + 60 * lab_mask)
    assert UnlabeledDataset(root, ["s0", "s1"], AUG, layout=layout)[1].shape == (3, 24, 24)
    # The default layout no longer finds the moved files; the error names the full path.
    with pytest.raises(DataError) as e:
        ValDataset(root, ["s0"], 5)
    assert str(e.value) == f"{root}/JPEGImages/s0.jpg: listed id 's0' has no file"
    (root / "lab/sub/s1.png").unlink()
    with pytest.raises(DataError) as e:
        LabeledDataset(root, ["s0", "s1"], 5, AUG, layout=layout)
    assert str(e.value) == f"{root}/lab/sub/s1.png: listed id 's1' has no file"
