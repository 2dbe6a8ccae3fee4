"""The tiers, and what every test may ask for.

tests/unit/ tests functions on values made in the test; tests/stage/ runs stage commands in
process on tiny projects; tests/system/ runs whole pipelines, subprocesses and servers, and is
marked `slow` here (CI runs every tier; `make test-fast` leaves the system tier out).
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch
from support.params import tiny_params
from support.training import PixelNet

SYSTEM = Path(__file__).parent / "system"
# Fixtures that build a real dataset's archives, for the acquisition and pipeline tests.
pytest_plugins = ["support.cityscapes_data", "support.voc_data"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SYSTEM in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def tiny_raw() -> dict[str, Any]:
    """The repository's params.yaml shrunk so that a training stage takes a second or two."""
    return tiny_params()


@pytest.fixture
def pixel_net() -> PixelNet:
    """The test model: a per-pixel classifier with a BatchNorm, milliseconds a step."""
    torch.manual_seed(0)
    return PixelNet()


@pytest.fixture(scope="session")
def published_splits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The iMAS authors' split lists, as their repository publishes them (committed as a test
    fixture, 0.3 MB): the folder holding pascal/ and cityscapes/."""
    out = tmp_path_factory.mktemp("published")
    with tarfile.open(Path(__file__).parent / "data" / "published-splits.tar.gz") as tar:
        tar.extractall(out, filter="data")
    return out / "published-splits"
