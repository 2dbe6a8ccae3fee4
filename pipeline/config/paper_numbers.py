"""The iMAS paper's published mIoU for its GPU presets (SPEC §7), to print beside our runs.

Only iMAS and SupOnly are published per label count; `None` marks a count the paper gives no
number for. Kept as data, free of torch and plotting, so params validation can import it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedTable:
    """One setting's published numbers (a table of the paper), which a preset is compared with."""

    title: str  # the setting, as the table's caption names it
    miou: dict[str, dict[int, float | None]]  # method → label count → val mIoU (%)
    note: str = ""  # where a number comes from, when not from the paper's tables


PUBLISHED: dict[str, PublishedTable] = {
    "voc_classic": PublishedTable(
        title="PASCAL VOC 2012, classic split (U2PL lists), ResNet-101",
        miou={
            "imas": {92: 68.8, 183: 75.3, 366: 79.1, 732: 80.2, 1464: 82.0},
            "supervised": {92: 45.5, 183: 57.5, 366: 66.6, 732: 70.4, 1464: None},
        },
        note="SupOnly numbers are from the authors' logs; none is published for 1,464 labels.",
    ),
    "voc_blended_r101": PublishedTable(
        title="PASCAL VOC 2012, blended split (CPS lists), ResNet-101",
        miou={
            "imas": {662: 77.2, 1323: 78.4, 2646: 79.3},
            "supervised": {662: 67.4, 1323: 72.1, 2646: 74.7},
        },
    ),
    "voc_blended_r50": PublishedTable(
        title="PASCAL VOC 2012, blended split (CPS lists), ResNet-50",
        miou={
            "imas": {662: 75.9, 1323: 76.7, 2646: 77.1},
            "supervised": {662: 63.8, 1323: 69.0, 2646: 72.5},
        },
    ),
    "cityscapes": PublishedTable(
        title="Cityscapes (U2PL lists), ResNet-50, output stride 16",
        miou={
            "imas": {186: 74.3, 372: 77.4, 744: 78.1, 1488: 79.3},
            "supervised": {186: 64.0, 372: 69.2, 744: 73.0, 1488: 76.4},
        },
    ),
    "cityscapes_os8": PublishedTable(
        title="Cityscapes (U2PL lists), ResNet-50, output stride 8",
        miou={
            "imas": {186: 75.2, 372: 78.0, 744: 78.2, 1488: 80.2},
            "supervised": {186: None, 372: None, 744: None, 1488: None},
        },
        note="The paper gives no SupOnly numbers for output stride 8.",
    ),
}

# `imas preset NAME` (pipeline/config/presets/NAME.yaml) → the published numbers it is compared
# with.
PRESETS: dict[str, str] = {
    "voc_classic_r101": "voc_classic",
    "voc_blended_r101": "voc_blended_r101",
    "voc_blended_r50": "voc_blended_r50",
    "cityscapes_r50_os16": "cityscapes",
    "cityscapes_r50_os8": "cityscapes_os8",
}


def preset_published(name: str) -> PublishedTable:
    """The published numbers preset `name` is compared with."""
    return PUBLISHED[PRESETS[name]]
