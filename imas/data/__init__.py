"""Datasets, splits and transforms for VOC-layout segmentation data.

`DataError` lives here (not in a submodule) so every data module can raise it without importing
the others; it is a ValueError so callers that only know "bad input" still catch it.
"""

from __future__ import annotations


class DataError(ValueError):
    """A data file is missing, unreadable or inconsistent; the message names the file."""


__all__ = ["DataError"]
