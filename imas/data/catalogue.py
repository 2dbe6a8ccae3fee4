"""What is known about each dataset before any file is read, in one torch-free place: class
names, where images and masks lie under a prepared root, the ignore label, the pool sizes and
the label counts the iMAS authors published split lists for.

Acquisition (pipeline/acquire/) writes roots that match these facts; the datasets
(imas/data/datasets.py) and the params validation read them; nothing else restates them.
"""

from __future__ import annotations

from imas.data import DataError
from imas.data.layout import Layout

# The mask value no loss, metric or pseudo-label counts: VOC's object borders, padding, and
# pixels below the confidence threshold.
IGNORE_INDEX = 255

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
# Cityscapes' 19 evaluated classes in trainId order (cityscapesScripts' labels.py).
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
# Fashion-MNIST's labels 0..9, the garment scenes' classes 1..10 after background.
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
    "ankle boot",
)  # fmt: skip
GARMENT_CLASSES: tuple[str, ...] = ("background", *FASHION_MNIST_CLASSES)

VOC_LAYOUT = Layout("JPEGImages/{id}.jpg", "SegmentationClass/{id}.png")
# VOC training masks: the 10,582-image augmented set (SBD + VOC) U2PL and iMAS train on.
VOC_AUG_LAYOUT = Layout("JPEGImages/{id}.jpg", "SegmentationClassAug/{id}.png")
CITYSCAPES_LAYOUT = Layout(
    "leftImg8bit/{id}_leftImg8bit.png", "gtFine/{id}_gtFine_labelTrainIds.png"
)
# A custom dataset after the download stage prepared it (pipeline/acquire/custom.py): every
# image re-encoded as an RGB PNG, every mask as an index PNG, whatever the folder held.
CUSTOM_LAYOUT = Layout("images/{id}.png", "masks/{id}.png")

# Images per list of the published datasets: VOC's train_aug (SBD + VOC train), its fine train
# set (the classic labels' pool) and val; Cityscapes' fine train and val.
POOL_SIZES: dict[str, dict[str, int]] = {
    "voc": {"train_aug": 10_582, "train": 1_464, "val": 1_449},
    "cityscapes": {"train": 2_975, "val": 500},
}

# Label counts with a published split list. VOC "classic" draws the labels from the 1,464 fine
# images, "blended" from all of train_aug; the lists' files are named "pascal".
PUBLISHED_COUNTS: dict[tuple[str, str], tuple[int, ...]] = {
    ("pascal", "classic"): (92, 183, 366, 732, 1464),
    ("pascal", "blended"): (662, 1323, 2646, 5291),
    ("cityscapes", "classic"): (186, 372, 744, 1488),
}


def layout_for(dataset: str) -> Layout:
    """Where a dataset's images and masks lie under its prepared root."""
    if dataset == "cityscapes":
        return CITYSCAPES_LAYOUT
    if dataset == "custom":
        return CUSTOM_LAYOUT
    return VOC_AUG_LAYOUT if dataset == "voc" else VOC_LAYOUT


def published_counts(dataset: str, family: str = "classic") -> list[int]:
    """Labeled counts with a published list, smallest first (Cityscapes has only "classic")."""
    try:
        return list(PUBLISHED_COUNTS[(dataset, family)])
    except KeyError:
        known = ", ".join(f"{d}/{f}" for d, f in PUBLISHED_COUNTS)
        raise DataError(
            f"no published {dataset} lists of family {family!r} (known: {known})"
        ) from None
