"""Downloads (file:// and loopback HTTP: mirrors, resume, checksums) and safe extraction."""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from imas.data import DataError
from pipeline.acquire.fetch import download, file_digest, safe_extract

PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
SHA = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Server:
    """Serves PAYLOAD at /data.bin; `mode` is "range" (206 on Range), "full" (always 200) or
    "cut" (announces the full length, sends `cut` bytes, closes). Records every Range header."""

    def __init__(self) -> None:
        self.mode, self.cut = "range", 0
        self.ranges: list[str | None] = []
        self.sent = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/data.bin":
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                body, start = PAYLOAD, 0
                if rng and server.mode == "range":
                    start = int(rng.removeprefix("bytes=").rstrip("-"))
                    if start >= len(PAYLOAD):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                out = body[start:] if server.mode != "cut" else body[start : start + server.cut]
                server.sent += len(out)  # before writing: the client may finish first
                self.wfile.write(out)
                if server.mode == "cut":
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)


@pytest.fixture()
def server() -> Iterator[_Server]:
    s = _Server()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture()
def src(tmp_path) -> Path:
    p = tmp_path / "mirror" / "data.bin"
    p.parent.mkdir()
    p.write_bytes(PAYLOAD)
    return p


def test_file_digest(src) -> None:
    assert file_digest(src, "sha256") == SHA and file_digest(src, "md5") == MD5


def test_download_file_url_and_existing_dest(tmp_path, src) -> None:
    dest = tmp_path / "out" / "data.bin"
    assert download([src.as_uri()], dest, md5=MD5, sha256=SHA) == dest
    assert dest.read_bytes() == PAYLOAD and not dest.with_suffix(".bin.part").exists()
    # A verified dest is returned without touching the (now unreachable) mirror.
    assert download(["http://127.0.0.1:9/none"], dest, sha256=SHA) == dest
    # A dest with the wrong content is downloaded again.
    dest.write_bytes(b"stale")
    assert download([src.as_uri()], dest, sha256=SHA).read_bytes() == PAYLOAD


def test_download_resumes_with_range(tmp_path, server) -> None:
    dest = tmp_path / "data.bin"
    part = tmp_path / "data.bin.part"
    part.write_bytes(PAYLOAD[:123_456])
    download([f"{server.url}/data.bin"], dest, sha256=SHA)
    assert server.ranges == ["bytes=123456-"]
    assert server.sent == len(PAYLOAD) - 123_456
    assert dest.read_bytes() == PAYLOAD and not part.exists()


def test_download_restarts_when_server_ignores_range(tmp_path, server) -> None:
    server.mode = "full"
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(b"x" * 5000)  # would corrupt the file if appended to
    download([f"{server.url}/data.bin"], dest, md5=MD5)
    assert server.ranges == ["bytes=5000-"] and server.sent == len(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD


def test_download_stale_part_is_retried_from_zero(tmp_path, server) -> None:
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(b"y" * 1000)  # wrong prefix, server appends to it
    download([f"{server.url}/data.bin"], dest, sha256=SHA)
    assert server.ranges == ["bytes=1000-", None]
    assert dest.read_bytes() == PAYLOAD


def test_download_complete_part_answered_416(tmp_path, server) -> None:
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    download([f"{server.url}/data.bin"], dest, sha256=SHA)
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"] and server.sent == 0
    assert dest.read_bytes() == PAYLOAD


def test_download_cut_connection_keeps_part_for_resume(tmp_path, server) -> None:
    server.mode, server.cut = "cut", 70_000
    dest, part = tmp_path / "data.bin", tmp_path / "data.bin.part"
    with pytest.raises(DataError, match=r"connection closed after 70000 of 300000 bytes"):
        download([f"{server.url}/data.bin"], dest, sha256=SHA)
    assert part.read_bytes() == PAYLOAD[:70_000] and not dest.exists()
    server.mode = "range"
    download([f"{server.url}/data.bin"], dest, sha256=SHA)
    assert server.ranges == [None, "bytes=70000-"] and dest.read_bytes() == PAYLOAD


def test_download_mirror_fallback(tmp_path, server, src) -> None:
    dest = tmp_path / "data.bin"
    download([f"{server.url}/missing.bin", src.as_uri()], dest, sha256=SHA)
    assert dest.read_bytes() == PAYLOAD
    dest.unlink()
    bad = [f"{server.url}/missing.bin", (tmp_path / "nope.bin").as_uri()]
    with pytest.raises(DataError, match=r"every mirror") as e:
        download(bad, dest, sha256=SHA)
    assert f"{server.url}/missing.bin: HTTP 404" in str(e.value)
    assert f"{bad[1]}: " in str(e.value)
    assert not dest.exists() and not (tmp_path / "data.bin.part").exists()


def test_download_checksum_mismatch_removes_part(tmp_path, src) -> None:
    dest = tmp_path / "data.bin"
    wrong = "0" * 64
    with pytest.raises(DataError) as e:
        download([src.as_uri()], dest, sha256=wrong)
    msg = str(e.value)
    assert str(dest) in msg and f"expected {wrong}, got {SHA}" in msg
    assert not dest.exists() and not (tmp_path / "data.bin.part").exists()
    with pytest.raises(DataError, match=rf"md5 mismatch: expected {'f' * 32}, got {MD5}"):
        download([src.as_uri()], dest, sha256=SHA, md5="F" * 32)


# --- extraction -------------------------------------------------------------------------


def _tar(path: Path, entries: list[tuple[str, str, bytes | str]], mode: str = "w") -> Path:
    """entries: (kind, name, data): kind "file" (data bytes), "dir", "sym"/"hard" (data target),
    "chr"/"fifo" (special files)."""
    with tarfile.open(path, mode) as tar:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            types = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE}
            info.type = {**types, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            info.linkname = str(data)
            tar.addfile(info)
    return path


def _zip(path: Path, entries: list[tuple[str, bytes, bool]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, link in entries:
            info = zipfile.ZipInfo(name)
            if link:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, data)
    return path


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


GOOD = [
    ("dir", "top", b""),
    ("file", "top/a.txt", b"alpha"),
    ("file", "./top/sub/b.txt", b"beta"),
    ("sym", "top/link", "sub/b.txt"),
]


@pytest.mark.parametrize("name,mode", [("g.tar", "w"), ("g.tgz", "w:gz"), ("g.tar.gz", "w:gz")])
def test_safe_extract_tar_good(tmp_path, name, mode) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_bytes(b"mine")
    got = safe_extract(_tar(tmp_path / name, GOOD, mode), dest)
    assert got == [dest / "top", dest / "top/a.txt", dest / "top/sub/b.txt", dest / "top/link"]
    assert _tree(dest) == {
        "keep.txt": b"mine",
        "top": None,
        "top/a.txt": b"alpha",
        "top/link": b"beta",
        "top/sub": None,
        "top/sub/b.txt": b"beta",
    }
    assert (dest / "top/link").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "out"])  # no temp dirs


EVIL_TAR = {
    "dotdot": ("file", "top/../../evil.txt", b"x"),
    "absolute": ("file", "/tmp/evil_abs.txt", b"x"),
    "symlink-out": ("sym", "top/esc", "../../outside"),
    "symlink-abs": ("sym", "top/esc", "/etc"),
    "hardlink-out": ("hard", "top/hl", "../outside/secret"),
    "through-link": ("file", "top/link/c.txt", b"x"),
    "dotdot-dir": ("dir", "top/../../evil_dir", b""),
    "symlink-nested-out": ("sym", "top/sub/esc", "../../../outside"),
    "hardlink-abs": ("hard", "top/hl", "/etc/passwd"),
    "hardlink-through-link": ("hard", "top/link/hl", "top/a.txt"),
    "symlink-over-link": ("sym", "top/link", "../../outside"),
    "device": ("chr", "top/dev", ""),
    "fifo": ("fifo", "top/pipe", ""),
}


@pytest.mark.parametrize("case", sorted(EVIL_TAR))
def test_safe_extract_tar_rejects_before_writing(tmp_path, case) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    kind, name, data = EVIL_TAR[case]
    archive = _tar(tmp_path / "evil.tar", [*GOOD, (kind, name, data)])
    dest = tmp_path / "work" / "out"
    with pytest.raises(DataError) as e:
        safe_extract(archive, dest)
    assert f"{archive}: member {name!r}" in str(e.value)
    assert _tree(tmp_path / "work") == {"out": None}  # nothing in dest, no temp sibling
    assert _tree(outside) == {"secret": b"s"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar", "outside", "work"]


def test_safe_extract_zip_good(tmp_path) -> None:
    archive = _zip(
        tmp_path / "g.zip",
        [("d/", b"", False), ("d/a.txt", b"alpha", False), ("d/e/b.txt", b"beta", False)],
    )
    dest = tmp_path / "out"
    assert safe_extract(archive, dest) == [dest / "d", dest / "d/a.txt", dest / "d/e/b.txt"]
    assert _tree(dest) == {"d": None, "d/a.txt": b"alpha", "d/e": None, "d/e/b.txt": b"beta"}


EVIL_ZIP = {
    "dotdot": ("d/../../evil.txt", b"x", False),
    "absolute": ("/tmp/evil_abs.txt", b"x", False),
    "drive": ("C:/evil.txt", b"x", False),
    "backslash": ("d\\..\\..\\evil.txt", b"x", False),
    "symlink-out": ("d/esc", b"../../outside", True),
    "symlink-abs": ("d/esc", b"/etc/passwd", True),
    "dotdot-middle": ("d/x/../../../evil.txt", b"x", False),
    "drive-backslash": ("C:\\evil.txt", b"x", False),
    "symlink-nested-out": ("d/e/esc", b"../../../outside", True),
    "symlink-backslash-out": ("d/esc", b"..\\..\\outside", True),
    "through-symlink": ("d/l/c.txt", b"x", False),
}
# Zip has no hardlinks; its links are symlinks (unix mode bits in external_attr).


@pytest.mark.parametrize("case", sorted(EVIL_ZIP))
def test_safe_extract_zip_rejects_before_writing(tmp_path, case) -> None:
    name, data, link = EVIL_ZIP[case]
    inside_link = ("d/l", b"a.txt", True)  # allowed by itself (see below); not to write through
    entries = [("d/a.txt", b"alpha", False), inside_link, (name, data, link)]
    archive = _zip(tmp_path / "evil.zip", entries)
    dest = tmp_path / "out"
    with pytest.raises(DataError) as e:
        safe_extract(archive, dest)
    assert f"{archive}: member {name!r}" in str(e.value)
    assert _tree(tmp_path) == {"evil.zip": archive.read_bytes(), "out": None}


def test_safe_extract_zip_inside_symlink_allowed(tmp_path) -> None:
    archive = _zip(tmp_path / "l.zip", [("d/a.txt", b"alpha", False), ("d/l", b"a.txt", True)])
    assert safe_extract(archive, tmp_path / "out")[-1] == tmp_path / "out/d/l"


def test_safe_extract_corrupt_and_unknown(tmp_path) -> None:
    good = _tar(tmp_path / "g.tgz", GOOD, "w:gz").read_bytes()
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"cut\.tgz: corrupt archive"):
        safe_extract(cut, tmp_path / "out")
    assert _tree(tmp_path / "out") == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tgz", "g.tgz", "out"]
    (tmp_path / "x.rar").write_bytes(b"")
    with pytest.raises(DataError, match=r"x\.rar: unknown archive type"):
        safe_extract(tmp_path / "x.rar", tmp_path / "out")
    with pytest.raises(DataError, match=r"none\.tar: archive not found"):
        safe_extract(tmp_path / "none.tar", tmp_path / "out")
