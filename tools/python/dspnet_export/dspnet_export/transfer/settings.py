"""Presets and the typed settings of one transfer run.

The settings are made in two steps, so that bad values are reported in the order the command
checks its input: :func:`preset_values` (the task's preset with the CLI overrides, checked before
anything is read) and :meth:`TransferSettings.build` (once the splits are loaded: the step count,
the capped warm-up and what the splits contribute). :meth:`TransferSettings.as_dict` is the
``settings`` object of the JSON record, key for key and in its order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, Mapping, Optional, Tuple, Type, Union

from .errors import UsageError

Number = Union[int, float]

#: Settings per task and preset. ``cpu``: a few minutes per run on 2 cores for COCO128;
#: ``full``: the usual 1x-style schedule for a full COCO-format dataset on GPUs.
PRESETS: Dict[str, Dict[str, Dict[str, Number]]] = {
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

#: The record's ``protocol`` per task.
PROTOCOL = {"detect": "detection", "segment": "segmentation"}

#: Preset values that the CLI option of the same name overrides (``--min-size`` -> ``min_size``),
#: checked in this order.
OVERRIDABLE = ("epochs", "batch", "lr", "min_size", "max_size", "fpn_channels")


def preset_values(task: str, preset: str, overrides: Mapping[str, Optional[Number]]) -> Dict[str, Number]:
    """``PRESETS[task][preset]`` with every override of :data:`OVERRIDABLE` that is not ``None``.

    Raises :class:`UsageError` naming the option for a value that is not positive."""
    values = dict(PRESETS[task][preset])
    for k in OVERRIDABLE:
        v = overrides.get(k)
        if v is not None:
            if v <= 0:
                raise UsageError(f"--{k.replace('_', '-')} {v}: must be positive")
            values[k] = v
    return values


# the record's keys around the task-specific ones
_SCHEDULE_KEYS = ("min_size", "max_size", "epochs", "batch", "lr", "warmup_steps", "fpn_channels")
_RUN_KEYS = ("steps", "preset", "seed", "threads", "optimizer", "schedule", "grad_clip_norm", "augmentation",
             "max_steps", "max_train_images", "max_val_images", "num_classes", "classes_file", "train", "val",
             "train_images", "val_images", "model")


@dataclass(frozen=True)
class TransferSettings:
    """What both tasks share. Sizes in pixels; ``lr`` the peak SGD learning rate; ``steps`` and
    ``warmup_steps`` counted in optimizer steps; ``train``/``val`` the splits' sources (folder
    and file paths, format) and ``train_images``/``val_images`` their image counts."""

    min_size: int
    max_size: int
    epochs: int
    batch: int
    lr: float
    warmup_steps: int
    fpn_channels: int
    weight_decay: float
    #: backbone BN during fine-tuning: ``"train"`` (batch statistics) or ``"frozen"``
    bn: str
    steps: int
    preset: str
    seed: int
    #: torch intra-op threads
    threads: int
    max_steps: Optional[int]
    max_train_images: Optional[int]
    max_val_images: Optional[int]
    #: categories + background
    num_classes: int
    classes_file: Optional[str]
    train: Mapping[str, str]
    val: Mapping[str, str]
    train_images: int
    val_images: int
    #: print every step's loss to stderr (not recorded)
    verbose: bool

    momentum: ClassVar[float] = 0.9
    optimizer: ClassVar[str] = f"sgd momentum {momentum}"
    schedule: ClassVar[str] = "linear warm-up from lr/100, cosine to 0"
    grad_clip_norm: ClassVar[float] = 10.0
    augmentation: ClassVar[str] = "horizontal flip p=0.5"
    model: ClassVar[str]
    eval: ClassVar[str]
    #: keys of :meth:`as_dict`, in the record's order
    RECORD: ClassVar[Tuple[str, ...]]

    @classmethod
    def build(cls, values: Mapping[str, Number], *, train_images: int, max_steps: Optional[int],
              **fields: object) -> TransferSettings:
        """The settings of a run whose train split has ``train_images`` images: ``values``
        (:func:`preset_values`), ``steps = ceil(train_images / batch) * epochs`` capped at
        ``max_steps``, ``warmup_steps`` capped at a fifth of ``steps``, and ``fields`` (every
        other field by name). Raises :class:`UsageError` for ``max_steps < 1``."""
        steps = -(-train_images // values["batch"]) * values["epochs"]
        if max_steps is not None:
            if max_steps < 1:
                raise UsageError(f"--max-steps {max_steps}: pass at least 1")
            steps = min(steps, max_steps)
        warmup = min(values["warmup_steps"], max(0, steps // 5))
        return cls(**{**values, "warmup_steps": warmup}, steps=steps, max_steps=max_steps, train_images=train_images,
                   **fields)

    def as_dict(self) -> Dict[str, object]:
        """The record's ``settings``: the values of :attr:`RECORD`'s keys in order (mappings as
        plain dicts)."""
        out: Dict[str, object] = {}
        for k in self.RECORD:
            v = getattr(self, k)
            out[k] = dict(v) if isinstance(v, Mapping) else v
        return out


@dataclass(frozen=True)
class DetectSettings(TransferSettings):
    """``detect``: Faster R-CNN's proposal counts (per image) and sampled boxes per image on top of
    :class:`TransferSettings`."""

    rpn_pre_nms_top_n_train: int
    rpn_post_nms_top_n_train: int
    rpn_pre_nms_top_n_test: int
    rpn_post_nms_top_n_test: int
    box_batch_size_per_image: int

    box_score_thresh: ClassVar[float] = 0.001
    model: ClassVar[str] = "torchvision FasterRCNN, FPN over layer1..4 + max-pool level"
    eval: ClassVar[str] = "pycocotools COCOeval bbox"
    RECORD: ClassVar[Tuple[str, ...]] = (
        *_SCHEDULE_KEYS, "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train", "rpn_pre_nms_top_n_test",
        "rpn_post_nms_top_n_test", "box_batch_size_per_image", "weight_decay", "bn", "box_score_thresh",
        *_RUN_KEYS, "eval")


@dataclass(frozen=True)
class SegmentSettings(TransferSettings):
    """``segment``: what mask id 0 (unlabeled) means, ``"background"`` (class 0) or ``"ignore"``
    (left out of loss and metrics), on top of :class:`TransferSettings`."""

    unlabeled: str

    model: ClassVar[str] = "FPN over layer2..4 summed at stride 8 + torchvision FCNHead"
    eval: ClassVar[str] = "confusion matrix at the masks' resolution; mIoU over classes present in ground truth or prediction"
    RECORD: ClassVar[Tuple[str, ...]] = (*_SCHEDULE_KEYS, "weight_decay", "bn", *_RUN_KEYS, "unlabeled", "eval")


#: The settings class per task.
SETTINGS: Dict[str, Type[TransferSettings]] = {"detect": DetectSettings, "segment": SegmentSettings}
