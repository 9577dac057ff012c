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
import json
import os
import random
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from .data import SPLITS, DataSpec, Split, SplitFiles, in_dataset_dir, load_splits
from .errors import UsageError
from .models import check_backbone
from .settings import OVERRIDABLE, PRESETS, PROTOCOL, SETTINGS, Number, TransferSettings, preset_values
from .tasks import run_detect, run_segment


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring); errors print one line and exit with 2."""
    p = _Parser(prog="python -m dspnet_export.transfer", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=list(PRESETS))
    p.add_argument("--backbone", required=True, type=Path,
                   help="dspnet-export folder of one width (model.json + model.safetensors)")
    p.add_argument("--random", action="store_true",
                   help="build --backbone's architecture with random weights instead of loading them")
    p.add_argument("--coco", type=Path,
                   help="dataset folder: COCO128 layout (images/, object_detection/, semantic_segmentation/) or COCO "
                        "layout (train2017/, val2017/, annotations/instances_{train,val}2017.json)")
    for split in SPLITS:
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


def data_spec(args: argparse.Namespace) -> DataSpec:
    """The dataset the options name, completed from ``--coco DIR`` when given (raises
    :class:`UsageError` when that folder does not exist)."""
    spec = DataSpec(
        task=args.task,
        train=SplitFiles(args.train_images, args.train_annotations, args.train_labels, args.train_masks),
        val=SplitFiles(args.val_images, args.val_annotations, args.val_labels, args.val_masks),
        classes=args.classes,
        max_train_images=args.max_train_images,
        max_val_images=args.max_val_images,
    )
    return spec if args.coco is None else in_dataset_dir(spec, args.coco)


def resolve_settings(args: argparse.Namespace, values: Dict[str, Number], spec: DataSpec, train: Split, val: Split,
                     threads: int) -> TransferSettings:
    """The task's typed settings: the preset ``values`` (:func:`~.settings.preset_values`), the
    other options, the loaded splits and the torch thread count."""
    extra = {"unlabeled": args.unlabeled} if args.task == "segment" else {}
    return SETTINGS[args.task].build(
        values, train_images=len(train.samples), max_steps=args.max_steps, weight_decay=args.weight_decay,
        bn=args.bn, preset=args.preset, seed=args.seed, threads=threads, max_train_images=args.max_train_images,
        max_val_images=args.max_val_images, num_classes=len(train.category_ids) + 1,
        classes_file=str(spec.classes) if spec.classes else None, train=train.source, val=val.source,
        val_images=len(val.samples), verbose=args.verbose, **extra)


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


def _package_version(name: str) -> Optional[str]:
    """The installed version of a distribution, ``None`` when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def run(argv: Optional[Sequence[str]] = None) -> dict:
    """Runs one command line (``argv``, default ``sys.argv[1:]``) and returns its JSON record,
    also written atomically to ``--out``. Raises :class:`UsageError` for bad input and
    ``FloatingPointError`` for a diverged loss."""
    args = parser().parse_args(argv)
    import torch
    import torchvision
    import timm

    values = preset_values(args.task, args.preset, {k: getattr(args, k) for k in OVERRIDABLE})
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out is not None and args.out.is_dir():
        raise UsageError(f"--out {args.out}: is a folder; pass a file path")
    spec = data_spec(args)
    check_backbone(args.backbone)
    train, val = load_splits(spec)
    settings = resolve_settings(args, values, spec, train, val, torch.get_num_threads())
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    task = run_detect if args.task == "detect" else run_segment
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = task(args.backbone, args.random, train, val, settings)
    meta = result.meta
    pycoco = _package_version("pycocotools")  # None: only `segment` on PNG masks runs without it
    record = {
        "protocol": PROTOCOL[args.task],
        "init": "random" if args.random else "pretrained",
        "width": float(meta["width"]),
        "backbone": str(Path(args.backbone).resolve()),
        "backbone_sha256": meta.get("files", {}).get("model.safetensors", {}).get("sha256"),
        "params": meta.get("params"),
        "flops": meta.get("flops"),
        "headline": result.headline,
        "metrics": result.metrics,
        "counts": result.counts,
        "losses": result.losses,
        "settings": settings.as_dict(),
        "time_s": {"train": round(result.train_s, 3), "eval": round(result.eval_s, 3)},
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
                     "pycocotools": pycoco},
    }
    text = json.dumps(record, indent=1)
    if args.out is not None:
        write_atomic(args.out, text + "\n")
    return record


def main(argv: Optional[Sequence[str]] = None) -> int:
    """:func:`run` with its errors as one line on stderr: exit code 2 for bad input (a missing
    package, unreadable files), 1 for a diverged loss; the record on stdout and 0 otherwise."""
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
