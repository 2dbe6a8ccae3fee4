"""Cityscapes as the tests build it: tiny archives in the official packages' layout, and a
fake login site."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pytest
import requests
from PIL import Image

from imas.data.catalogue import CITYSCAPES_LAYOUT
from pipeline.acquire.cityscapes import (
    PACKAGES,
    extract_packages,
)

H, W = 8, 12


TRAIN_A = "train/aachen/aachen_000000_000019"  # annotated by a labelIds PNG


TRAIN_B = "train/aachen/aachen_000001_000019"  # annotated by polygons only


VAL = "val/frankfurt/frankfurt_000000_000294"  # both; the PNG must win


TEST = "test/berlin/berlin_000000_000019"  # test split: not converted by default


# Typed in from the Cityscapes label table (not read from cityscapesscripts), so a wrong
# mapping in the code cannot agree with itself here.
OFFICIAL = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
            25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip


def _label_ids() -> np.ndarray:
    ids = np.full((H, W), 7, np.uint8)  # road
    ids[0:2] = 0  # unlabeled
    ids[2] = 1  # ego vehicle
    ids[3] = [26] * 4 + [24] * 4 + [33] * 4  # car, person, bicycle
    ids[4] = [9] * 6 + [8] * 6  # parking (ignored in training), sidewalk
    ids[5] = [23, 40, 34, 31, 32, 28, 27, 25, 22, 21, 20, 19]  # 40, 34: not in the table
    ids[6, :6] = [11, 12, 13, 17, 18, 29]  # ..., polegroup, caravan (both ignored)
    return ids


def _polygons() -> dict:
    def rect(label: str, x0: int, y0: int, x1: int, y1: int, **extra) -> dict:
        return {"label": label, "polygon": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], **extra}

    objects = [
        rect("road", 0, 4, 11, 7),
        rect("car", 2, 1, 5, 3),
        rect("cargroup", 8, 5, 9, 6),  # a group label is drawn as its class
        rect("license plate", 0, 0, 1, 1),  # id -1: never drawn
        rect("ego vehicle", 9, 6, 11, 7),  # drawn over road and the car group
        rect("sky", 0, 0, 11, 0, deleted=1),
        rect("sidewalk", 10, 0, 11, 1),
    ]
    return {"imgHeight": H, "imgWidth": W, "objects": objects}


def _expected_polygons() -> np.ndarray:
    # PIL fills a rectangle polygon including its edges: x0..x1, y0..y1 inclusive.
    want = np.full((H, W), 255, np.uint8)
    want[4:8, :] = 0
    want[1:4, 2:6] = 13
    want[5:7, 8:10] = 13
    want[6:8, 9:12] = 255
    want[0:2, 10:12] = 1
    return want


def _rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def archives(tmp_path) -> list[Path]:
    """The two official packages in miniature, with the same member names."""
    src = tmp_path / "src"
    src.mkdir()
    gt, left = src / PACKAGES[0], src / PACKAGES[1]
    with zipfile.ZipFile(gt, "w") as z:
        z.writestr("README", "gtFine")
        z.writestr("license.txt", "terms")
        z.writestr(f"gtFine/{TRAIN_A}_gtFine_labelIds.png", _png(_label_ids()))
        z.writestr(f"gtFine/{TRAIN_B}_gtFine_polygons.json", json.dumps(_polygons()))
        z.writestr(f"gtFine/{VAL}_gtFine_labelIds.png", _png(np.full((H, W), 26, np.uint8)))
        z.writestr(f"gtFine/{VAL}_gtFine_polygons.json", json.dumps(_polygons()))
        z.writestr(f"gtFine/{TEST}_gtFine_labelIds.png", _png(np.zeros((H, W), np.uint8)))
    with zipfile.ZipFile(left, "w") as z:
        z.writestr("README", "leftImg8bit")
        z.writestr("license.txt", "terms")
        for seed, i in enumerate((TRAIN_A, TRAIN_B, VAL, TEST)):
            z.writestr(f"leftImg8bit/{i}_leftImg8bit.png", _png(_rgb(seed)))
    return [gt, left]


@pytest.fixture()
def cityscapes_root(tmp_path, archives) -> Path:
    extract_packages(archives, tmp_path / "cityscapes")
    return tmp_path / "cityscapes"


def _mask(root: Path, i: str) -> np.ndarray:
    img = Image.open(CITYSCAPES_LAYOUT.mask_path(root, i))
    assert img.mode == "L"
    return np.asarray(img)


USER, PASSWORD = "alice-cs-user", "s3cr3t-PW-9f1c"


SITE = "https://www.cityscapes-dataset.com"


class FakeSite:
    def __init__(self, packages: dict[str, bytes]) -> None:
        self.packages = packages
        self.md5 = {n: hashlib.md5(d).hexdigest() for n, d in packages.items()}
        self.log: list[tuple[str, str, dict, str, object]] = []

    def send(self, request: requests.PreparedRequest, **kwargs) -> requests.Response:
        body = request.body or ""
        body = body.decode() if isinstance(body, bytes) else body
        self.log.append(
            (request.method, request.url, dict(request.headers), body, kwargs.get("timeout"))
        )
        names = list(self.packages)
        url = request.url
        if url == f"{SITE}/login" and request.method == "GET":
            return _response(request, 200, b"<form>")
        if url == f"{SITE}/login":
            form = parse_qs(body)
            good = form == {"username": [USER], "password": [PASSWORD], "submit": ["Login"]}
            return _response(request, 302 if good else 200)
        if url == f"{SITE}/downloads/?list":
            listing = [
                {"name": n, "packageID": str(k), "size": "1 KB", "thirdparty": "0"}
                for k, n in enumerate(names)
            ]
            return _response(request, 200, json.dumps(listing).encode())
        if url.startswith(f"{SITE}/md5-sum/?packageID="):
            name = names[int(url.rsplit("=", 1)[1])]
            return _response(request, 200, f"{self.md5[name]}  {name}".encode())
        if url.startswith(f"{SITE}/file-handling/?packageID="):
            data = self.packages[names[int(url.rsplit("=", 1)[1])]]
            rng = request.headers.get("Range")
            start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
            return _response(request, 206 if rng else 200, data[start:])
        raise AssertionError(f"unexpected request {request.method} {url}")


def _response(request: requests.PreparedRequest, status: int, body: bytes = b""):
    r = requests.Response()
    r.status_code, r.raw, r.url, r.request, r.reason = (
        status,
        io.BytesIO(body),
        request.url,
        request,
        "x",
    )
    return r


@pytest.fixture()
def site(monkeypatch, tmp_path, archives) -> FakeSite:
    fake = FakeSite({p.name: p.read_bytes() for p in archives})
    monkeypatch.setattr(
        requests.adapters.HTTPAdapter, "send", lambda _self, request, **kw: fake.send(request, **kw)
    )
    # Where cityscapesscripts' own login() would keep a credentials file.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home/.local/share"))
    return fake


def _assert_no_secrets(tmp_path: Path, *texts: str) -> None:
    for text in texts:
        assert USER not in text and PASSWORD not in text
    for f in tmp_path.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert USER.encode() not in data and PASSWORD.encode() not in data, f
    assert not (tmp_path / "home").exists()
