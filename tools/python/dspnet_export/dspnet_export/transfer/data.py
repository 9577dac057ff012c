"""Datasets of the transfer tool: where a split's files are, loading a split (YOLO box labels, a
COCO instances JSON or PNG category-id masks), class lists and class maps, and the images
themselves (loading, flipping, resizing).

Layouts (``--coco DIR``): COCO128 (``images/{train,val}2017``,
``object_detection/labels/{train,val}2017`` + ``object_detection/config.yaml``,
``semantic_segmentation/masks/{train,val}2017`` + ``semantic_segmentation/config.yaml``) or COCO
(``{train,val}2017/``, ``annotations/instances_{train,val}2017.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import UsageError

#: Label of pixels excluded from the loss and the metrics (category ids outside the class list,
#: and batch padding).
IGNORE = 255

SPLITS = ("train", "val")


@dataclass
class Sample:
    """One image of a split: boxes ``[N, 4]`` float32 (x1, y1, x2, y2 in pixels of the original
    image), contiguous labels ``[N]`` int64 in ``1..K``, and for segmentation either a PNG mask
    path or COCO annotations to rasterise."""

    image: Path
    image_id: int
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    iscrowd: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    mask: Optional[Path] = None
    anns: Optional[list] = None


@dataclass
class Split:
    """The samples of one split (sorted by file name), its class list and its source (paths and
    format, as recorded)."""

    samples: List[Sample]
    #: category ids in contiguous order: ``category_ids[i]`` has label ``i + 1``
    category_ids: List[int]
    source: Dict[str, str]


@dataclass(frozen=True)
class SplitFiles:
    """One split's files as the options name them (``None``: not given): the images folder and
    one of a COCO instances JSON, a YOLO labels folder (detect) or a PNG masks folder (segment)."""

    images: Optional[Path] = None
    annotations: Optional[Path] = None
    labels: Optional[Path] = None
    masks: Optional[Path] = None

    def annotated(self) -> bool:
        """Whether any kind of annotation is given."""
        return any(p is not None for p in (self.annotations, self.labels, self.masks))


@dataclass(frozen=True)
class DataSpec:
    """The dataset a run reads: ``task`` (``detect``/``segment``), both splits' files, the class
    list for YOLO labels / PNG masks, and the image caps (the first N by file name)."""

    task: str
    train: SplitFiles
    val: SplitFiles
    classes: Optional[Path] = None
    max_train_images: Optional[int] = None
    max_val_images: Optional[int] = None


def must_exist(path: Path, option: str, what: str) -> Path:
    """``path``, or :class:`UsageError` naming ``option`` when it does not exist."""
    if not path.exists():
        raise UsageError(f"{option} {path}: no such {what}; check the path")
    return path


def in_dataset_dir(spec: DataSpec, root: Path) -> DataSpec:
    """``spec`` with what it leaves unset taken from the dataset folder ``root`` (``--coco``):
    the COCO layout when ``root/annotations/instances_train2017.json`` exists, else COCO128's.
    A split given any annotation option keeps it."""
    root = must_exist(root, "--coco", "folder")
    coco_layout = (root / "annotations" / "instances_train2017.json").is_file()
    files = {}
    for split in SPLITS:
        tag = f"{split}2017"
        f = getattr(spec, split)
        given = f.annotated()
        if coco_layout:
            if f.images is None:
                f = replace(f, images=root / tag)
            if not given:
                f = replace(f, annotations=root / "annotations" / f"instances_{tag}.json")
        else:
            if f.images is None:
                f = replace(f, images=root / "images" / tag)
            if not given and spec.task == "detect":
                f = replace(f, labels=root / "object_detection" / "labels" / tag)
            if not given and spec.task == "segment":
                f = replace(f, masks=root / "semantic_segmentation" / "masks" / tag)
        files[split] = f
    classes = spec.classes
    if classes is None and not coco_layout:
        sub = "object_detection" if spec.task == "detect" else "semantic_segmentation"
        classes = root / sub / "config.yaml"
    return replace(spec, classes=classes, **files)


def _image_size(path: Path) -> Tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size  # (width, height)


def _find_image(images_dir: Path, stem: str) -> Optional[Path]:
    for ext in (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG"):
        p = images_dir / (stem + ext)
        if p.is_file():
            return p
    return None


def _image_id(stem: str, fallback: int) -> int:
    return int(stem) if stem.isdigit() else fallback


def _read_yaml_ids(path: Path, keys: Sequence[str]) -> Dict[int, str]:
    import yaml

    try:
        with open(path, "r", encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"--classes {path}: cannot read it ({e}); pass a YAML with 'names:' or 'classes:' or a COCO JSON")
    for k in keys:
        if isinstance(doc, dict) and isinstance(doc.get(k), dict):
            return {int(i): str(n) for i, n in doc[k].items()}
        if isinstance(doc, dict) and isinstance(doc.get(k), list):
            return {i: str(n) for i, n in enumerate(doc[k])}
    raise UsageError(f"--classes {path}: no {' or '.join(repr(k) for k in keys)} mapping of id -> name; pass the dataset's config.yaml")


def read_class_ids(path: Path) -> List[int]:
    """Category ids (ascending) of a class-list file: a YAML ``names:``/``classes:`` mapping
    (id 0 named ``unlabeled``/``background`` is left out: it is the background class) or a COCO
    JSON's ``categories``."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--classes {path}: no such file; pass the dataset's config.yaml or a COCO annotation JSON")
    if path.suffix.lower() == ".json":
        with open(path, "r", encoding="utf-8") as f:
            cats = json.load(f).get("categories")
        if not cats:
            raise UsageError(f"--classes {path}: no 'categories' list; pass a COCO annotation JSON")
        return sorted(int(c["id"]) for c in cats)
    names = _read_yaml_ids(path, ("classes", "names"))
    return sorted(i for i, n in names.items() if not (i == 0 and n.lower() in ("unlabeled", "background")))


def load_yolo_split(images_dir: Path, labels_dir: Path, category_ids: List[int]) -> Split:
    """Images with a YOLO label file (``class cx cy w h`` per line, normalised to [0, 1]);
    ``class`` is a 0-based index into ``category_ids`` (label = class + 1)."""
    samples = []
    k = len(category_ids)
    index = {c: i for i, c in enumerate(category_ids)}
    for n, txt in enumerate(sorted(labels_dir.glob("*.txt"))):
        img = _find_image(images_dir, txt.stem)
        if img is None:
            continue
        w, h = _image_size(img)
        rows = [line.split() for line in txt.read_text().splitlines() if line.strip()]
        boxes, labels = [], []
        for r in rows:
            if len(r) != 5:
                raise UsageError(f"{txt}: line {' '.join(r)!r} is not 'class cx cy w h'; pass YOLO box labels")
            c, cx, cy, bw, bh = int(r[0]), *map(float, r[1:])
            if c not in index:
                raise UsageError(f"{txt}: class {c} is outside the {k} classes of the class list; pass the matching --classes")
            x1, y1 = (cx - bw / 2) * w, (cy - bh / 2) * h
            x2, y2 = (cx + bw / 2) * w, (cy + bh / 2) * h
            x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            boxes.append([x1, y1, x2, y2])
            labels.append(index[c] + 1)
        samples.append(Sample(img, _image_id(txt.stem, n), w, h,
                              np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
                              np.zeros(len(labels), np.int64)))
    return Split(samples, category_ids, {"images": str(images_dir), "labels": str(labels_dir), "format": "yolo"})


def load_coco_split(images_dir: Path, ann_file: Path, keep_anns: bool) -> Split:
    """Images of a COCO instances JSON with their boxes (``bbox`` x, y, w, h -> x1, y1, x2, y2;
    categories in ascending id order -> labels 1..K); ``keep_anns`` keeps the annotations for
    mask rasterisation."""
    try:
        with open(ann_file, "r", encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"{ann_file}: cannot read a COCO JSON ({e}); pass instances_<split>.json")
    if not all(k in doc for k in ("images", "annotations", "categories")):
        raise UsageError(f"{ann_file}: not a COCO instances file (needs images, annotations, categories)")
    cat_ids = sorted(int(c["id"]) for c in doc["categories"])
    index = {c: i + 1 for i, c in enumerate(cat_ids)}
    by_image: Dict[int, list] = {}
    for a in doc["annotations"]:
        by_image.setdefault(int(a["image_id"]), []).append(a)
    samples = []
    for im in sorted(doc["images"], key=lambda im: im["file_name"]):
        path = images_dir / im["file_name"]
        if not path.is_file():
            continue
        anns = by_image.get(int(im["id"]), [])
        boxes, labels, crowd = [], [], []
        for a in anns:
            x, y, bw, bh = a["bbox"]
            if bw < 1 or bh < 1 or int(a["category_id"]) not in index:
                continue
            boxes.append([x, y, x + bw, y + bh])
            labels.append(index[int(a["category_id"])])
            crowd.append(int(a.get("iscrowd", 0)))
        samples.append(Sample(path, int(im["id"]), int(im["width"]), int(im["height"]),
                              np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
                              np.asarray(crowd, np.int64), anns=anns if keep_anns else None))
    return Split(samples, cat_ids, {"images": str(images_dir), "annotations": str(ann_file), "format": "coco"})


def load_mask_split(images_dir: Path, masks_dir: Path, category_ids: List[int]) -> Split:
    """Images with a PNG mask of category ids (``masks_dir/<image stem>.png``)."""
    samples = []
    for n, png in enumerate(sorted(masks_dir.glob("*.png"))):
        img = _find_image(images_dir, png.stem)
        if img is None:
            continue
        w, h = _image_size(img)
        samples.append(Sample(img, _image_id(png.stem, n), w, h, mask=png))
    return Split(samples, category_ids, {"images": str(images_dir), "masks": str(masks_dir), "format": "png-masks"})


def load_splits(spec: DataSpec) -> Tuple[Split, Split]:
    """The train and val splits ``spec`` names (after :func:`in_dataset_dir` for ``--coco``):
    capped at ``max_{split}_images``, train images without a box dropped for ``detect``.

    Raises :class:`UsageError` naming the option to fix for a missing or unreadable input, an
    empty split or splits with different class lists."""
    splits = []
    for split in SPLITS:
        f: SplitFiles = getattr(spec, split)
        if f.images is None:
            raise UsageError(f"--{split}-images is needed (or --coco DIR)")
        images = must_exist(f.images, f"--{split}-images", "folder")
        if f.annotations is not None:
            ann = must_exist(f.annotations, f"--{split}-annotations", "file")
            s = load_coco_split(images, ann, spec.task == "segment")
        elif spec.task == "detect" and f.labels is not None:
            if spec.classes is None:
                raise UsageError("--classes FILE is needed with YOLO labels (the dataset's config.yaml)")
            labels = must_exist(f.labels, f"--{split}-labels", "folder")
            s = load_yolo_split(images, labels, read_class_ids(spec.classes))
        elif spec.task == "segment" and f.masks is not None:
            if spec.classes is None:
                raise UsageError("--classes FILE is needed with PNG masks (the dataset's config.yaml)")
            masks = must_exist(f.masks, f"--{split}-masks", "folder")
            s = load_mask_split(images, masks, read_class_ids(spec.classes))
        else:
            need = "--{0}-annotations or --{0}-labels" if spec.task == "detect" else "--{0}-annotations or --{0}-masks"
            raise UsageError(f"{need.format(split)} is needed (or --coco DIR)")
        cap = getattr(spec, f"max_{split}_images")
        if cap is not None:
            if cap < 1:
                raise UsageError(f"--max-{split}-images {cap}: pass at least 1")
            s.samples = s.samples[:cap]
        if split == "train" and spec.task == "detect":
            s.samples = [x for x in s.samples if len(x.boxes) > 0]
        if not s.samples:
            raise UsageError(f"--{split}-images {images}: no image with annotations found; check the {split} paths")
        splits.append(s)
    if splits[0].category_ids != splits[1].category_ids:
        raise UsageError("the train and val annotations list different categories; pass matching splits")
    return splits[0], splits[1]


def class_lut(category_ids: Sequence[int], unlabeled: str = "background") -> np.ndarray:
    """Look-up table ``[256]`` uint8 from a mask's category id to the class index: id 0
    (unlabeled) -> 0 (background) or :data:`IGNORE` when ``unlabeled == "ignore"``;
    ``category_ids[i]`` -> ``i + 1``; any other id -> :data:`IGNORE`."""
    ids = list(category_ids)
    if len(ids) + 1 >= IGNORE:
        raise UsageError(f"{len(ids)} categories do not fit a uint8 class map with ignore label {IGNORE}")
    lut = np.full(256, IGNORE, np.uint8)
    lut[0] = 0 if unlabeled == "background" else IGNORE
    for i, c in enumerate(ids):
        if not 0 < c < 256:
            raise UsageError(f"category id {c} cannot appear in a uint8 mask")
        lut[c] = i + 1
    return lut


def mask_to_class_map(mask: np.ndarray, category_ids: Sequence[int], unlabeled: str = "background") -> np.ndarray:
    """A mask of category ids ``[H, W]`` uint8 (0 = unlabeled) -> class map ``[H, W]`` int64 in
    ``0..K`` (0 = background) with :data:`IGNORE` for ids outside ``category_ids``."""
    if mask.dtype != np.uint8:
        raise UsageError(f"mask of dtype {mask.dtype}: category-id masks are uint8 PNGs")
    return class_lut(category_ids, unlabeled)[mask].astype(np.int64)


def coco_class_map(sample: Sample, category_ids: Sequence[int]) -> np.ndarray:
    """Class map ``[H, W]`` int64 rasterised from a sample's COCO annotations (polygons or RLE,
    pycocotools): background 0, larger instances painted first so smaller ones stay visible;
    crowd regions -> :data:`IGNORE`."""
    from pycocotools import mask as mask_utils

    index = {c: i + 1 for i, c in enumerate(category_ids)}
    out = np.zeros((sample.height, sample.width), np.int64)
    for a in sorted(sample.anns or [], key=lambda a: -float(a.get("area", 0.0))):
        seg = a.get("segmentation")
        if not seg or int(a["category_id"]) not in index:
            continue
        if isinstance(seg, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, sample.height, sample.width))
        elif isinstance(seg.get("counts"), list):
            rle = mask_utils.frPyObjects(seg, sample.height, sample.width)
        else:
            rle = seg
        m = mask_utils.decode(rle).astype(bool)
        out[m] = IGNORE if a.get("iscrowd", 0) else index[int(a["category_id"])]
    return out


def load_class_map(sample: Sample, category_ids: Sequence[int], unlabeled: str) -> np.ndarray:
    """A sample's class map ``[H, W]`` int64 in ``0..K`` or :data:`IGNORE`: from its PNG mask
    (:func:`mask_to_class_map`) or rasterised from its COCO annotations (:func:`coco_class_map`)."""
    from PIL import Image

    if sample.mask is not None:
        with Image.open(sample.mask) as im:
            m = np.asarray(im)
        if m.ndim != 2:
            raise UsageError(f"{sample.mask}: a {m.shape} array; masks are single-channel category-id PNGs")
        return mask_to_class_map(m, category_ids, unlabeled)
    return coco_class_map(sample, category_ids)


def load_image(path: Path):
    """``[3, H, W]`` float32 in [0, 1] (RGB)."""
    import torch
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def detection_pair(s: Sample, flip: bool):
    """A sample's image ``[3, H, W]`` float32 in [0, 1] and its torchvision detection target
    (``boxes`` ``[N, 4]`` float32 x1, y1, x2, y2 in pixels, ``labels`` ``[N]`` int64), both
    mirrored left-right when ``flip``."""
    import torch

    img = load_image(s.image)
    boxes = torch.from_numpy(s.boxes.copy())
    if flip:
        img = img.flip(-1)
        boxes = torch.stack([s.width - boxes[:, 2], boxes[:, 1], s.width - boxes[:, 0], boxes[:, 3]], dim=1) if len(boxes) else boxes
    return img, {"boxes": boxes.reshape(-1, 4), "labels": torch.from_numpy(s.labels.copy())}


def resize_pair(img, target, short: int, max_size: int):
    """Resizes ``img`` ``[3, H, W]`` (bilinear, antialiased) and ``target`` ``[H, W]`` (nearest;
    ``None`` passes through) so the shorter side is ``short`` and the longer at most
    ``max_size`` pixels."""
    import torch.nn.functional as F

    h, w = img.shape[-2:]
    scale = min(short / min(h, w), max_size / max(h, w))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    img = F.interpolate(img[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]
    if target is not None:
        target = F.interpolate(target[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
    return img, target
