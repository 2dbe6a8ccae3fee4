"""The one deep merge of params: an ablation over the `train` section, and a preset over
params.yaml (comments kept). `--set KEY=VALUE` assigns one key, as `dvc exp run -S` does."""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any


class MergeError(KeyError):
    """An overlay names a key its base lacks; `path` is its dotted path."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def merge(
    base: MutableMapping[str, Any],
    overlay: Mapping[str, Any],
    *,
    strict: bool,
    on_change: Callable[[MutableMapping[str, Any], Mapping[str, Any], str], None] | None = None,
    where: str = "",
) -> None:
    """Overlay `overlay` onto `base` in place: a mapping onto a mapping merges key by key,
    anything else replaces. With `strict`, a key `base` lacks raises MergeError (a typo must not
    add a knob nothing reads); without, it is added (validation then names it). `on_change(base,
    overlay, key)` runs after each replaced value (a preset moves its comment along)."""
    for key, value in overlay.items():
        dotted = f"{where}{key}"
        if key not in base:
            if strict:
                raise MergeError(dotted)
            base[key] = value
        elif isinstance(value, Mapping) and isinstance(base[key], Mapping):
            merge(base[key], value, strict=strict, on_change=on_change, where=f"{dotted}.")
        elif base[key] != value:
            base[key] = value
            if on_change is not None:
                on_change(base, overlay, key)
