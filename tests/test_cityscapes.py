"""Cityscapes: archives → trainId masks → the generic datasets; ids; credential handling.

Everything runs offline on a Cityscapes-shaped miniature (8x12 images); the download tests
replace requests' transport (HTTPAdapter.send) with a fake site, so the real requests session
and the real cityscapesscripts downloader run on top of it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from imas.config import AugConfig
from imas.data import DataError
from imas.data.catalogue import CITYSCAPES_LAYOUT
from imas.data.datasets import LabeledDataset, UnlabeledDataset, ValDataset
from pipeline.acquire.cityscapes import (
    NUM_CLASSES,
    PACKAGES,
    DownloadError,
    create_train_ids,
    download_packages,
    extract_packages,
    id_from_published,
    list_ids,
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
def root(tmp_path, archives) -> Path:
    extract_packages(archives, tmp_path / "cityscapes")
    return tmp_path / "cityscapes"


def _mask(root: Path, i: str) -> np.ndarray:
    img = Image.open(CITYSCAPES_LAYOUT.mask_path(root, i))
    assert img.mode == "L"
    return np.asarray(img)


def test_train_ids_exact(root) -> None:
    assert create_train_ids(root) == 3
    got = _mask(root, TRAIN_A)
    assert (got[0, 0], got[2, 0], got[3, 0], got[7, 0]) == (255, 255, 13, 0)  # 0, 1, 26, 7
    want = np.vectorize(lambda i: OFFICIAL.get(int(i), 255), otypes=[np.uint8])(_label_ids())
    assert np.array_equal(got, want)
    assert set(np.unique(got).tolist()) == set(range(19)) | {255}
    assert np.array_equal(_mask(root, TRAIN_B), _expected_polygons())
    assert np.array_equal(_mask(root, VAL), np.full((H, W), 13, np.uint8))
    assert not CITYSCAPES_LAYOUT.mask_path(root, TEST).exists()
    # Idempotent: nothing is rewritten; a re-extraction keeps the derived masks.
    out = CITYSCAPES_LAYOUT.mask_path(root, TRAIN_A)
    before = out.stat().st_mtime_ns
    assert create_train_ids(root) == 0
    assert out.stat().st_mtime_ns == before
    out.unlink()
    assert create_train_ids(root) == 1 and np.array_equal(_mask(root, TRAIN_A), want)
    assert not list(root.rglob("*.tmp"))


def test_datasets_load_cityscapes(root) -> None:
    create_train_ids(root)
    assert list_ids(root, "train") == [TRAIN_A, TRAIN_B]
    assert list_ids(root, "val") == [VAL]
    img, mask, name = ValDataset(root, [VAL], NUM_CLASSES, layout=CITYSCAPES_LAYOUT)[0]
    assert name == VAL and img.shape == (3, H, W) and mask.dtype == torch.int64
    assert torch.equal(img, torch.from_numpy(_rgb(2)).permute(2, 0, 1))
    assert torch.equal(mask, torch.full((H, W), 13))
    lab = LabeledDataset(root, [TRAIN_A, TRAIN_B], NUM_CLASSES, None, layout=CITYSCAPES_LAYOUT)
    assert torch.equal(lab[1][1], torch.from_numpy(_expected_polygons()).long())
    aug = AugConfig(crop=8, scale=(1.0, 1.0), hflip=False, strong_ops=2)
    lab_aug = LabeledDataset(root, [TRAIN_B], NUM_CLASSES, aug, layout=CITYSCAPES_LAYOUT)
    crop_img, crop_mask = lab_aug[0]
    assert crop_img.shape == (3, 8, 8) and set(crop_mask.unique().tolist()) <= {0, 1, 13, 255}
    unl = UnlabeledDataset(root, [TRAIN_A, TRAIN_B, VAL], aug, layout=CITYSCAPES_LAYOUT)
    assert unl[2].shape == (3, 8, 8)
    # A missing trainId mask is caught when the dataset is built, with its full path.
    CITYSCAPES_LAYOUT.mask_path(root, TRAIN_B).unlink()
    with pytest.raises(DataError) as e:
        ValDataset(root, [TRAIN_B], NUM_CLASSES, layout=CITYSCAPES_LAYOUT)
    path = root / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelTrainIds.png"
    assert str(e.value) == f"{path}: listed id {TRAIN_B!r} has no file"


def test_bad_annotations_name_the_file(root) -> None:
    a = root / f"gtFine/{TRAIN_A}_gtFine_labelIds.png"
    a.write_bytes(a.read_bytes()[:40])
    with pytest.raises(DataError, match=rf"{a}: unreadable label image"):
        create_train_ids(root)
    a.unlink()
    b = root / f"gtFine/{TRAIN_B}_gtFine_polygons.json"
    b.write_text(json.dumps({**_polygons(), "objects": [{"label": "dragon", "polygon": []}]}))
    with pytest.raises(DataError, match=rf"{b}: cannot convert polygons.*dragon"):
        create_train_ids(root)
    b.write_text("{not json")
    with pytest.raises(DataError, match=rf"{b}: cannot convert polygons \(JSONDecodeError"):
        create_train_ids(root)
    b.unlink()
    rgb = root / f"gtFine/{VAL}_gtFine_labelIds.png"
    rgb.write_bytes(_png(_rgb(0)))
    with pytest.raises(DataError, match=rf"{rgb}: .*mode RGB"):
        create_train_ids(root)


def test_published_ids_round_trip() -> None:
    line = "leftImg8bit/train/hamburg/hamburg_000000_080169_leftImg8bit.png"
    i = id_from_published(f"  {line}\n")
    assert i == "train/hamburg/hamburg_000000_080169"
    assert CITYSCAPES_LAYOUT.image_path(Path(), i).as_posix() == line
    assert id_from_published("leftImg8bit/val/munster/munster_000173_000019_leftImg8bit.png") == (
        "val/munster/munster_000173_000019"
    )
    for bad in (
        "train/hamburg/hamburg_000000_080169",  # already an id
        "gtFine/train/hamburg/hamburg_000000_080169_gtFine_labelTrainIds.png",
        "leftImg8bit/train/hamburg/bremen_000000_080169_leftImg8bit.png",  # city mismatch
        "leftImg8bit/train/hamburg/hamburg_000000_080169.png",
        "leftImg8bit/extra/hamburg/hamburg_000000_080169_leftImg8bit.png",
        "leftImg8bit/train/hamburg/hamburg_000000_080169_leftImg8bit.png gtFine/x.png",
    ):
        with pytest.raises(DataError, match="is not a Cityscapes image path") as e:
            id_from_published(bad)
        assert repr(bad) in str(e.value)


def test_list_ids_errors(tmp_path, root) -> None:
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'val'\), got 'test'"):
        list_ids(root, "test")
    with pytest.raises(DataError, match=rf"{tmp_path}/leftImg8bit/val: Cityscapes images not"):
        list_ids(tmp_path, "val")
    stray = root / "leftImg8bit/val/frankfurt/copy_leftImg8bit.png"
    stray.write_bytes(b"")
    with pytest.raises(DataError, match=r"frankfurt/copy_leftImg8bit\.png' is not a Cityscapes"):
        list_ids(root, "val")


# --- download: a fake site under the real requests session and cityscapesscripts downloader

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


def test_download_logs_in_and_stores_nothing(site, tmp_path, archives, capsys, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    dest = tmp_path / "dl"
    env = {"CITYSCAPES_USERNAME": USER, "CITYSCAPES_PASSWORD": PASSWORD}
    got = download_packages(dest, env=env)
    assert got == [dest / n for n in PACKAGES]
    assert [p.read_bytes() for p in got] == [p.read_bytes() for p in archives]
    posts = [entry for entry in site.log if entry[0] == "POST"]
    assert len(posts) == 1 and parse_qs(posts[0][3])["password"] == [PASSWORD]
    assert site.log[1][0] == "POST"  # logged in before asking for anything else
    assert {entry[4] for entry in site.log} == {60}  # the library's requests time out too
    assert not any("Range" in entry[2] for entry in site.log)
    assert sorted(f.name for f in dest.iterdir()) == sorted(PACKAGES)  # no .partial left
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # progress=False silences the library
    _assert_no_secrets(tmp_path, out.out, out.err, caplog.text)
    # Complete packages are not fetched again; no credentials needed for that.
    n = len(site.log)
    assert download_packages(dest, env={}) == got and len(site.log) == n
    # The downloaded archives are the real thing for the rest of the chain.
    extract_packages(got, tmp_path / "root")
    assert create_train_ids(tmp_path / "root") == 3


def test_download_resumes_and_rejects_a_bad_checksum(site, tmp_path, archives, capsys) -> None:
    dest = tmp_path / "dl"
    (dest / ".partial").mkdir(parents=True)
    data = archives[0].read_bytes()
    (dest / ".partial" / PACKAGES[0]).write_bytes(data[:100])
    site.md5[PACKAGES[1]] = "0" * 32
    env = {"CITYSCAPES_USERNAME": USER, "CITYSCAPES_PASSWORD": PASSWORD}
    with pytest.raises(DownloadError) as e:
        download_packages(dest, env=env, progress=True)
    assert str(e.value).startswith(f"{PACKAGES[1]}: Cityscapes download failed (MD5")
    assert (dest / PACKAGES[0]).read_bytes() == data
    ranges = [entry[2].get("Range") for entry in site.log if "file-handling" in entry[1]]
    assert ranges == ["bytes=100-", None]
    assert not (dest / PACKAGES[1]).exists() and not (dest / ".partial" / PACKAGES[1]).exists()
    out = capsys.readouterr()
    assert "Resuming previous download" in out.out  # progress=True lets the library talk
    _assert_no_secrets(tmp_path, out.out, out.err, str(e.value), repr(e.value.__cause__))


def test_login_failures_keep_credentials_secret(site, tmp_path, monkeypatch, capsys) -> None:
    dest = tmp_path / "dl"
    monkeypatch.delenv("CITYSCAPES_USERNAME", raising=False)
    monkeypatch.setenv("CITYSCAPES_PASSWORD", PASSWORD)
    with pytest.raises(DownloadError) as e:
        download_packages(dest)  # the default env is os.environ
    msg = str(e.value)
    assert "set CITYSCAPES_USERNAME and CITYSCAPES_PASSWORD (missing: CITYSCAPES_USERNAME)" in msg
    assert "nothing is stored" in msg and site.log == []
    assert isinstance(e.value, DataError)

    with pytest.raises(DownloadError, match=r"login refused \(HTTP 200\)") as e:
        download_packages(dest, env={"CITYSCAPES_USERNAME": USER, "CITYSCAPES_PASSWORD": "no"})
    assert not (dest / PACKAGES[0]).exists()

    def broken(_self, request, **kw):  # a transport error that quotes the login form
        if request.method == "GET":
            return site.send(request, **kw)
        raise requests.ConnectionError(f"reset while sending {request.body}")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", broken)
    env = {"CITYSCAPES_USERNAME": USER, "CITYSCAPES_PASSWORD": PASSWORD}
    with pytest.raises(DownloadError, match=r"login failed: ConnectionError") as e2:
        download_packages(dest, env=env)
    assert "username=***&password=***&submit=Login" in str(e2.value)
    assert e2.value.__cause__ is None and e2.value.__suppress_context__
    out = capsys.readouterr()
    _assert_no_secrets(tmp_path, str(e.value), str(e2.value), out.out, out.err)
