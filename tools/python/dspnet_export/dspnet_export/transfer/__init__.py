r"""Detection and segmentation transfer of one exported width (issue 7).

``python -m dspnet_export.transfer {detect,segment} --backbone DIR [--random] --coco DIR``
fine-tunes a Faster R-CNN + FPN (COCO box mAP) or an FCN-style segmenter on FPN features (mIoU)
on the exported width and prints one JSON record; :mod:`.cli` documents the command, its data
layouts and its output.

Modules, one job each:

* :mod:`.errors` -- :class:`UsageError`, the one-line bad-input error (exit code 2).
* :mod:`.settings` -- :data:`PRESETS` and the typed, frozen settings per task
  (:class:`DetectSettings`, :class:`SegmentSettings`): a preset with the CLI overrides;
  ``as_dict()`` is the record's ``settings``.
* :mod:`.data` -- where a split's files are, split loading (COCO128/YOLO, COCO JSON, PNG masks),
  class lists and class maps, image loading and the flip/resize of image-target pairs.
* :mod:`.models` -- the backbone check, the detector and segmenter builders, the BN mode.
* :mod:`.loop` -- the training loop, the learning-rate schedule, batching and batch padding.
* :mod:`.metrics` -- COCO box evaluation, the confusion matrix, segmentation metrics.
* :mod:`.tasks` -- ``detect`` and ``segment`` end to end: build, fine-tune, evaluate.
* :mod:`.cli` -- the argument parser, :func:`run` (one record), :func:`main` (exit codes),
  :func:`write_atomic`; ``__main__`` calls :func:`main`.

Imports inside the package, ``A --> B`` for "A imports B" (drawn without the arrows implied by
others: ``cli`` also imports ``models``, ``settings``, ``data`` and ``errors`` itself)::

    __main__ --> cli --> tasks --> loop ----> models --> settings ---+
                           \        \                                \
                            \        +-----> data -----------------> errors
                             \               ^
                              +--> metrics --+

Every direct import, by layer (a module imports only from layers below its own, so there is
no cycle; ``models`` also imports :mod:`dspnet_export.load` inside its functions)::

    6  __main__  cli
    5  cli       tasks, models, settings, data, errors
    4  tasks     loop, metrics, models, settings, data, errors
    3  loop      models, settings, data
    2  models    settings, errors
    2  metrics   data
    1  settings  errors
    1  data      errors
    0  errors    -
"""

from .cli import main, parser, run, write_atomic
from .data import (
    IGNORE,
    DataSpec,
    Sample,
    Split,
    SplitFiles,
    class_lut,
    coco_class_map,
    load_class_map,
    load_coco_split,
    load_image,
    load_mask_split,
    load_splits,
    load_yolo_split,
    mask_to_class_map,
    read_class_ids,
    resize_pair,
)
from .errors import UsageError
from .loop import lr_at, pad_batch, train_loop
from .metrics import coco_eval_boxes, confusion, seg_metrics
from .models import build_detector, build_segmenter, check_backbone, set_bn_mode
from .settings import PRESETS, PROTOCOL, DetectSettings, SegmentSettings, TransferSettings, preset_values
from .tasks import TaskResult, run_detect, run_segment

__all__ = [
    "IGNORE",
    "PRESETS",
    "PROTOCOL",
    "DataSpec",
    "DetectSettings",
    "Sample",
    "SegmentSettings",
    "Split",
    "SplitFiles",
    "TaskResult",
    "TransferSettings",
    "UsageError",
    "build_detector",
    "build_segmenter",
    "check_backbone",
    "class_lut",
    "coco_class_map",
    "coco_eval_boxes",
    "confusion",
    "load_class_map",
    "load_coco_split",
    "load_image",
    "load_mask_split",
    "load_splits",
    "load_yolo_split",
    "lr_at",
    "main",
    "mask_to_class_map",
    "pad_batch",
    "parser",
    "preset_values",
    "read_class_ids",
    "resize_pair",
    "run",
    "run_detect",
    "run_segment",
    "seg_metrics",
    "set_bn_mode",
    "train_loop",
    "write_atomic",
]
