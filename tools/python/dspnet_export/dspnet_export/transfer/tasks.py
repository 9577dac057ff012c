"""The two tasks end to end: build the model on the exported width, fine-tune it on the train
split (:func:`~.loop.train_loop`, horizontal flips drawn from the seed) and score it on the val
split."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from .data import IGNORE, Sample, Split, detection_pair, load_class_map, load_image, resize_pair
from .errors import UsageError
from .loop import epoch_batches, pad_batch, train_loop
from .metrics import coco_eval_boxes, confusion, seg_metrics
from .models import build_detector, build_segmenter
from .settings import DetectSettings, SegmentSettings


@dataclass(frozen=True)
class TaskResult:
    """What a task reports: ``metrics`` (in [0, 1], ``None`` where undefined), ``counts``,
    the ``headline`` metric's name, the loss statistics of :func:`~.loop.train_loop`, the
    backbone's ``model.json`` and the training and evaluation times in seconds."""

    metrics: Dict[str, Optional[float]]
    counts: Dict[str, int]
    headline: str
    losses: dict
    meta: dict
    train_s: float
    eval_s: float


def run_detect(backbone: Path, random_init: bool, train: Split, val: Split, settings: DetectSettings) -> TaskResult:
    """Faster R-CNN + FPN on the width (:func:`~.models.build_detector`), trained on ``train``
    and scored with COCOeval (box mAP@[.5:.95] headline) on ``val`` at the images' original
    size."""
    import torch

    model, body, meta = build_detector(backbone, random_init, settings)
    rng = random.Random(settings.seed)

    def batches(epoch):
        for b in epoch_batches(train.samples, settings.batch, settings.seed, epoch, True):
            yield [detection_pair(s, rng.random() < 0.5) for s in b]

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
        for b in epoch_batches(val.samples, settings.batch, settings.seed, 0, False):
            outs = model([load_image(s.image) for s in b])
            for s, o in zip(b, outs):
                for box, score, label in zip(o["boxes"].tolist(), o["scores"].tolist(), o["labels"].tolist()):
                    detections.append({"image_id": s.image_id, "category_id": int(label), "score": float(score),
                                       "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    metrics = coco_eval_boxes(val.samples, settings.num_classes, detections)
    counts = {"detections": len(detections), "val_boxes": int(sum(len(s.boxes) for s in val.samples)),
              "train_boxes": int(sum(len(s.boxes) for s in train.samples))}
    return TaskResult(metrics, counts, "map", losses, meta, t1 - t0, time.perf_counter() - t1)


def run_segment(backbone: Path, random_init: bool, train: Split, val: Split, settings: SegmentSettings) -> TaskResult:
    """The FCN-style segmenter on the width (:func:`~.models.build_segmenter`), trained with
    cross-entropy (ignoring :data:`~.data.IGNORE`) on ``train`` resized to ``settings.min_size``
    / ``settings.max_size``, and scored (mIoU headline) on ``val`` with its logits upsampled to
    the masks' original resolution."""
    import torch
    import torch.nn.functional as F

    num_classes = settings.num_classes
    model, body, meta = build_segmenter(backbone, random_init, settings)
    mean = torch.tensor(meta["input"]["mean"]).view(3, 1, 1)
    std = torch.tensor(meta["input"]["std"]).view(3, 1, 1)
    rng = random.Random(settings.seed)

    def prepare(s: Sample, flip: bool):
        img = load_image(s.image)
        target = torch.from_numpy(load_class_map(s, train.category_ids, settings.unlabeled))
        if tuple(target.shape) != tuple(img.shape[-2:]):
            raise UsageError(f"{s.mask or s.image}: mask {tuple(target.shape)} and image {tuple(img.shape[-2:])} differ in size")
        if flip:
            img, target = img.flip(-1), target.flip(-1)
        img, target = resize_pair(img, target, settings.min_size, settings.max_size)
        return (img - mean) / std, target

    def batches(epoch):
        for b in epoch_batches(train.samples, settings.batch, settings.seed, epoch, True):
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
            target = torch.from_numpy(load_class_map(s, val.category_ids, settings.unlabeled))
            x, _ = resize_pair(img, None, settings.min_size, settings.max_size)
            h, w = x.shape[-2:]
            xb, _ = pad_batch([(x - mean) / std], None)
            logits = model(xb)[:, :, :h, :w]
            logits = F.interpolate(logits, size=tuple(target.shape), mode="bilinear", align_corners=False)
            conf += confusion(logits.argmax(1)[0], target, num_classes)
    metrics = seg_metrics(conf)
    counts = {k: metrics.pop(k) for k in ("classes_evaluated", "pixels")}
    return TaskResult(metrics, counts, "miou", losses, meta, t1 - t0, time.perf_counter() - t1)
