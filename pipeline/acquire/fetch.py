"""Checksummed, resumable downloads and archive extraction that cannot write outside its target.

Shared by every dataset that has to be fetched (VOC, SBD, Cityscapes, the published split
lists). Failures raise `DataError` naming the file or archive, and leave no half-finished
output behind: a download only appears under its final name after its checksum matched, and
an archive's tree only appears once it was extracted completely.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from imas.data import DataError

_CHUNK = 1 << 20


def file_digest(path: Path | str, algo: str) -> str:
    """Hex digest of a file with hashlib's `algo` ("md5", "sha256", ...), read in chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _mismatch(path: Path, sums: dict[str, str]) -> str | None:
    """None when every expected digest matches, else a message with expected and actual."""
    for algo, want in sums.items():
        got = file_digest(path, algo)
        if got != want.lower():
            return f"{algo} mismatch: expected {want.lower()}, got {got}"
    return None


class _Incomplete(Exception):
    """The transfer stopped early; the .part file is kept so the next attempt can resume."""


def _fetch(url: str, part: Path, timeout: float, progress: bool, label: str) -> bool:
    """Bring `part` up to the full remote file; True when it appended to an existing part."""
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url)
    if offset and url.lower().startswith(("http://", "https://")):
        req.add_header("Range", f"bytes={offset}-")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        status = getattr(resp, "status", None)
        # Only a 206 whose range starts where the .part ends can be appended; anything else
        # (200 from a server that ignores Range, file:// URLs) is the whole file again.
        resumed = status == 206 and resp.headers.get("Content-Range", "").startswith(
            f"bytes {offset}-"
        )
        if not resumed:
            offset = 0
        length = resp.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        total = offset + remaining if remaining is not None else None
        got = 0
        with (
            open(part, "ab" if resumed else "wb") as f,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                disable=not progress,
            ) as bar,
        ):
            while chunk := resp.read(_CHUNK):
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
    if remaining is not None and got < remaining:
        raise _Incomplete(f"connection closed after {offset + got} of {total} bytes")
    return resumed


def download(
    urls: Sequence[str],
    dest: Path | str,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    progress: bool = False,
    timeout: float = 60,
) -> Path:
    """Download the first mirror that works to `dest`, verified against md5 and/or sha256.

    Data goes to `dest` + ".part" and is renamed to `dest` only after the checksum matched, so
    `dest` existing means it is complete. An existing .part (an interrupted run) is resumed
    with an HTTP Range request. A `dest` that already has the right checksum is returned
    without any network access; without a checksum an existing `dest` is trusted as is.
    Raises DataError listing every URL and why it failed; a checksum mismatch removes the
    .part (a wrong file must not be resumed later).
    """
    dest = Path(dest)
    if not urls:
        raise ValueError(f"{dest}: no URL to download from")
    sums = {a: s for a, s in (("md5", md5), ("sha256", sha256)) if s}
    if dest.is_file() and (not sums or _mismatch(dest, sums) is None):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    errors: list[str] = []
    for url in urls:
        # A resumed file that fails the checksum may only have a stale prefix: retry the same
        # mirror once from zero before blaming it.
        for _attempt in range(2):
            had_part = part.exists() and part.stat().st_size > 0
            try:
                resumed = _fetch(url, part, timeout, progress, dest.name)
            except urllib.error.HTTPError as e:
                if e.code == 416 and had_part:  # Range beyond the end: the .part may be whole
                    if not sums or _mismatch(part, sums) is None:
                        os.replace(part, dest)
                        return dest
                    part.unlink()
                    continue
                errors.append(f"{url}: HTTP {e.code} {e.reason}")
            except (OSError, http.client.HTTPException, ValueError, _Incomplete) as e:
                errors.append(f"{url}: {type(e).__name__}: {e}")
            else:
                bad = _mismatch(part, sums) if sums else None
                if bad is None:
                    os.replace(part, dest)
                    return dest
                part.unlink()
                if resumed:
                    continue
                errors.append(f"{url}: {bad}")
            break
    raise DataError(f"{dest}: download failed from every mirror:\n  " + "\n  ".join(errors))


# --- extraction -------------------------------------------------------------------------

_DRIVE = re.compile(r"^[A-Za-z]:")


def _bad_name(name: str) -> str | None:
    """Why an archive member name is unsafe (absolute, drive letter, '..'), or None."""
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "has an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "contains '..'"
    return None


def _clean(name: str) -> str:
    """A member name as a relative POSIX path ("./a/b/" -> "a/b"), for comparing names."""
    return PurePosixPath(name).as_posix()


def _tar_members(archive: Path, tar: tarfile.TarFile, probe: Path) -> list[tarfile.TarInfo]:
    """Every member, after checking all of them; DataError on the first unsafe one."""
    members = tar.getmembers()
    links: set[str] = set()
    for m in members:
        why = _bad_name(m.name)
        is_link = m.issym() or m.islnk()
        if (
            why is None
            and is_link
            and (m.linkname.startswith(("/", "\\")) or _DRIVE.match(m.linkname))
        ):
            why = f"links to the absolute path {m.linkname!r}"
        if why is None:
            # Nothing is on disk yet, so the filter's realpath cannot see links made by earlier
            # members; refusing to write through (or over) a link member closes that gap.
            why = _through_link(m.name, links)
        if why is None:
            try:
                tarfile.data_filter(m, str(probe))
            except tarfile.FilterError as e:
                why = f"is unsafe ({type(e).__name__}: {e})"
        if why is not None:
            raise DataError(f"{archive}: member {m.name!r} {why}; nothing was extracted")
        if is_link:
            links.add(_clean(m.name))
    return members


def _through_link(name: str, links: set[str]) -> str | None:
    """Why a member named `name` is unsafe given the link members before it, or None."""
    parts = PurePosixPath(_clean(name)).parts
    for i in range(1, len(parts) + 1):
        if "/".join(parts[:i]) in links:
            return f"writes through the link member {'/'.join(parts[:i])!r}"
    return None


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    links: set[str] = set()
    for info in infos:
        is_link = stat.S_ISLNK(info.external_attr >> 16)
        why = _bad_name(info.filename) or _through_link(info.filename, links)
        if why is None and is_link:
            # zipfile writes a link entry as a small file holding the target; still refuse one
            # that points outside, since another tool (or a later copy) may follow it.
            target = zf.read(info).decode("utf-8", "replace")
            joined = posixpath.normpath(posixpath.join(posixpath.dirname(info.filename), target))
            if _bad_name(target) or joined == ".." or joined.startswith("../"):
                why = f"is a symlink pointing outside the destination ({target!r})"
        if why is not None:
            raise DataError(f"{archive}: member {info.filename!r} {why}; nothing was extracted")
        if is_link:
            links.add(_clean(info.filename))
    return infos


def _merge(src: Path, dst: Path) -> None:
    """Move the tree `src` into `dst`: whole subtrees by one rename where `dst` has none."""
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and not entry.is_symlink() and target.is_dir():
            _merge(entry, target)
        elif entry.is_dir() and not entry.is_symlink() and target.exists():
            raise DataError(f"{target}: exists and is not a directory; cannot extract into it")
        else:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)


def safe_extract(archive: Path | str, dest: Path | str, *, progress: bool = False) -> list[Path]:
    """Extract a .tar, .tgz/.tar.gz or .zip into `dest`; return the extracted paths in order.

    Every member is checked before anything is written: an absolute name, a '..' component,
    a link pointing outside `dest` or a member written through a link raises DataError naming
    the archive and the member. Tar extraction also runs the standard library's "data" filter
    (no device files, no setuid bits, no ownership). The archive is extracted into a temporary
    sibling of `dest` and moved in at the end, so a failure leaves nothing from it behind;
    existing files in `dest` with the same names are replaced, other content is kept.
    """
    archive, dest = Path(archive), Path(dest)
    name = archive.name.lower()
    if not archive.is_file():
        raise DataError(f"{archive}: archive not found")
    dest.mkdir(parents=True, exist_ok=True)
    names: list[str]
    tmp: Path | None = None
    try:
        if name.endswith((".tar", ".tgz", ".tar.gz")):
            with tarfile.open(archive) as tar:
                members = _tar_members(archive, tar, dest)
                tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.extract-"))
                bar: Iterable[tarfile.TarInfo] = tqdm(
                    members, desc=archive.name, unit="file", disable=not progress
                )
                tar.extractall(tmp, members=bar, filter="data")
                names = [_clean(m.name) for m in members]
        elif name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                infos = _zip_members(archive, zf)
                tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.extract-"))
                for info in tqdm(infos, desc=archive.name, unit="file", disable=not progress):
                    zf.extract(info, tmp)
                names = [_clean(i.filename) for i in infos]
        else:
            raise DataError(f"{archive}: unknown archive type (expected .tar, .tgz, .zip)")
        _merge(tmp, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{archive}: corrupt archive ({e})") from e
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return [dest / n for n in names if n != "."]
