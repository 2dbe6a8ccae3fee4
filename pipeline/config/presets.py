"""`imas preset NAME`: switch params.yaml to one of the paper's GPU settings (SPEC §7).

A preset is an overlay (pipeline/config/presets/NAME.yaml) of the keys that differ from the built-in
default; it is merged into params.yaml with its comments kept (ruamel.yaml round trip), the
result is validated like any params file, and only then written, atomically. `dvc exp run -S
labeled=183` afterwards picks the column. Each preset names the published numbers it is
compared with, so the report prints published | ours | Δ.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from ruamel.yaml import YAML

from pipeline.config.merge import MergeError, merge
from pipeline.config.paper_numbers import PRESETS, preset_published
from pipeline.config.params import Params, ParamsError, load_params
from pipeline.control.outputs import atomic_path

PRESET_DIR = Path(__file__).with_name("presets")


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # long mirror URLs stay on their line
    # ruamel writes None as an empty value; params.yaml spells it null.
    yaml.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return yaml


def _replace_eol_comment(base: Any, overlay: Any, key: str) -> None:
    """The overlay's end-of-line comment for `key`, or none: the base's described its old value.

    ruamel keeps the comment lines that follow a key in the same token as its end-of-line
    comment, so only the first line of the token is replaced.
    """
    old = base.ca.items.get(key, [None] * 4)[2]
    new = overlay.ca.items.get(key, [None] * 4)[2]
    text = new.value.split("\n", 1)[0].strip() if new is not None else ""
    if old is None:
        if text:
            base.yaml_add_eol_comment(text, key)
        return
    _, newline, rest = old.value.partition("\n")
    old.value = (f"  {text}" if text else "") + newline + rest


def render_preset(params_text: str, name: str) -> str:
    """params.yaml text with preset `name` applied; raises ParamsError on an unknown name."""
    if name not in PRESETS:
        raise ParamsError(f"unknown preset {name!r} (have: {', '.join(PRESETS)})")
    yaml = _yaml()
    base = yaml.load(params_text)
    overlay = yaml.load((PRESET_DIR / f"{name}.yaml").read_text())
    try:
        merge(base, overlay, strict=True, on_change=_replace_eol_comment)
    except MergeError as err:
        raise ParamsError(f"preset key {err.path} is not in params.yaml") from None
    out = io.StringIO()
    yaml.dump(base, out)
    return out.getvalue()


def apply_preset(params_file: Path, name: str) -> None:
    """Rewrite `params_file` as preset `name`; validated first, so a bad result writes nothing."""
    text = render_preset(params_file.read_text(), name)
    with atomic_path(params_file) as tmp:
        tmp.write_text(text)
        load_params(tmp)


def _listing() -> str:
    lines = []
    for name in PRESETS:
        entry = preset_published(name)
        counts = sorted(entry.miou["imas"])
        imas = " / ".join(f"{entry.miou['imas'][c]}" for c in counts)
        lines.append(f"{name:<22} {entry.title}\n{'':<22} labeled {counts}; iMAS {imas}")
    return "\n".join(lines)


def command(
    name: Annotated[str | None, typer.Argument(help="preset to apply (see --list)")] = None,
    params_file: Annotated[Path, typer.Option("--params", help="params file to rewrite")] = Path(
        "params.yaml"
    ),
    list_presets: Annotated[bool, typer.Option("--list", help="list the presets")] = False,
) -> None:
    """Switch params.yaml to a paper setting; `dvc exp run -S labeled=N` then picks the column."""
    if list_presets or name is None:
        typer.echo(_listing())
        return
    try:
        apply_preset(params_file, name)
    except (ParamsError, OSError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"{params_file}: preset {name} applied ({preset_published(name).title})")


def preset_params(name: str, base: Path) -> Params:
    """The validated Params of preset `name` over the params file `base` (for tests and tools)."""
    text = render_preset(base.read_text(), name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(text)
        return load_params(path)
