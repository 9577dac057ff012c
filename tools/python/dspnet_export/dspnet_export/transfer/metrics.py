"""Scores of the transfer tool: COCO box mAP/AR (pycocotools), the pixel confusion matrix and the
segmentation metrics computed from it."""

from __future__ import annotations

import contextlib
import io
from typing import List

from .data import IGNORE, Sample

#: Names of ``COCOeval.stats`` (bbox), in its order.
COCO_BOX_METRICS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100",
                    "mar_small", "mar_medium", "mar_large")


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
    return {n: (float(v) if v >= 0 else None) for n, v in zip(COCO_BOX_METRICS, ev.stats)}


def confusion(pred, target, num_classes: int):
    """``[K, K]`` int64 counts (rows: ground truth, columns: prediction) of ``pred`` and
    ``target`` (int64 class indices of the same shape) over pixels whose target is not
    :data:`~.data.IGNORE`."""
    import torch

    keep = target != IGNORE
    idx = target[keep] * num_classes + pred[keep]
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def seg_metrics(conf) -> dict:
    """mIoU (mean IoU over classes present in the ground truth or the prediction), pixel
    accuracy and mean class accuracy (over classes present in the ground truth), in [0, 1], from
    a ``[K, K]`` confusion matrix; also the number of classes evaluated and of pixels."""
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
