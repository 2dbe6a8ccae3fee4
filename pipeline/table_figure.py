"""A results table drawn as a PNG, byte-identical for identical rows.

Drawn like the report's figures (pipeline/plots.py: explicit Agg canvas, default style, fixed
size and dpi, no version metadata, atomic write), so that DVC and CI can compare it bytewise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.plots import _figure, _save

_PUBLISHED_TEXT = "#555555"
_RULE = "#999999"
_FONT = 10
# Inches per character of DejaVu Sans at 10 pt (widest digits and capitals average below it).
_CHAR = 0.085
_ROW = 0.32  # inches per table row
_TITLE = 0.5  # inches above the table for the title


@dataclass(frozen=True)
class Row:
    label: str
    cells: list[str]  # one per column
    kind: str = "ours"  # "ours", "gain" or "published": how the row is styled


def table_figure(path: Path | str, columns: Sequence[str], rows: Sequence[Row], title: str) -> None:
    """A header row, then one line per row: our iMAS row bold, published rows in grey italics,
    rules between the groups (ours, gains, published); numbers right-aligned as in the markdown.
    (Cells with open edges draw no fill in matplotlib, hence rules rather than shading.)"""
    for row in rows:
        if len(row.cells) != len(columns):
            raise ValueError(f"row {row.label!r} has {len(row.cells)} cells for {len(columns)}")
    label_w = _CHAR * max(len(r.label) for r in [Row("method", []), *rows]) + 0.3
    cell_w = _CHAR * max(len(t) for t in [*columns, *(c for r in rows for c in r.cells)]) + 0.4
    width = max(label_w + cell_w * len(columns), _CHAR * 1.1 * len(title) + 0.4)
    # A rule under the header, under the last row, and between groups (ours, gains, published).
    ruled = {0, len(rows)} | {i for i in range(1, len(rows)) if rows[i - 1].kind != rows[i].kind}
    height = _ROW * (len(rows) + 1) + _TITLE
    with _figure(width, height) as fig:
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - _TITLE / height))
        ax.axis("off")
        table = ax.table(
            cellText=[[r.label, *r.cells] for r in rows],
            colLabels=["method", *columns],
            colWidths=[label_w / width] + [cell_w / width] * len(columns),
            cellLoc="right",
            colLoc="right",
            bbox=(0.0, 0.0, 1.0, 1.0),
        )
        table.auto_set_font_size(False)
        table.set_fontsize(_FONT)
        for (r, c), cell in table.get_celld().items():
            cell.set_edgecolor(_RULE)
            cell.visible_edges = "B" if r in ruled else ""
            text = cell.get_text()
            if c == 0:
                text.set_horizontalalignment("left")
                cell.PAD = 0.02
            if r == 0:
                text.set_fontweight("bold")
                continue
            row = rows[r - 1]
            if row.kind == "published":
                text.set_color(_PUBLISHED_TEXT)
                text.set_fontstyle("italic")
            elif row.label == "iMAS":
                text.set_fontweight("bold")
        fig.text(0.5, 1.0 - 0.5 * _TITLE / height, title, ha="center", va="center", fontsize=11)
        _save(fig, path)
