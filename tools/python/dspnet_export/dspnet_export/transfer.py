"""Detection and segmentation transfer of one exported width (issue 7).

The DSPNet paper (Wang et al., arXiv 2207.06075, Sec. 4.3) fine-tunes its sub-networks as the
backbones of a Faster/Mask R-CNN with FPN on COCO; this module is the same path at any scale:

* ``detect``: a torchvision ``FasterRCNN`` over :class:`~dspnet_export.load.FpnBackbone`
  (layer1..layer4 of the exported timm ResNet into an FPN with a max-pool top level), trained on
  the train split and scored on the val split with pycocotools' ``COCOeval`` (box mAP@[.5:.95],
  mAP@0.5, mAP@0.75, small/medium/large, AR@100).
* ``segment``: semantic segmentation, FCN-style: an FPN over layer2..layer4 (strides 8/16/32 for
  the ImageNet stem) whose three levels are upsampled to stride 8 and summed, then torchvision's
  ``FCNHead`` (conv 3x3, BN, ReLU, dropout, conv 1x1) to ``K + 1`` classes (every COCO category
  of the class list + background = unlabeled pixels) and bilinear upsampling to the input;
  scored by mIoU (mean over classes that occur in the ground truth or the prediction) and pixel
  accuracy, at the masks' original resolution.

Initialisation: ``--backbone DIR`` (a ``dspnet-export`` folder: a DSPNet width or a one-by-one
run's export) loads its weights; ``--random`` builds the SAME architecture (``model.json``, same
timm code) with timm's random initialisation. Everything after the backbone (FPN, heads) is drawn
from the same seed in both cases, and the schedule is identical.

Data: ``--coco DIR``: the layout of ``../shared/data/coco128`` (YOLO box labels, PNG masks of COCO
panoptic category ids) or the standard COCO layout (``train2017/``, ``val2017/``,
``annotations/instances_{train,val}2017.json``); or each split given: ``--train-images DIR
--train-annotations instances_train2017.json --val-images DIR --val-annotations ...`` (boxes and,
for ``segment``, masks rasterised from the instance polygons/RLE with pycocotools), or PNG masks
with ``--train-masks/--val-masks DIR --classes FILE``.

Output: one JSON record (protocol, init, width, metrics, losses, every setting, dataset paths and
counts, package versions) printed to stdout and, with ``--out FILE``, written atomically.
Bad input: one line ``error: ...`` on stderr, exit code 2.

Usage::

    python -m dspnet_export.transfer detect  --backbone export/w0_50 --coco ../shared/data/coco128 --preset cpu --out det.json
    python -m dspnet_export.transfer segment --backbone export/w0_50 --random --coco ../shared/data/coco128 --preset cpu
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import random
import sys
import tempfile
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

#: Label of pixels excluded from the loss and the metrics (category ids outside the class list,
#: and batch padding).
IGNORE = 255

#: Settings per task and preset. ``cpu``: a few minutes per run on 2 cores for COCO128;
#: ``full``: the usual 1x-style schedule for a full COCO-format dataset on GPUs.
PRESETS: Dict[str, Dict[str, Dict[str, object]]] = {
    "detect": {
        "cpu": dict(min_size=224, max_size=320, epochs=2, batch=4, lr=0.02, warmup_steps=10, fpn_channels=128,
                    rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=300,
                    rpn_post_nms_top_n_test=150, box_batch_size_per_image=128),
        "full": dict(min_size=800, max_size=1333, epochs=12, batch=16, lr=0.02, warmup_steps=500, fpn_channels=256,
                     rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=2000, rpn_pre_nms_top_n_test=1000,
                     rpn_post_nms_top_n_test=1000, box_batch_size_per_image=512),
    },
    "segment": {
        "cpu": dict(min_size=224, max_size=320, epochs=4, batch=4, lr=0.02, warmup_steps=10, fpn_channels=128),
        "full": dict(min_size=512, max_size=1024, epochs=30, batch=16, lr=0.02, warmup_steps=500, fpn_channels=256),
    },
}

PROTOCOL = {"detect": "detection", "segment": "segmentation"}


class UsageError(Exception):
    """Bad input: printed as one line ``error: ...``, exit code 2."""


# ---------------------------------------------------------------------------------------------
# data


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
    samples: List[Sample]
    #: category ids in contiguous order: ``category_ids[i]`` has label ``i + 1``
    category_ids: List[int]
    source: Dict[str, str]


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


# ---------------------------------------------------------------------------------------------
# models


def check_backbone(path: Path) -> dict:
    """``model.json`` of an export folder for a 3-channel network.

    Raises :class:`UsageError` (one line naming ``--backbone`` and the fix) for a missing
    folder, a folder without ``model.json``, another format, or a non-RGB network."""
    from .load import read_meta

    d = Path(path)
    if not d.is_dir():
        raise UsageError(f"--backbone {d}: no such folder; pass a dspnet-export output folder (e.g. export/w0_50)")
    try:
        meta = read_meta(d)
    except FileNotFoundError:
        raise UsageError(f"--backbone {d}: model.json missing: not a dspnet-export folder; run dspnet-export RUN --width W --out DIR")
    except ValueError as e:
        raise UsageError(f"--backbone {d}: {e}".replace("\n", " "))
    try:
        chans = int(meta["architecture"]["timm"]["in_chans"])
        mean, std = meta["input"]["mean"], meta["input"]["std"]
        float(meta["width"])
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"--backbone {d}: model.json lacks {e}; re-export with this dspnet version")
    if chans != 3 or len(mean) != 3 or len(std) != 3:
        raise UsageError(f"--backbone {d}: the network takes {chans} input channel(s); COCO photos need a 3-channel (RGB) export")
    return meta


def _backbone_body(args, out_indices: Tuple[int, ...]):
    """The exported width as a timm ``FeatureListNet`` (weights loaded, or random with
    ``--random``) and its ``model.json``."""
    import torch
    from timm.models import FeatureListNet

    from .load import build_model, load_subnet

    d = Path(args.backbone)
    meta = check_backbone(d)
    torch.manual_seed(args.seed)
    if args.random:
        model = build_model(meta)
    else:
        try:
            model = load_subnet(d)
        except (ValueError, RuntimeError, OSError) as e:
            raise UsageError(f"--backbone {d}: cannot load the weights ({str(e).splitlines()[0]}); re-export the width")
    body = FeatureListNet(model, out_indices=out_indices)
    return body, meta


def build_detector(args, num_classes: int, settings: dict):
    """Faster R-CNN with FPN (torchvision) over the exported width; ``num_classes`` counts the
    background."""
    import torch
    from torchvision.models.detection import FasterRCNN

    from .load import FpnBackbone

    body, meta = _backbone_body(args, (1, 2, 3, 4))
    torch.manual_seed(args.seed + 1)  # FPN and heads: the same draw for every initialisation
    backbone = FpnBackbone(body, list(body.feature_info.channels()), settings["fpn_channels"])
    model = FasterRCNN(
        backbone,
        num_classes=num_classes,
        min_size=settings["min_size"],
        max_size=settings["max_size"],
        image_mean=list(meta["input"]["mean"]),
        image_std=list(meta["input"]["std"]),
        rpn_pre_nms_top_n_train=settings["rpn_pre_nms_top_n_train"],
        rpn_post_nms_top_n_train=settings["rpn_post_nms_top_n_train"],
        rpn_pre_nms_top_n_test=settings["rpn_pre_nms_top_n_test"],
        rpn_post_nms_top_n_test=settings["rpn_post_nms_top_n_test"],
        box_batch_size_per_image=settings["box_batch_size_per_image"],
        box_score_thresh=settings["box_score_thresh"],
        box_detections_per_img=100,
    )
    return model, body, meta


def _segmenter_class():
    import torch.nn as nn
    import torch.nn.functional as F
    from torchvision.models.segmentation.fcn import FCNHead
    from torchvision.ops import FeaturePyramidNetwork

    class _FpnSegmenter(nn.Module):
        """FCN-style semantic segmentation on FPN features: layer2..layer4 -> FPN (``c``
        channels) -> the three levels upsampled (bilinear) to layer2's stride and summed ->
        ``FCNHead(c, num_classes)`` -> logits ``[B, num_classes, H, W]`` upsampled to the
        input size."""

        def __init__(self, body: nn.Module, channels: int, num_classes: int):
            super().__init__()
            self.body = body
            self.fpn = FeaturePyramidNetwork(list(body.feature_info.channels()), channels)
            self.head = FCNHead(channels, num_classes)

        def forward(self, x):
            feats = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))
            levels = list(feats.values())
            y = levels[0]
            for f in levels[1:]:
                y = y + F.interpolate(f, size=y.shape[-2:], mode="bilinear", align_corners=False)
            return F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear", align_corners=False)

    return _FpnSegmenter


def build_segmenter(args, num_classes: int, settings: dict):
    import torch

    body, meta = _backbone_body(args, (2, 3, 4))
    torch.manual_seed(args.seed + 1)
    return _segmenter_class()(body, settings["fpn_channels"], num_classes), body, meta


def set_bn_mode(body, frozen: bool) -> None:
    """``frozen``: the backbone's BN layers use their running statistics (eval mode) during
    fine-tuning, as torchvision's detection backbones (FrozenBatchNorm2d) do at small batch
    sizes; their affine parameters still train. Otherwise (the default) BN normalises with batch
    statistics and updates its running statistics, as MoCo (He et al., CVPR 2020, Sec. 4.2)
    fine-tunes self-supervised backbones for detection: a random backbone has no meaningful
    running statistics to freeze."""
    import torch.nn as nn

    if frozen:
        for m in body.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


# ---------------------------------------------------------------------------------------------
# training


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up from ``base / 100`` over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return base * (0.01 + 0.99 * step / max(1, warmup))
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * t))


def train_loop(model, body, batches_fn, settings: dict, loss_fn) -> dict:
    """SGD (momentum 0.9, weight decay ``settings['weight_decay']``), gradient norm clipped to
    10; ``batches_fn(epoch)`` yields batches, ``loss_fn(model, batch)`` returns the scalar loss.
    Returns loss statistics; raises ``FloatingPointError`` on a non-finite loss."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=settings["lr"], momentum=0.9, weight_decay=settings["weight_decay"])
    total = settings["steps"]
    losses: List[float] = []
    step = 0
    model.train()
    set_bn_mode(body, settings["bn"] == "frozen")
    for epoch in range(settings["epochs"]):
        if step >= total:
            break
        for batch in batches_fn(epoch):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, settings["lr"], settings["warmup_steps"])
            loss = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} at step {step}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            losses.append(float(loss.item()))
            step += 1
            if settings.get("verbose"):
                print(f"step {step}/{total} loss {losses[-1]:.4f}", file=sys.stderr, flush=True)
            if step >= total:
                break
    tail = losses[-max(1, len(losses) // 10):] if losses else []
    return {"steps": step, "first": losses[0] if losses else None, "last": losses[-1] if losses else None,
            "mean_last_10pct": float(np.mean(tail)) if tail else None,
            "finite": bool(all(math.isfinite(v) for v in losses)), "history": [round(v, 5) for v in losses]}


def _batches(samples: List[Sample], batch: int, seed: int, epoch: int, shuffle: bool) -> List[List[Sample]]:
    order = list(range(len(samples)))
    if shuffle:
        random.Random(seed * 1000003 + epoch).shuffle(order)
    return [[samples[i] for i in order[j:j + batch]] for j in range(0, len(order), batch)]


# ---------------------------------------------------------------------------------------------
# detection


def _det_target(s: Sample, flip: bool):
    import torch

    img = load_image(s.image)
    boxes = torch.from_numpy(s.boxes.copy())
    if flip:
        img = img.flip(-1)
        boxes = torch.stack([s.width - boxes[:, 2], boxes[:, 1], s.width - boxes[:, 0], boxes[:, 3]], dim=1) if len(boxes) else boxes
    return img, {"boxes": boxes.reshape(-1, 4), "labels": torch.from_numpy(s.labels.copy())}


def coco_eval_boxes(gt: List[Sample], num_classes: int, detections: List[dict]) -> dict:
    """pycocotools ``COCOeval`` (iouType ``bbox``) of ``detections`` (COCO result dicts:
    image_id, category_id = contiguous label, bbox x, y, w, h, score) against ``gt``. Metrics in
    [0, 1]; a metric COCOeval cannot define (no ground truth in that area range) is ``None``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns = [], []
    for s in gt:
        images.append({"id": s.image_id, "width": s.width, "height": s.height})
        for b, l, c in zip(s.boxes, s.labels, s.iscrowd):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": s.image_id, "category_id": int(l),
                         "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h, "iscrowd": int(c)})
    names = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100",
             "mar_small", "mar_medium", "mar_large"]
    categories = [{"id": i} for i in range(1, num_classes)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": anns, "categories": categories}
        coco_gt.createIndex()
        if detections:
            coco_dt = coco_gt.loadRes(detections)
        else:  # loadRes cannot take an empty list: an empty result set scores 0 where defined
            coco_dt = COCO()
            coco_dt.dataset = {"images": images, "annotations": [], "categories": categories}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {n: (float(v) if v >= 0 else None) for n, v in zip(names, ev.stats)}


def run_detect(args, train: Split, val: Split, settings: dict) -> dict:
    import torch

    num_classes = len(train.category_ids) + 1
    model, body, meta = build_detector(args, num_classes, settings)
    rng = random.Random(args.seed)

    def batches(epoch):
        for b in _batches(train.samples, settings["batch"], args.seed, epoch, True):
            yield [_det_target(s, rng.random() < 0.5) for s in b]

    def loss_fn(m, batch):
        images = [x for x, _ in batch]
        targets = [t for _, t in batch]
        return sum(m(images, targets).values())

    t0 = time.perf_counter()
    losses = train_loop(model, body, batches, settings, loss_fn)
    t1 = time.perf_counter()
    model.eval()
    detections = []
    with torch.no_grad():
        for b in _batches(val.samples, settings["batch"], args.seed, 0, False):
            outs = model([load_image(s.image) for s in b])
            for s, o in zip(b, outs):
                for box, score, label in zip(o["boxes"].tolist(), o["scores"].tolist(), o["labels"].tolist()):
                    detections.append({"image_id": s.image_id, "category_id": int(label), "score": float(score),
                                       "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    metrics = coco_eval_boxes(val.samples, num_classes, detections)
    counts = {"detections": len(detections), "val_boxes": int(sum(len(s.boxes) for s in val.samples)),
              "train_boxes": int(sum(len(s.boxes) for s in train.samples))}
    return {"metrics": metrics, "counts": counts, "headline": "map", "losses": losses, "meta": meta,
            "train_s": t1 - t0, "eval_s": time.perf_counter() - t1, "num_classes": num_classes}


# ---------------------------------------------------------------------------------------------
# segmentation


def resize_pair(img, target, short: int, max_size: int):
    """Resizes ``img`` ``[3, H, W]`` (bilinear, antialiased) and ``target`` ``[H, W]`` (nearest)
    so the shorter side is ``short`` and the longer at most ``max_size`` pixels."""
    import torch.nn.functional as F

    h, w = img.shape[-2:]
    scale = min(short / min(h, w), max_size / max(h, w))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    img = F.interpolate(img[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]
    if target is not None:
        target = F.interpolate(target[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
    return img, target


def pad_batch(imgs, targets, multiple: int = 32):
    """Pads to a common size (a multiple of ``multiple``): images with 0, targets with
    :data:`IGNORE`. Returns ``[B, 3, H, W]`` and ``[B, H, W]`` int64."""
    import torch

    h = max(x.shape[-2] for x in imgs)
    w = max(x.shape[-1] for x in imgs)
    h, w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    x = torch.zeros(len(imgs), 3, h, w)
    y = torch.full((len(imgs), h, w), IGNORE, dtype=torch.long)
    for i, img in enumerate(imgs):
        x[i, :, : img.shape[-2], : img.shape[-1]] = img
        if targets is not None:
            y[i, : targets[i].shape[-2], : targets[i].shape[-1]] = targets[i]
    return x, y


def confusion(pred, target, num_classes: int):
    """``[K, K]`` int64 counts (rows: ground truth, columns: prediction) over pixels whose
    target is not :data:`IGNORE`."""
    import torch

    keep = target != IGNORE
    idx = target[keep] * num_classes + pred[keep]
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def seg_metrics(conf) -> dict:
    """mIoU (mean IoU over classes present in the ground truth or the prediction), pixel
    accuracy and mean class accuracy (over classes present in the ground truth), in [0, 1]."""
    conf = conf.double()
    tp = conf.diag()
    gt = conf.sum(1)
    pr = conf.sum(0)
    union = gt + pr - tp
    present = union > 0
    total = conf.sum()
    return {
        "miou": float((tp[present] / union[present]).mean()) if present.any() else None,
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else None,
        "mean_class_accuracy": float((tp[gt > 0] / gt[gt > 0]).mean()) if (gt > 0).any() else None,
        "classes_evaluated": int(present.sum()),
        "pixels": int(total),
    }


def run_segment(args, train: Split, val: Split, settings: dict) -> dict:
    import torch
    import torch.nn.functional as F

    num_classes = len(train.category_ids) + 1
    model, body, meta = build_segmenter(args, num_classes, settings)
    mean = torch.tensor(meta["input"]["mean"]).view(3, 1, 1)
    std = torch.tensor(meta["input"]["std"]).view(3, 1, 1)
    rng = random.Random(args.seed)

    def prepare(s: Sample, flip: bool):
        img = load_image(s.image)
        target = torch.from_numpy(load_class_map(s, train.category_ids, args.unlabeled))
        if tuple(target.shape) != tuple(img.shape[-2:]):
            raise UsageError(f"{s.mask or s.image}: mask {tuple(target.shape)} and image {tuple(img.shape[-2:])} differ in size")
        if flip:
            img, target = img.flip(-1), target.flip(-1)
        img, target = resize_pair(img, target, settings["min_size"], settings["max_size"])
        return (img - mean) / std, target

    def batches(epoch):
        for b in _batches(train.samples, settings["batch"], args.seed, epoch, True):
            pairs = [prepare(s, rng.random() < 0.5) for s in b]
            yield pad_batch([p[0] for p in pairs], [p[1] for p in pairs])

    def loss_fn(m, batch):
        x, y = batch
        return F.cross_entropy(m(x), y, ignore_index=IGNORE)

    t0 = time.perf_counter()
    losses = train_loop(model, body, batches, settings, loss_fn)
    t1 = time.perf_counter()
    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
    with torch.no_grad():
        for s in val.samples:
            img = load_image(s.image)
            target = torch.from_numpy(load_class_map(s, val.category_ids, args.unlabeled))
            x, _ = resize_pair(img, None, settings["min_size"], settings["max_size"])
            h, w = x.shape[-2:]
            xb, _ = pad_batch([(x - mean) / std], None)
            logits = model(xb)[:, :, :h, :w]
            logits = F.interpolate(logits, size=tuple(target.shape), mode="bilinear", align_corners=False)
            conf += confusion(logits.argmax(1)[0], target, num_classes)
    metrics = seg_metrics(conf)
    counts = {k: metrics.pop(k) for k in ("classes_evaluated", "pixels")}
    return {"metrics": metrics, "counts": counts, "headline": "miou", "losses": losses, "meta": meta,
            "train_s": t1 - t0, "eval_s": time.perf_counter() - t1, "num_classes": num_classes}


# ---------------------------------------------------------------------------------------------
# CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m dspnet_export.transfer", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=["detect", "segment"])
    p.add_argument("--backbone", required=True, type=Path,
                   help="dspnet-export folder of one width (model.json + model.safetensors)")
    p.add_argument("--random", action="store_true",
                   help="build --backbone's architecture with random weights instead of loading them")
    p.add_argument("--coco", type=Path,
                   help="dataset folder: COCO128 layout (images/, object_detection/, semantic_segmentation/) or COCO "
                        "layout (train2017/, val2017/, annotations/instances_{train,val}2017.json)")
    for split in ("train", "val"):
        p.add_argument(f"--{split}-images", type=Path, help=f"{split} images folder")
        p.add_argument(f"--{split}-annotations", type=Path, help=f"{split} COCO instances JSON (boxes; masks for segment)")
        p.add_argument(f"--{split}-labels", type=Path, help=f"{split} YOLO box labels folder (detect)")
        p.add_argument(f"--{split}-masks", type=Path, help=f"{split} PNG category-id masks folder (segment)")
    p.add_argument("--classes", type=Path,
                   help="class list for YOLO labels / PNG masks: YAML (names: or classes:) or COCO JSON")
    p.add_argument("--unlabeled", choices=["background", "ignore"], default="background",
                   help="segment: mask id 0 is the background class (default) or left out of loss and metrics")
    p.add_argument("--max-train-images", type=int, help="use the first N train images (sorted by file name)")
    p.add_argument("--max-val-images", type=int, help="use the first N val images (sorted by file name)")
    p.add_argument("--preset", choices=["cpu", "full"], default="cpu")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int, help="stop training after N optimizer steps")
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--min-size", type=int, help="shorter image side in pixels")
    p.add_argument("--max-size", type=int, help="upper bound of the longer side in pixels")
    p.add_argument("--fpn-channels", type=int)
    p.add_argument("--bn", choices=["train", "frozen"], default="train",
                   help="backbone BN during fine-tuning: batch statistics (train, default, as MoCo's detection "
                        "transfer fine-tunes BN) or the running statistics (frozen, torchvision's default for "
                        "ImageNet backbones)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--out", type=Path, help="write the JSON record here (atomically)")
    p.add_argument("--verbose", action="store_true", help="print the loss of every step to stderr")
    return p


def _require(args, name: str):
    v = getattr(args, name)
    if v is None:
        raise UsageError(f"--{name.replace('_', '-')} is needed (or --coco DIR)")
    return v


def _must_exist(path: Path, option: str, what: str) -> Path:
    if not path.exists():
        raise UsageError(f"{option} {path}: no such {what}; check the path")
    return path


def load_splits(args) -> Tuple[Split, Split]:
    """The train and val splits the options name (see the module docstring)."""
    if args.coco is not None:
        root = _must_exist(args.coco, "--coco", "folder")
        coco_layout = (root / "annotations" / "instances_train2017.json").is_file()
        for split in ("train", "val"):
            tag = f"{split}2017"
            given = any(getattr(args, f"{split}_{k}") is not None for k in ("annotations", "labels", "masks"))
            if coco_layout:
                if getattr(args, f"{split}_images") is None:
                    setattr(args, f"{split}_images", root / tag)
                if not given:
                    setattr(args, f"{split}_annotations", root / "annotations" / f"instances_{tag}.json")
                continue
            if getattr(args, f"{split}_images") is None:
                setattr(args, f"{split}_images", root / "images" / tag)
            if not given and args.task == "detect":
                setattr(args, f"{split}_labels", root / "object_detection" / "labels" / tag)
            if not given and args.task == "segment":
                setattr(args, f"{split}_masks", root / "semantic_segmentation" / "masks" / tag)
        if args.classes is None and not coco_layout:
            sub = "object_detection" if args.task == "detect" else "semantic_segmentation"
            args.classes = root / sub / "config.yaml"
    splits = []
    for split in ("train", "val"):
        images = _must_exist(_require(args, f"{split}_images"), f"--{split}-images", "folder")
        ann = getattr(args, f"{split}_annotations")
        labels = getattr(args, f"{split}_labels")
        masks = getattr(args, f"{split}_masks")
        if ann is not None:
            s = load_coco_split(images, _must_exist(ann, f"--{split}-annotations", "file"), args.task == "segment")
        elif args.task == "detect" and labels is not None:
            if args.classes is None:
                raise UsageError("--classes FILE is needed with YOLO labels (the dataset's config.yaml)")
            s = load_yolo_split(images, _must_exist(labels, f"--{split}-labels", "folder"), read_class_ids(args.classes))
        elif args.task == "segment" and masks is not None:
            if args.classes is None:
                raise UsageError("--classes FILE is needed with PNG masks (the dataset's config.yaml)")
            s = load_mask_split(images, _must_exist(masks, f"--{split}-masks", "folder"), read_class_ids(args.classes))
        else:
            need = "--{0}-annotations or --{0}-labels" if args.task == "detect" else "--{0}-annotations or --{0}-masks"
            raise UsageError(f"{need.format(split)} is needed (or --coco DIR)")
        cap = getattr(args, f"max_{split}_images")
        if cap is not None:
            if cap < 1:
                raise UsageError(f"--max-{split}-images {cap}: pass at least 1")
            s.samples = s.samples[:cap]
        if split == "train" and args.task == "detect":
            s.samples = [x for x in s.samples if len(x.boxes) > 0]
        if not s.samples:
            raise UsageError(f"--{split}-images {images}: no image with annotations found; check the {split} paths")
        splits.append(s)
    if splits[0].category_ids != splits[1].category_ids:
        raise UsageError("the train and val annotations list different categories; pass matching splits")
    return splits[0], splits[1]


def resolve_settings(args) -> dict:
    s = dict(PRESETS[args.task][args.preset])
    for k in ("epochs", "batch", "lr", "min_size", "max_size", "fpn_channels"):
        v = getattr(args, k)
        if v is not None:
            if v <= 0:
                raise UsageError(f"--{k.replace('_', '-')} {v}: must be positive")
            s[k] = v
    s["weight_decay"] = args.weight_decay
    s["bn"] = args.bn
    if args.task == "detect":
        s["box_score_thresh"] = 0.001
    s["verbose"] = args.verbose
    return s


def write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` via a temporary file in the same folder, fsync and rename. The
    file gets the permissions of a plainly created one (0666 less the umask, e.g. 0644), not
    ``mkstemp``'s private 0600, like the run's other files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def run(argv: Optional[Sequence[str]] = None) -> dict:
    args = parser().parse_args(argv)
    import torch
    import torchvision
    import timm

    settings = resolve_settings(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out is not None and args.out.is_dir():
        raise UsageError(f"--out {args.out}: is a folder; pass a file path")
    if args.coco is not None:
        _must_exist(args.coco, "--coco", "folder")
    check_backbone(args.backbone)
    train, val = load_splits(args)
    steps_per_epoch = -(-len(train.samples) // settings["batch"])
    settings["steps"] = steps_per_epoch * settings["epochs"]
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise UsageError(f"--max-steps {args.max_steps}: pass at least 1")
        settings["steps"] = min(settings["steps"], args.max_steps)
    settings["warmup_steps"] = min(settings["warmup_steps"], max(0, settings["steps"] // 5))
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = (run_detect if args.task == "detect" else run_segment)(args, train, val, settings)
    meta = result["meta"]
    settings.pop("verbose")
    settings.update(
        preset=args.preset, seed=args.seed, threads=torch.get_num_threads(), optimizer="sgd momentum 0.9",
        schedule="linear warm-up from lr/100, cosine to 0", grad_clip_norm=10.0, augmentation="horizontal flip p=0.5",
        max_steps=args.max_steps, max_train_images=args.max_train_images, max_val_images=args.max_val_images,
        num_classes=result["num_classes"], classes_file=str(args.classes) if args.classes else None,
        train=train.source, val=val.source, train_images=len(train.samples), val_images=len(val.samples),
    )
    if args.task == "detect":
        settings["model"] = "torchvision FasterRCNN, FPN over layer1..4 + max-pool level"
        settings["eval"] = "pycocotools COCOeval bbox"
    else:
        settings["model"] = "FPN over layer2..4 summed at stride 8 + torchvision FCNHead"
        settings["unlabeled"] = args.unlabeled
        settings["eval"] = "confusion matrix at the masks' resolution; mIoU over classes present in ground truth or prediction"
    from importlib.metadata import PackageNotFoundError, version as _version

    try:
        pycoco = _version("pycocotools")
    except PackageNotFoundError:  # only `segment` on PNG masks runs without it
        pycoco = None
    record = {
        "protocol": PROTOCOL[args.task],
        "init": "random" if args.random else "pretrained",
        "width": float(meta["width"]),
        "backbone": str(Path(args.backbone).resolve()),
        "backbone_sha256": meta.get("files", {}).get("model.safetensors", {}).get("sha256"),
        "params": meta.get("params"),
        "flops": meta.get("flops"),
        "headline": result["headline"],
        "metrics": result["metrics"],
        "counts": result["counts"],
        "losses": result["losses"],
        "settings": settings,
        "time_s": {"train": round(result["train_s"], 3), "eval": round(result["eval_s"], 3)},
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
                     "pycocotools": pycoco},
    }
    text = json.dumps(record, indent=1)
    if args.out is not None:
        write_atomic(args.out, text + "\n")
    return record


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        record = run(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        print(f"error: python package {e.name} missing from {sys.prefix}; run bash tools/setup.sh", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # unreadable or corrupt image/mask/annotation files
        print(f"error: {e}; check the dataset files".replace("\n", " "), file=sys.stderr)
        return 2
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
