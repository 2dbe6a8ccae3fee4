"""The offline plots page: its template loads only local scripts, the fetcher keeps only verified
scripts, and (with chromium and the fetched scripts) DVC's page renders with no network."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from dvc_render import render_html
from dvc_render.vega import VegaRenderer
from typer.testing import CliRunner

from pipeline.reporting.plot_assets import (
    ASSETS,
    PAGE_TEMPLATE,
    VENDOR,
    Asset,
    AssetError,
    fetch,
    missing,
    sha512_integrity,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = b"window.fakeLib = function () { return 42; };\n"


class Sources(HTMLParser):
    """Every URL the page would load by itself: script sources, stylesheets, images, frames."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.other: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.scripts.append(values["src"] or "")
        for key in ("href", "src"):
            if tag in {"link", "img", "iframe"} and values.get(key):
                self.other.append(values[key] or "")


def sources(html: str) -> Sources:
    parser = Sources()
    parser.feed(html)
    return parser


def is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("//")


def test_template_loads_each_recorded_script_from_vendor_in_order() -> None:
    template = PAGE_TEMPLATE.read_text()
    # DVC replaces this placeholder with its CDN script tags; the page must not offer it.
    assert "{scripts}" not in template
    assert "{plot_divs}" in template
    found = sources(template)
    assert found.scripts == [f"{VENDOR}/{asset.filename}" for asset in ASSETS]
    assert "://" not in template


def test_page_dvc_renders_from_the_template_loads_nothing_remote(tmp_path: Path) -> None:
    rows = [{"epoch": str(i), "miou": str(20 + i), "rev": "workspace"} for i in range(3)]
    renderer = VegaRenderer(rows, "history.csv", x="epoch", y="miou")
    page = tmp_path / "index.html"
    render_html([renderer], page, html_template=PAGE_TEMPLATE)
    html = page.read_text()
    assert "vegaEmbed(" in html  # the plot is there...
    found = sources(html)
    assert found.scripts and all(is_local(src) for src in found.scripts + found.other)
    assert "cdn.jsdelivr" not in html  # ...but none of DVC's CDN tags


def tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def registry(tmp_path: Path) -> tuple[str, Path, Asset]:
    """A registry folder served by file:// URLs with one package, and the asset it records."""
    data = tarball({"package/build/fake-lib.min.js": SCRIPT, "package/README.md": b"docs"})
    path = tmp_path / "registry" / "fake-lib" / "-" / "fake-lib-1.2.3.tgz"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    asset = Asset(
        package="fake-lib",
        version="1.2.3",
        member="package/build/fake-lib.min.js",
        integrity=sha512_integrity(data),
        sha256=hashlib.sha256(SCRIPT).hexdigest(),
    )
    return (tmp_path / "registry").as_uri(), path, asset


def test_fetch_writes_the_verified_script_once(
    registry: tuple[str, Path, Asset], tmp_path: Path
) -> None:
    url, tgz, asset = registry
    out = tmp_path / "vendor"
    assert fetch(out, [asset], registry=url) == [out / "fake-lib-1.2.3.min.js"]
    assert (out / "fake-lib-1.2.3.min.js").read_bytes() == SCRIPT
    assert (out / "fake-lib-1.2.3.min.js").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in out.iterdir()] == ["fake-lib-1.2.3.min.js"]  # no temp file left
    # A verified copy is kept: with the registry gone, nothing needs downloading.
    tgz.unlink()
    assert missing(out, [asset]) == []
    assert fetch(out, [asset], registry=url) == []


def test_truncated_download_fails_naming_the_file_and_leaves_nothing(
    registry: tuple[str, Path, Asset], tmp_path: Path
) -> None:
    url, tgz, asset = registry
    tgz.write_bytes(tgz.read_bytes()[:-20])
    out = tmp_path / "vendor"
    out.mkdir()
    (out / asset.filename).write_bytes(b"a damaged earlier copy")
    with pytest.raises(AssetError, match=r"fake-lib-1\.2\.3\.min\.js: checksum mismatch") as err:
        fetch(out, [asset], registry=url)
    assert "fake-lib-1.2.3.tgz" in str(err.value)
    # Neither the damaged copy nor any part of the new one: the page cannot load a bad script.
    assert list(out.iterdir()) == []


def test_script_differing_from_its_recorded_sha256_is_not_written(
    registry: tuple[str, Path, Asset], tmp_path: Path
) -> None:
    url, _, asset = registry
    wrong = dataclasses.replace(asset, sha256=hashlib.sha256(b"other").hexdigest())
    out = tmp_path / "vendor"
    with pytest.raises(AssetError, match=r"fake-lib-1\.2\.3\.min\.js: sha256 of package/build"):
        fetch(out, [wrong], registry=url)
    assert not out.exists() or list(out.iterdir()) == []


def test_missing_tarball_fails_naming_the_file_and_url(tmp_path: Path) -> None:
    asset = Asset("fake-lib", "9.9.9", "package/x.js", "sha512-AAAA", "0" * 64)
    url = (tmp_path / "empty-registry").as_uri()
    with pytest.raises(AssetError, match=r"fake-lib-9\.9\.9\.min\.js: could not download") as err:
        fetch(tmp_path / "vendor", [asset], registry=url)
    assert f"{url}/fake-lib/-/fake-lib-9.9.9.tgz" in str(err.value)
    assert not (tmp_path / "vendor").exists() or list((tmp_path / "vendor").iterdir()) == []


class CutOff(BaseHTTPRequestHandler):
    """Announces a whole tarball but closes the connection after half of it."""

    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body[: len(self.body) // 2])
        self.close_connection = True

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


def test_interrupted_http_download_fails_naming_the_file_and_leaves_nothing(
    registry: tuple[str, Path, Asset], tmp_path: Path
) -> None:
    _, tgz, asset = registry
    CutOff.body = tgz.read_bytes()
    server = HTTPServer(("127.0.0.1", 0), CutOff)
    thread = threading.Thread(target=server.handle_request, daemon=True)  # one request only
    thread.start()
    out = tmp_path / "vendor"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(AssetError, match=r"fake-lib-1\.2\.3\.min\.js: could not download"):
            fetch(out, [asset], registry=url, timeout=10)
    finally:
        thread.join(timeout=10)
        server.server_close()
    assert not out.exists() or list(out.iterdir()) == []


def test_command_reports_a_failed_download_as_an_error(tmp_path: Path) -> None:
    from pipeline.cli import app

    out = tmp_path / "vendor"
    result = CliRunner().invoke(
        app, ["plots-assets", "--out", str(out), "--registry", (tmp_path / "none").as_uri()]
    )
    assert result.exit_code == 2
    assert f"error: {ASSETS[0].filename}: could not download" in result.output


def test_top_level_plots_name_existing_files_and_columns() -> None:
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    curves = [next(iter(p.values())) for p in plots if isinstance(p, dict)]
    assert curves
    for props in curves:
        assert props["x"] == "epoch"
        for path, fields in props["y"].items():
            with (ROOT / path).open() as fh:
                header = next(csv.reader(fh))
            assert "epoch" in header
            for field in [fields] if isinstance(fields, str) else fields:
                assert field in header, f"{path} has no column {field!r}"
    images = [p for p in plots if isinstance(p, str)]
    assert images == ["reports/figures"] and list((ROOT / "reports/figures").glob("*.png"))


def browser() -> str | None:
    return next(
        (b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
    )


def dump_dom(binary: str, page: Path, profile: Path) -> str:
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={profile}",
        # Every http(s) request fails, so the page can only render from local files.
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        # Chromium's helper processes share its session: none may outlive the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, err[-2000:]
    return out


def test_dvc_plots_page_renders_offline_in_chromium(tmp_path: Path) -> None:
    binary = browser()
    if binary is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    vendor = ROOT / "reports" / "plots" / VENDOR
    if missing(vendor):
        pytest.skip(f"the vega scripts are not in {vendor}: run `make plots-assets`")

    repo = tmp_path / "repo"
    repo.mkdir()
    epochs = [(0, 20.5), (1, 23.0), (2, 24.25), (3, 26.0)]
    (repo / "history.csv").write_text("epoch,miou\n" + "".join(f"{e},{m}\n" for e, m in epochs))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc"]
    show = ["plots", "show", "history.csv", "-x", "epoch", "-y", "miou"]
    for args in (
        ["init", "--no-scm", "-q"],
        [*show, "--html-template", str(PAGE_TEMPLATE), "--out", "page"],
    ):
        proc = subprocess.run([*dvc, *args], cwd=repo, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    page = repo / "page" / "index.html"
    shutil.copytree(vendor, page.parent / VENDOR)
    assert all(is_local(src) for src in sources(page.read_text()).scripts)

    dom = dump_dom(binary, page, tmp_path / "profile")
    assert 'id="missing-scripts"' not in dom
    assert len(re.findall(r'<svg[^>]*class="marks"', dom)) == 1
    lines = re.findall(r'<g class="mark-line role-mark[^"]*"[^>]*>(.*?)</g>', dom, re.S)
    paths = [d for group in lines for d in re.findall(r'<path[^>]* d="([^"]+)"', group)]
    # The raw-data line joins every row: a move and one segment per further epoch.
    assert max(d.count("L") for d in paths) >= len(epochs) - 1, paths
