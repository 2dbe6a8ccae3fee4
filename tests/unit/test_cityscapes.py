"""Cityscapes: archives → trainId masks → the generic datasets; ids; credential handling.

Everything runs offline on a Cityscapes-shaped miniature (8x12 images); the download tests
replace requests' transport (HTTPAdapter.send) with a fake site, so the real requests session
and the real cityscapesscripts downloader run on top of it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pytest
import requests
import torch
from support.cityscapes_data import (
    OFFICIAL,
    PASSWORD,
    TEST,
    TRAIN_A,
    TRAIN_B,
    USER,
    VAL,
    H,
    W,
    _assert_no_secrets,
    _expected_polygons,
    _label_ids,
    _mask,
    _png,
    _polygons,
    _rgb,
)

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


def test_train_ids_exact(cityscapes_root) -> None:
    assert create_train_ids(cityscapes_root) == 3
    got = _mask(cityscapes_root, TRAIN_A)
    assert (got[0, 0], got[2, 0], got[3, 0], got[7, 0]) == (255, 255, 13, 0)  # 0, 1, 26, 7
    want = np.vectorize(lambda i: OFFICIAL.get(int(i), 255), otypes=[np.uint8])(_label_ids())
    assert np.array_equal(got, want)
    assert set(np.unique(got).tolist()) == set(range(19)) | {255}
    assert np.array_equal(_mask(cityscapes_root, TRAIN_B), _expected_polygons())
    assert np.array_equal(_mask(cityscapes_root, VAL), np.full((H, W), 13, np.uint8))
    assert not CITYSCAPES_LAYOUT.mask_path(cityscapes_root, TEST).exists()
    # Idempotent: nothing is rewritten; a re-extraction keeps the derived masks.
    out = CITYSCAPES_LAYOUT.mask_path(cityscapes_root, TRAIN_A)
    before = out.stat().st_mtime_ns
    assert create_train_ids(cityscapes_root) == 0
    assert out.stat().st_mtime_ns == before
    out.unlink()
    assert create_train_ids(cityscapes_root) == 1 and np.array_equal(
        _mask(cityscapes_root, TRAIN_A), want
    )
    assert not list(cityscapes_root.rglob("*.tmp"))


def test_datasets_load_cityscapes(cityscapes_root) -> None:
    create_train_ids(cityscapes_root)
    assert list_ids(cityscapes_root, "train") == [TRAIN_A, TRAIN_B]
    assert list_ids(cityscapes_root, "val") == [VAL]
    val = ValDataset(cityscapes_root, [VAL], NUM_CLASSES, layout=CITYSCAPES_LAYOUT)
    img, mask, name = val[0]
    assert name == VAL and img.shape == (3, H, W) and mask.dtype == torch.int64
    assert torch.equal(img, torch.from_numpy(_rgb(2)).permute(2, 0, 1))
    assert torch.equal(mask, torch.full((H, W), 13))
    lab = LabeledDataset(
        cityscapes_root, [TRAIN_A, TRAIN_B], NUM_CLASSES, None, layout=CITYSCAPES_LAYOUT
    )
    assert torch.equal(lab[1][1], torch.from_numpy(_expected_polygons()).long())
    aug = AugConfig(crop=8, scale=(1.0, 1.0), hflip=False, strong_ops=2)
    lab_aug = LabeledDataset(cityscapes_root, [TRAIN_B], NUM_CLASSES, aug, layout=CITYSCAPES_LAYOUT)
    crop_img, crop_mask = lab_aug[0]
    assert crop_img.shape == (3, 8, 8) and set(crop_mask.unique().tolist()) <= {0, 1, 13, 255}
    unl = UnlabeledDataset(cityscapes_root, [TRAIN_A, TRAIN_B, VAL], aug, layout=CITYSCAPES_LAYOUT)
    assert unl[2].shape == (3, 8, 8)
    # A missing trainId mask is caught when the dataset is built, with its full path.
    CITYSCAPES_LAYOUT.mask_path(cityscapes_root, TRAIN_B).unlink()
    with pytest.raises(DataError) as e:
        ValDataset(cityscapes_root, [TRAIN_B], NUM_CLASSES, layout=CITYSCAPES_LAYOUT)
    path = cityscapes_root / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelTrainIds.png"
    assert str(e.value) == f"{path}: listed id {TRAIN_B!r} has no file"


def test_bad_annotations_name_the_file(cityscapes_root) -> None:
    a = cityscapes_root / f"gtFine/{TRAIN_A}_gtFine_labelIds.png"
    a.write_bytes(a.read_bytes()[:40])
    with pytest.raises(DataError, match=rf"{a}: unreadable label image"):
        create_train_ids(cityscapes_root)
    a.unlink()
    b = cityscapes_root / f"gtFine/{TRAIN_B}_gtFine_polygons.json"
    b.write_text(json.dumps({**_polygons(), "objects": [{"label": "dragon", "polygon": []}]}))
    with pytest.raises(DataError, match=rf"{b}: cannot convert polygons.*dragon"):
        create_train_ids(cityscapes_root)
    b.write_text("{not json")
    with pytest.raises(DataError, match=rf"{b}: cannot convert polygons \(JSONDecodeError"):
        create_train_ids(cityscapes_root)
    b.unlink()
    rgb = cityscapes_root / f"gtFine/{VAL}_gtFine_labelIds.png"
    rgb.write_bytes(_png(_rgb(0)))
    with pytest.raises(DataError, match=rf"{rgb}: .*mode RGB"):
        create_train_ids(cityscapes_root)


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


def test_list_ids_errors(tmp_path, cityscapes_root) -> None:
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'val'\), got 'test'"):
        list_ids(cityscapes_root, "test")
    with pytest.raises(DataError, match=rf"{tmp_path}/leftImg8bit/val: Cityscapes images not"):
        list_ids(tmp_path, "val")
    stray = cityscapes_root / "leftImg8bit/val/frankfurt/copy_leftImg8bit.png"
    stray.write_bytes(b"")
    with pytest.raises(DataError, match=r"frankfurt/copy_leftImg8bit\.png' is not a Cityscapes"):
        list_ids(cityscapes_root, "val")


# --- download: a fake site under the real requests session and cityscapesscripts downloader


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
    extract_packages(got, tmp_path / "cityscapes_root")
    assert create_train_ids(tmp_path / "cityscapes_root") == 3


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
