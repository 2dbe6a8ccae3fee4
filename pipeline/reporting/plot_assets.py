"""Local copies of the scripts that DVC's vega plots need, so the plots page renders offline.

`dvc plots show` writes a page whose vega plots load vega, vega-lite and vega-embed from a CDN; with
no network they stay blank. `pipeline/reporting/plots_page.html` is a page template that loads them
from `vendor/` next to the page instead, and `imas plots-assets` puts them there: each script is
taken from its package's tarball on the npm registry, at a pinned version, and kept only if the
tarball matches the registry's published sha512 integrity and the script its recorded sha256.

The versions are the newest of the major versions that dvc-render loads from the CDN (vega 5,
vega-lite 5, vega-embed 6), so DVC's vega-lite v5 specs render as on DVC's own page.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import tarfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from pipeline.control.outputs import atomic_path

REGISTRY = "https://registry.npmjs.org"
PAGE_TEMPLATE = Path(__file__).with_name("plots_page.html")
# The template loads the scripts from this folder, relative to the page it becomes.
VENDOR = "vendor"
DEFAULT_OUT = Path("reports/plots") / VENDOR
# The largest tarball is vega's, about 4 MB; a response far beyond that is not the package.
MAX_TARBALL_BYTES = 64 * 2**20


class AssetError(RuntimeError):
    """A script could not be downloaded or did not match its recorded checksum."""


@dataclass(frozen=True)
class Asset:
    """One script: where it lies in which npm tarball, and the checksums it must match."""

    package: str
    version: str
    member: str  # path of the script inside the tarball
    integrity: str  # the tarball's `dist.integrity` as the registry publishes it
    sha256: str  # of the script itself: verifies a copy on disk without its tarball

    @property
    def filename(self) -> str:
        """The file name in `vendor/`; with the version, so a stale copy is never mistaken."""
        return f"{self.package}-{self.version}.min.js"

    @property
    def tarball(self) -> str:
        return f"{self.package}-{self.version}.tgz"

    def url(self, registry: str = REGISTRY) -> str:
        return f"{registry.rstrip('/')}/{self.package}/-/{self.tarball}"


# In load order: vega-lite needs vega, vega-embed needs both.
ASSETS: tuple[Asset, ...] = (
    Asset(
        package="vega",
        version="5.33.1",
        member="package/build/vega.min.js",
        integrity="sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw==",
        sha256="463f3db6a40b20e9747b4ed38f37ed0add508838f9141b1cf8366784b07b30c8",
    ),
    Asset(
        package="vega-lite",
        version="5.23.0",
        member="package/build/vega-lite.min.js",
        integrity="sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
        sha256="58c27358e26f2d319cf62f45bc17a4c8362f08645001df2ec8d341eee4097c7f",
    ),
    Asset(
        package="vega-embed",
        version="6.29.0",
        member="package/build/vega-embed.min.js",
        integrity="sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
        sha256="12d02acfbe3ec59ef9a37dd4822a2e04e2961b5bbb671bbe661d2221715b99da",
    ),
)


def sha512_integrity(data: bytes) -> str:
    """The Subresource Integrity form npm publishes: `sha512-<base64 digest>`."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def is_current(path: Path, asset: Asset) -> bool:
    """Whether `path` holds exactly the script `asset` records."""
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == asset.sha256


def missing(folder: Path, assets: Sequence[Asset] = ASSETS) -> list[Asset]:
    """The assets that `folder` lacks or holds in another version or a damaged copy."""
    return [asset for asset in assets if not is_current(folder / asset.filename, asset)]


def _download(url: str, asset: Asset, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read(MAX_TARBALL_BYTES + 1)
            announced = response.headers.get("Content-Length", "")
    # URLError, HTTPError and timeouts are OSErrors.
    except (OSError, ValueError, http.client.HTTPException) as err:
        raise AssetError(f"{asset.filename}: could not download {url}: {err}") from err
    # A bounded read returns what arrived before the connection closed, without an error.
    if announced.isdigit() and len(data) < int(announced):
        raise AssetError(
            f"{asset.filename}: could not download {url}: the connection closed after "
            f"{len(data)} of {announced} bytes"
        )
    if len(data) > MAX_TARBALL_BYTES:
        raise AssetError(f"{asset.filename}: {url} is larger than {MAX_TARBALL_BYTES} bytes")
    return data


def _script(data: bytes, url: str, asset: Asset) -> bytes:
    found = sha512_integrity(data)
    if found != asset.integrity:
        raise AssetError(
            f"{asset.filename}: checksum mismatch for {url}: expected {asset.integrity}, "
            f"got {found}; nothing was written"
        )
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            # Read in memory: nothing from the archive is ever extracted to disk by its own name.
            member = tar.extractfile(asset.member)
            script = member.read() if member is not None else None
    except (tarfile.TarError, KeyError, OSError) as err:
        raise AssetError(f"{asset.filename}: cannot read {asset.member} from {url}: {err}") from err
    if script is None:
        raise AssetError(f"{asset.filename}: {asset.member} in {url} is not a regular file")
    digest = hashlib.sha256(script).hexdigest()
    if digest != asset.sha256:
        raise AssetError(
            f"{asset.filename}: sha256 of {asset.member} in {url} is {digest}, "
            f"expected {asset.sha256}; nothing was written"
        )
    return script


def fetch(
    folder: Path = DEFAULT_OUT,
    assets: Sequence[Asset] = ASSETS,
    registry: str = REGISTRY,
    timeout: float = 60.0,
) -> list[Path]:
    """Make `folder` hold every asset, downloading only those it lacks; return the ones fetched.

    Raises `AssetError`, naming the file and URL, if a download fails or a checksum differs.
    Then no partial or unverified file is left behind: scripts are checked in memory and only
    then written (atomically), and a damaged copy already there is removed before the download.
    """
    fetched = []
    for asset in missing(folder, assets):
        target = folder / asset.filename
        target.unlink(missing_ok=True)
        url = asset.url(registry)
        script = _script(_download(url, asset, timeout), url, asset)
        with atomic_path(target) as tmp:
            tmp.write_bytes(script)
            # The temporary file is created owner-only; a page served to others must read it.
            tmp.chmod(0o644)
        fetched.append(target)
    return fetched


def command(
    out: Annotated[
        Path, typer.Option(help=f"folder for the scripts: '{VENDOR}/' next to the plots page")
    ] = DEFAULT_OUT,
    registry: Annotated[str, typer.Option(help="npm registry to download from")] = REGISTRY,
) -> None:
    """Download vega, vega-lite and vega-embed (pinned, checksum-verified) for the offline plots
    page: `dvc plots show --html-template pipeline/reporting/plots_page.html --out
    reports/plots`."""
    try:
        fetched = set(fetch(out, registry=registry))
    except AssetError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    for asset in ASSETS:
        path = out / asset.filename
        typer.echo(f"{path}: {'fetched and verified' if path in fetched else 'up to date'}")


if __name__ == "__main__":
    # `python -m pipeline.reporting.plot_assets` is `imas plots-assets` without the seconds that
    # `imas` spends importing torch for the training stages; `make plots` uses it.
    typer.run(command)
