"""Models of the transfer tool: the exported width as a backbone (checked, loaded or randomly
initialised), the Faster R-CNN detector and the FCN-style segmenter built on it, and the
backbone's BN mode during fine-tuning.

Seeding: the backbone is drawn (``--random``) after ``torch.manual_seed(seed)`` and everything
after it (FPN, heads) after ``torch.manual_seed(seed + 1)``, so both initialisations share the
same FPN and heads.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Tuple

from .errors import UsageError
from .settings import DetectSettings, SegmentSettings


def check_backbone(path: Path) -> dict:
    """``model.json`` of an export folder for a 3-channel network.

    Raises :class:`UsageError` (one line naming ``--backbone`` and the fix) for a missing
    folder, a folder without ``model.json``, another format, or a non-RGB network."""
    from ..load import read_meta

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


def _backbone_body(backbone: Path, random_init: bool, seed: int, out_indices: Tuple[int, ...]):
    """The exported width as a timm ``FeatureListNet`` over the stages ``out_indices`` (weights
    loaded, or timm's random initialisation with ``random_init``) and its ``model.json``."""
    import torch
    from timm.models import FeatureListNet

    from ..load import build_model, load_subnet

    d = Path(backbone)
    meta = check_backbone(d)
    torch.manual_seed(seed)
    if random_init:
        model = build_model(meta)
    else:
        try:
            model = load_subnet(d)
        except (ValueError, RuntimeError, OSError) as e:
            raise UsageError(f"--backbone {d}: cannot load the weights ({str(e).splitlines()[0]}); re-export the width")
    body = FeatureListNet(model, out_indices=out_indices)
    return body, meta


def build_detector(backbone: Path, random_init: bool, settings: DetectSettings):
    """Faster R-CNN with FPN (torchvision) over the exported width, for ``settings.num_classes``
    classes (background included). Returns the detector, the backbone body (for
    :func:`set_bn_mode`) and ``model.json``."""
    import torch
    from torchvision.models.detection import FasterRCNN

    from ..load import FpnBackbone

    body, meta = _backbone_body(backbone, random_init, settings.seed, (1, 2, 3, 4))
    torch.manual_seed(settings.seed + 1)  # FPN and heads: the same draw for every initialisation
    fpn = FpnBackbone(body, list(body.feature_info.channels()), settings.fpn_channels)
    model = FasterRCNN(
        fpn,
        num_classes=settings.num_classes,
        min_size=settings.min_size,
        max_size=settings.max_size,
        image_mean=list(meta["input"]["mean"]),
        image_std=list(meta["input"]["std"]),
        rpn_pre_nms_top_n_train=settings.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=settings.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=settings.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=settings.rpn_post_nms_top_n_test,
        box_batch_size_per_image=settings.box_batch_size_per_image,
        box_score_thresh=settings.box_score_thresh,
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


def build_segmenter(backbone: Path, random_init: bool, settings: SegmentSettings):
    """The FCN-style segmenter (FPN over layer2..layer4, ``settings.fpn_channels`` channels,
    ``settings.num_classes`` classes, logits ``[B, K + 1, H, W]`` at the input size) over the
    exported width. Returns the segmenter, the backbone body (for :func:`set_bn_mode`) and
    ``model.json``."""
    import torch

    body, meta = _backbone_body(backbone, random_init, settings.seed, (2, 3, 4))
    torch.manual_seed(settings.seed + 1)
    return _segmenter_class()(body, settings.fpn_channels, settings.num_classes), body, meta


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
