"""Cityscapes (fine annotations): download, extract, trainId masks, ids and the file layout.

An id is `<split>/<city>/<city>_<seq>_<frame>` (e.g. `train/aachen/aachen_000000_000019`), so
`CITYSCAPES_LAYOUT` finds both files under the extracted root and the generic dataset classes
of imas.data.datasets load Cityscapes unchanged:
`LabeledDataset(root, ids, NUM_CLASSES, aug, layout=CITYSCAPES_LAYOUT)`.

Downloading needs a cityscapes-dataset.com account. The credentials come from the environment
only and are sent to the site's login form, never written anywhere: cityscapesscripts' own
`login()` reads/offers to store them in a plain-text file under the user's home, so the login
here is a separate, equivalent one and only the authenticated session is handed to its
`download_packages`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import requests
from cityscapesscripts.download import downloader
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import labels
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from PIL import Image
from tqdm import tqdm

from imas.data import DataError
from imas.data.catalogue import CITYSCAPES_CLASSES, IGNORE_INDEX
from imas.data.layout import open_decoded
from pipeline.acquire.fetch import safe_extract

PACKAGES = ("gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip")
NUM_CLASSES = len(CITYSCAPES_CLASSES)
USERNAME_VAR, PASSWORD_VAR = "CITYSCAPES_USERNAME", "CITYSCAPES_PASSWORD"
SPLITS = ("train", "val")

_LOGIN_URL = "https://www.cityscapes-dataset.com/login"
_TIMEOUT = 60  # seconds without a byte before a request fails
_PUBLISHED = re.compile(r"leftImg8bit/((?:train|val|test)/([^/]+)/\2_\d{6}_\d{6})_leftImg8bit\.png")


class DownloadError(DataError):
    """Login or download failed; the message never contains the credentials.

    A DataError like pipeline.acquire.fetch's download failures, so one except clause covers both.
    """


def _credentials(env: Mapping[str, str]) -> tuple[str, str]:
    missing = [v for v in (USERNAME_VAR, PASSWORD_VAR) if not env.get(v)]
    if missing:
        raise DownloadError(
            f"downloading Cityscapes needs an account: set {USERNAME_VAR} and {PASSWORD_VAR} "
            f"(missing: {', '.join(missing)}). They are only sent to the cityscapes-dataset.com "
            "login form; nothing is stored."
        )
    return env[USERNAME_VAR], env[PASSWORD_VAR]


class _Session(requests.Session):
    """A session whose requests time out: the library's downloader sets no timeout, so a
    stalled connection would otherwise hang the pipeline stage forever."""

    def request(self, *args, **kwargs):
        kwargs.setdefault("timeout", _TIMEOUT)
        return super().request(*args, **kwargs)


def _login(username: str, password: str) -> requests.Session:
    """Log in like cityscapesscripts' login() (same URL, form fields and success test).

    Its version prompts, may store the password in a plain-text file and deletes that file on
    failure; this one keeps the credentials in memory for one request.
    """
    session = _Session()
    form = {"username": username, "password": password, "submit": "Login"}
    try:
        r = session.get(_LOGIN_URL, allow_redirects=False)
        r.raise_for_status()
        r = session.post(_LOGIN_URL, data=form, allow_redirects=False)
        r.raise_for_status()
    except requests.RequestException as e:
        # `from None` and a scrubbed message: the exception holds the request, whose body is
        # the form, and a traceback printer or logger might show its chain.
        msg = str(e)
        for secret in (username, password):
            msg = msg.replace(secret, "***")
        raise DownloadError(f"Cityscapes login failed: {type(e).__name__}: {msg}") from None
    # The site answers a good login with a redirect and a bad one with the form again (200).
    if r.status_code != 302:
        raise DownloadError(
            f"Cityscapes login refused (HTTP {r.status_code}): check {USERNAME_VAR} and "
            f"{PASSWORD_VAR}"
        )
    return session


def download_packages(
    dest: Path, *, progress: bool = False, env: Mapping[str, str] = os.environ
) -> list[Path]:
    """Download `PACKAGES` into `dest`, returning their paths in `PACKAGES` order.

    Packages already in `dest` are kept (no login when nothing is missing). A package is
    downloaded into `dest/.partial/` and moved into place only after the library has checked
    its MD5, so `dest/<name>` is always complete; an interrupted download resumes from there.
    """
    dest = Path(dest)
    targets = [dest / name for name in PACKAGES]
    missing = [t for t in targets if not t.is_file()]
    if not missing:
        return targets
    session = _login(*_credentials(env))
    partial = dest / ".partial"
    partial.mkdir(parents=True, exist_ok=True)
    for target in missing:
        part = partial / target.name
        try:
            # The library prints its progress bar and messages unconditionally.
            with contextlib.nullcontext() if progress else _silenced():
                downloader.download_packages(
                    session=session,
                    package_names=[target.name],
                    destination_path=str(partial),
                    resume=part.exists(),
                )
        except Exception as e:
            if "MD5" in str(e):
                part.unlink(missing_ok=True)  # complete but wrong: resuming would keep it wrong
            raise DownloadError(f"{target.name}: Cityscapes download failed ({e})") from e
        os.replace(part, target)
    with contextlib.suppress(OSError):  # keep a leftover (foreign) file, drop an empty dir
        partial.rmdir()
    return targets


@contextlib.contextmanager
def _silenced():
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def extract_packages(archives: Sequence[Path], root: Path, *, progress: bool = False) -> None:
    """Unpack the archives into `root` (they hold `gtFine/...` and `leftImg8bit/...`)."""
    root = Path(root)
    for archive in archives:
        safe_extract(Path(archive), root, progress=progress)
    for sub in ("gtFine", "leftImg8bit"):
        if not (root / sub).is_dir():
            raise DataError(
                f"{root / sub}: not found after extracting {[str(a) for a in archives]}"
            )


def _train_id_lut() -> np.ndarray:
    lut = np.full(256, 255, np.uint8)  # ids the table does not define are ignored, too
    for label in labels:
        if 0 <= label.id < 256 and 0 <= label.trainId < NUM_CLASSES:
            lut[label.id] = label.trainId
    return lut


def _from_label_ids(path: Path, lut: np.ndarray) -> np.ndarray:
    img = open_decoded(path, "label image")
    if img.mode not in ("L", "P"):
        raise DataError(f"{path}: label image must be single-channel 8-bit, got mode {img.mode}")
    return lut[np.asarray(img)]


def _from_polygons(path: Path) -> np.ndarray:
    out = io.StringIO()
    try:
        # The library reports an unknown label by printing and calling sys.exit, and a missing
        # file by printing only; capture both so the error names the file instead.
        with contextlib.redirect_stdout(out):
            if not path.is_file():
                raise FileNotFoundError("not found")
            annotation = Annotation()
            annotation.fromJsonFile(str(path))
            arr = np.asarray(createLabelImage(annotation, "trainIds"))
    except (Exception, SystemExit) as e:
        said = " ".join(out.getvalue().split())
        raise DataError(f"{path}: cannot convert polygons ({type(e).__name__}: {e}) {said}") from e
    present = np.unique(arr)
    bad = present[(present >= NUM_CLASSES) & (present != IGNORE_INDEX)]
    if arr.ndim != 2 or arr.dtype != np.uint8 or bad.size:
        raise DataError(f"{path}: polygons gave a {arr.dtype} {arr.shape} image, values {bad}")
    return arr


def _write_png(arr: np.ndarray, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(arr).save(f, format="PNG")
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_train_ids(root: Path, *, splits: Sequence[str] = SPLITS, progress: bool = False) -> int:
    """Write `gtFine/<split>/<city>/*_gtFine_labelTrainIds.png` for every annotated image.

    The source is `*_gtFine_labelIds.png`, or `*_gtFine_polygons.json` where that is absent,
    mapped with cityscapesscripts' official table: 19 classes 0..18, everything else 255.
    Existing outputs are kept (each is written atomically, so one that exists is complete);
    returns how many were written. Only train and val by default: the test split's published
    annotations are placeholders.
    """
    gt = Path(root) / "gtFine"
    if not gt.is_dir():
        raise DataError(f"{gt}: Cityscapes annotations not found (extract gtFine first)")
    sources: dict[Path, Path] = {}
    for split in splits:
        for kind in ("labelIds.png", "polygons.json"):
            for src in sorted(gt.glob(f"{split}/*/*_gtFine_{kind}")):
                out = src.with_name(src.name[: -len(kind)] + "labelTrainIds.png")
                sources.setdefault(out, src)
    todo = sorted((out, src) for out, src in sources.items() if not out.exists())
    lut = _train_id_lut()
    for out, src in tqdm(todo, desc="Cityscapes trainIds", disable=not progress):
        arr = _from_polygons(src) if src.suffix == ".json" else _from_label_ids(src, lut)
        _write_png(arr, out)
    return len(todo)


def id_from_published(line: str) -> str:
    """`leftImg8bit/train/hamburg/hamburg_000000_080169_leftImg8bit.png` (a line of the
    published U2PL/iMAS split lists) → `train/hamburg/hamburg_000000_080169`."""
    m = _PUBLISHED.fullmatch(line.strip())
    if m is None:
        raise DataError(
            f"{line.strip()!r} is not a Cityscapes image path "
            "(leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png)"
        )
    return m.group(1)


def list_ids(root: Path, split: str) -> list[str]:
    """Ids of all images under `leftImg8bit/<split>/`, sorted."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    base = root / "leftImg8bit" / split
    if not base.is_dir():
        raise DataError(f"{base}: Cityscapes images not found (extract leftImg8bit first)")
    ids = [
        id_from_published(p.relative_to(root).as_posix()) for p in base.glob("*/*_leftImg8bit.png")
    ]
    if not ids:
        raise DataError(f"{base}: no *_leftImg8bit.png images")
    return sorted(ids)
