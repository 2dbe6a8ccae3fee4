"""Strong intensity ops: per-op semantics on hand-made inputs, and strong_view's contract."""

from __future__ import annotations

import pytest
import torch

from imas.intensity import OP_NAMES, OPS, strong_view


def _rand_img(seed: int = 0, h: int = 16, w: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def test_pool_has_the_twelve_ops() -> None:
    assert len(OP_NAMES) == 12
    assert set(OP_NAMES) == {
        "identity", "autocontrast", "equalize", "invert", "blur", "contrast",
        "brightness", "colour", "sharpness", "posterize", "solarize", "hue",
    }  # fmt: skip


@pytest.mark.parametrize("name", OP_NAMES)
@pytest.mark.parametrize("u", [0.0, 0.37, 0.999])
def test_op_keeps_dtype_shape_and_input(name: str, u: float) -> None:
    img = _rand_img(1, 9, 13)
    before = img.clone()
    out = OPS[name](img, u, -1)
    assert out.dtype == torch.uint8 and out.shape == img.shape
    assert torch.equal(img, before)


def test_identity_and_invert() -> None:
    img = _rand_img()
    assert torch.equal(OPS["identity"](img, 0.9), img)
    assert torch.all(OPS["invert"](torch.zeros(3, 4, 4, dtype=torch.uint8), 0.5) == 255)
    assert torch.equal(OPS["invert"](img, 0.1), 255 - img)


def test_autocontrast_stretches_to_full_range() -> None:
    img = torch.full((3, 4, 4), 100, dtype=torch.uint8)
    img[:, 0, 0] = 150
    out = OPS["autocontrast"](img, 0.0)
    # torchvision truncates 254.99… to 254 when casting back to uint8.
    assert out.min() == 0 and out.max() >= 254


@pytest.mark.parametrize("u", [0.0, 0.5, 0.999])
def test_brightness_never_brightens(u: float) -> None:
    img = _rand_img(2)
    out = OPS["brightness"](img, u)
    assert torch.all(out <= img)
    assert out.float().mean() < img.float().mean()  # factor ≤ 0.95 always darkens a bit


def test_enhance_strength_grows_with_u() -> None:
    img = _rand_img(3)
    for name in ("contrast", "colour", "brightness"):
        d = [(OPS[name](img, u).float() - img.float()).abs().mean() for u in (0.0, 0.5, 0.99)]
        assert d[0] < d[1] < d[2], name


def test_posterize_keeps_top_bits() -> None:
    img = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16).repeat(3, 1, 1)
    assert torch.equal(OPS["posterize"](img, 0.0), img & 0b11111110)  # 7 bits
    assert torch.equal(OPS["posterize"](img, 0.99), img & 0b11110000)  # 4 bits


def test_solarize_threshold_semantics() -> None:
    img = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16).repeat(3, 1, 1)
    assert torch.equal(OPS["solarize"](img, 0.0), img)  # threshold 256: nothing inverted
    out = OPS["solarize"](img, 1.0)  # threshold 1: everything but 0 inverted
    assert out.flatten()[0] == 0 and torch.equal(out.flatten()[1:3], torch.tensor([254, 253]))
    out = OPS["solarize"](img, 0.5)  # threshold 256 − round(127.5) = 128
    assert torch.equal(out[img < 128], img[img < 128])
    assert torch.equal(out[img >= 128], 255 - img[img >= 128])


def test_blur_smooths_and_hue_zero_is_identity() -> None:
    img = torch.zeros(3, 15, 15, dtype=torch.uint8)
    img[:, 7, 7] = 255
    weak, strong = OPS["blur"](img, 0.0), OPS["blur"](img, 0.99)
    assert strong[0, 7, 7] < weak[0, 7, 7] and strong[0, 7, 9] > 0
    assert (OPS["hue"](_rand_img(4), 0.0).int() - _rand_img(4).int()).abs().max() <= 1


def test_hue_sign_changes_direction() -> None:
    red = torch.zeros(3, 4, 4, dtype=torch.uint8)
    red[0] = 200
    plus, minus = OPS["hue"](red, 0.33, 1), OPS["hue"](red, 0.33, -1)
    assert plus[1].float().mean() > plus[2].float().mean()  # red → green side
    assert minus[2].float().mean() > minus[1].float().mean()  # red → blue side


def _batch() -> torch.Tensor:
    return torch.stack([_rand_img(s, 12, 10) for s in range(6)])


def test_strong_view_deterministic_and_pure() -> None:
    weak = _batch()
    before = weak.clone()
    a = strong_view(weak, 2, torch.Generator().manual_seed(7))
    b = strong_view(weak, 2, torch.Generator().manual_seed(7))
    c = strong_view(weak, 2, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(weak, before)
    assert a.dtype == torch.uint8 and a.shape == weak.shape
    assert a.data_ptr() != weak.data_ptr()


def test_strong_view_k0_is_copy() -> None:
    weak = _batch()
    out = strong_view(weak, 0, torch.Generator().manual_seed(0))
    assert torch.equal(out, weak) and out.data_ptr() != weak.data_ptr()


def _replay(weak: torch.Tensor, k: int, seed: int, zero_u: bool) -> torch.Tensor:
    """Reference: redraw the same stream and apply ops at u = 0 (their weakest)."""
    g = torch.Generator().manual_seed(seed)
    b = weak.shape[0]
    ops = torch.randint(len(OP_NAMES), (b, k), generator=g)
    mags = torch.rand((b, k), generator=g, dtype=torch.float64)
    signs = torch.randint(2, (b, k), generator=g) * 2 - 1
    out = []
    for i in range(b):
        img = weak[i]
        for j in range(k):
            u = 0.0 if zero_u else float(mags[i, j])
            img = OPS[OP_NAMES[int(ops[i, j])]](img, u, int(signs[i, j]))
        out.append(img)
    return torch.stack(out)


def test_magnitude_scale_zero_gives_weakest_ops() -> None:
    weak = _batch()
    scale = torch.zeros(weak.shape[0])
    out = strong_view(weak, 3, torch.Generator().manual_seed(5), magnitude_scale=scale)
    assert torch.equal(out, _replay(weak, 3, 5, zero_u=True))
    full = strong_view(weak, 3, torch.Generator().manual_seed(5), magnitude_scale=scale + 1)
    assert torch.equal(full, _replay(weak, 3, 5, zero_u=False))
    assert torch.equal(full, strong_view(weak, 3, torch.Generator().manual_seed(5)))


def test_strong_view_rejects_bad_input() -> None:
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="uint8"):
        strong_view(_batch().float(), 2, g)
    with pytest.raises(ValueError, match="batch size 6"):
        strong_view(_batch(), 2, g, magnitude_scale=torch.ones(5))


@pytest.mark.parametrize("name", [n for n in OP_NAMES if n not in ("blur", "sharpness")])
def test_pointwise_ops_move_no_pixel(name: str) -> None:
    # Two colours in a known layout: if geometry were touched, equal inputs would disagree.
    img = torch.zeros(3, 12, 10, dtype=torch.uint8)
    img[:] = torch.tensor([40, 90, 160], dtype=torch.uint8).view(3, 1, 1)
    img[:, 2:7, 3:9] = torch.tensor([220, 30, 120], dtype=torch.uint8).view(3, 1, 1)
    inside = torch.zeros(12, 10, dtype=torch.bool)
    inside[2:7, 3:9] = True
    out = OPS[name](img, 0.8, 1)
    assert (out[:, inside] == out[:, inside][:, :1]).all()
    assert (out[:, ~inside] == out[:, ~inside][:, :1]).all()


def _marker_image(row: int, col: int, size: int = 32) -> torch.Tensor:
    """A coloured background with one bright marker pixel (far enough from the borders that
    reflect padding in blur/sharpness never sees the marker)."""
    img = torch.empty(3, size, size, dtype=torch.uint8)
    img[:] = torch.tensor([60, 90, 120], dtype=torch.uint8).view(3, 1, 1)
    img[:, row, col] = torch.tensor([250, 240, 230], dtype=torch.uint8)
    return img


def _deviation(out: torch.Tensor) -> torch.Tensor:
    """Per-pixel distance from the (untouched) background value in the top-left corner."""
    return (out.int() - out[:, :1, :1].int()).abs().sum(0)


@pytest.mark.parametrize("name", OP_NAMES)
def test_every_op_keeps_the_marker_in_place_at_any_magnitude(name: str) -> None:
    img = _marker_image(12, 8, size=21)
    for u in (0.0, 0.5, 0.999):
        for sign in (1, -1):
            d = _deviation(OPS[name](img, u, sign))
            if name in ("blur", "sharpness"):  # filters spread it, but the peak stays put
                assert divmod(int(d.argmax()), 21) == (12, 8), (u, sign)
                assert (d == d.max()).sum() == 1, (u, sign)
            else:  # pointwise ops: the marker is the only pixel unlike the background
                assert d.nonzero().tolist() == [[12, 8]], (u, sign)


def test_strong_view_keeps_markers_in_place() -> None:
    # Whatever ops are drawn, the deviation from the background stays point-symmetric about the
    # marker (pointwise maps and symmetric kernels), so its centroid is the marker; a flip,
    # crop or shift would move it. Ops such as equalize→solarize may erase the marker, so
    # only images where it survives are checked, and most must.
    positions = [(13, 14), (18, 13), (15, 18), (16, 16)]
    batch = torch.stack([_marker_image(r, c) for r, c in positions])
    grid = torch.stack(torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")).double()
    checked = 0
    for seed in range(5):
        for k in (2, 3):
            out = strong_view(batch, k, torch.Generator().manual_seed(seed))
            for img, pos in zip(out, positions, strict=True):
                d = _deviation(img).double()
                if d.sum() == 0:
                    continue
                centroid = (grid * d).flatten(1).sum(1) / d.sum()
                assert torch.allclose(centroid, torch.tensor(pos).double(), atol=0.25), seed
                checked += 1
    assert checked >= 30
