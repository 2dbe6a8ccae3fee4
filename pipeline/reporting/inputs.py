"""How every report reads its inputs: one error class for a missing or malformed file, which
names the file, and one JSON reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class ReportInputError(ValueError):
    """A file a report reads is missing or malformed; the message names the file."""


def require(path: Path, stage: str) -> None:
    """Raise ReportInputError unless `path` is a file (`stage` writes it)."""
    if not path.is_file():
        raise ReportInputError(f"{path}: no such file (run the `{stage}` stage first)")


def read_json(path: Path, stage: str) -> dict[str, Any]:
    """The JSON object in `path`, written by `stage`; ReportInputError naming the file if it is
    missing, not JSON or not an object."""
    require(path, stage)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReportInputError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ReportInputError(f"{path}: expected a JSON object")
    return data
