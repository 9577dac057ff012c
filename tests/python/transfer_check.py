"""Runs the pure parts of dspnet_export.transfer on tiny hand-made inputs and prints one JSON line
per case; tests/transfer_cli.rs compares them with values worked out by hand.

Usage: transfer_check.py TMPDIR COCO128_DIR
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dspnet_export.transfer import (
    IGNORE,
    Sample,
    coco_eval_boxes,
    confusion,
    load_class_map,
    load_yolo_split,
    mask_to_class_map,
    read_class_ids,
    seg_metrics,
    write_atomic,
)


def emit(case, **kv):
    print(json.dumps({"case": case, **kv}))


def main():
    tmp, coco = Path(sys.argv[1]), Path(sys.argv[2])

    # category-id mask -> class map, in memory and through a PNG file
    mask = np.array([[0, 1, 2], [17, 200, 5]], np.uint8)
    ids = [1, 2, 17, 200]
    png = tmp / "m.png"
    Image.fromarray(mask).save(png)
    from_png = load_class_map(Sample(png, 0, 3, 2, mask=png), ids, "background")
    emit("class_map", background=mask_to_class_map(mask, ids).tolist(),
         ignore=mask_to_class_map(mask, ids, "ignore").tolist(), png=from_png.tolist(), ignore_label=IGNORE)

    # a record written atomically gets a plain file's permissions under umask 022
    import os
    os.umask(0o022)
    write_atomic(tmp / "rec" / "r.json", "{}\n")
    emit("write_atomic", mode=(tmp / "rec" / "r.json").stat().st_mode & 0o777,
         text=(tmp / "rec" / "r.json").read_text(), others=sorted(p.name for p in (tmp / "rec").iterdir()))

    # the COCO128 semantic class list
    seg_ids = read_class_ids(coco / "semantic_segmentation" / "config.yaml")
    det_ids = read_class_ids(coco / "object_detection" / "config.yaml")
    emit("class_lists", seg_count=len(seg_ids), seg_first=seg_ids[:3], seg_last=seg_ids[-1], det_count=len(det_ids),
         det_first=det_ids[:2])

    # YOLO label -> pixel boxes on a 640x480 image
    (tmp / "images").mkdir()
    (tmp / "labels").mkdir()
    Image.new("RGB", (640, 480)).save(tmp / "images" / "000000000007.jpg")
    (tmp / "labels" / "000000000007.txt").write_text("3 0.5 0.5 0.5 0.25\n0 0.05 0.1 0.2 0.2\n")
    split = load_yolo_split(tmp / "images", tmp / "labels", list(range(80)))
    s = split.samples[0]
    emit("yolo", image_id=s.image_id, size=[s.width, s.height], boxes=s.boxes.tolist(), labels=s.labels.tolist())

    # confusion matrix and segmentation metrics
    target = torch.tensor([0, 0, 0, 0, 1, 1, IGNORE])
    pred = torch.tensor([0, 0, 0, 1, 1, 1, 0])
    conf = confusion(pred, target, 2)
    emit("seg_metrics", confusion=conf.tolist(), **seg_metrics(conf))

    # COCOeval on one ground-truth box: a perfect detection and one of IoU 0.62
    gt = [Sample(Path("x.jpg"), 1, 200, 200, np.array([[0, 0, 100, 100]], np.float32), np.array([1]), np.array([0]))]
    perfect = coco_eval_boxes(gt, 3, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "score": 0.9}])
    shifted = coco_eval_boxes(gt, 3, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 62], "score": 0.9}])
    wrong = coco_eval_boxes(gt, 3, [{"image_id": 1, "category_id": 2, "bbox": [0, 0, 100, 100], "score": 0.9}])
    emit("coco_eval", perfect=perfect, shifted=shifted, wrong_class=wrong, none=coco_eval_boxes(gt, 3, []))


if __name__ == "__main__":
    main()
