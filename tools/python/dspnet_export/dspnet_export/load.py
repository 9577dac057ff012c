"""Building and loading exported sub-networks (see the package docstring)."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Union

import timm
import torch
import torch.nn as nn
from safetensors.torch import load_file
from timm.models import FeatureListNet
from timm.models.resnet import BasicBlock, Bottleneck, downsample_conv

#: Layout version written by dspnet-export into ``model.json`` (``format``).
FORMAT = "dspnet-export/1"

PathLike = Union[str, Path]


def read_meta(export_dir: PathLike) -> dict:
    """Reads and checks ``export_dir/model.json``.

    Raises ``FileNotFoundError`` when it is missing and ``ValueError`` when it is not a
    dspnet-export description of a known format.
    """
    path = Path(export_dir) / "model.json"
    with open(path, "r", encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}; re-export with this dspnet version")
    return meta


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_model(meta: dict) -> nn.Module:
    """The (randomly initialised) timm ResNet that ``meta`` (a ``model.json``) describes.

    ``timm.create_model(name, num_classes=0, in_chans=..., channels=...)`` builds every stage;
    timm's plain stem always has 64 channels and a 7x7/2 conv + max pool, so when the
    sub-network's stem differs (``stem_width`` != 64, or the small 3x3/1 stem without max pool)
    the stem conv/BN, the max pool and layer1's first block (whose input is the stem) are
    replaced by timm/torch modules of the right size -- the same statements as
    ``meta["architecture"]["timm_snippet"]``. ``model.feature_info`` is corrected to the real
    stem channels and strides so ``FeatureListNet`` reports them.
    """
    arch = meta["architecture"]
    t = arch["timm"]
    c = tuple(int(v) for v in t["channels"])
    s = int(t["stem_width"])
    in_chans = int(t["in_chans"])
    model = timm.create_model(t["model_name"], pretrained=False, num_classes=0, in_chans=in_chans, channels=c)
    stem = meta["stem"]
    conv = stem["conv1"]
    resize = model.bn1.num_features != s
    if resize or stem["type"] != "imagenet":
        model.conv1 = nn.Conv2d(in_chans, s, kernel_size=conv["kernel_size"], stride=conv["stride"], padding=conv["padding"], bias=False)
    if resize:
        model.bn1 = nn.BatchNorm2d(s)
        if t["block"] == "Bottleneck":
            model.layer1[0] = Bottleneck(s, c[0], downsample=downsample_conv(s, int(t["stage_channels"][0]), 1))
        else:
            model.layer1[0] = BasicBlock(s, c[0])
    if stem["maxpool"] is None:
        model.maxpool = nn.Identity()
    strides = [int(v) for v in arch["feature_strides"]]
    stem_stride = conv["stride"]
    model.feature_info[0]["num_chs"] = s
    model.feature_info[0]["reduction"] = stem_stride
    for i in range(4):
        model.feature_info[i + 1]["reduction"] = strides[i]
        model.feature_info[i + 1]["num_chs"] = int(t["stage_channels"][i])
    return model


def load_subnet(export_dir: PathLike, features_only: bool = False, verify_sha256: bool = True) -> nn.Module:
    """A ready model for one exported width, in eval mode.

    ``features_only=False``: a ``timm.models.resnet.ResNet`` with ``num_classes=0``;
    ``model(x)`` maps ``[B, C, H, W]`` fp32 images (normalised with ``model.json`` input
    mean/std) to the pooled features ``[B, feature_dim]``.

    ``features_only=True``: a ``timm.models.FeatureListNet`` over the same model returning the
    list of layer1..layer4 maps ``[B, stage_channels[i], H/stride_i, W/stride_i]``
    (strides 4/8/16/32 for the ImageNet stem, 1/2/4/8 for the small stem);
    ``model.feature_info.channels()`` / ``.reduction()`` give channels and strides.

    Weights are read with ``safetensors`` (no unpickling) and loaded with ``strict=True``; the
    file's sha256 is checked against ``model.json`` first (``ValueError`` on mismatch).
    """
    d = Path(export_dir)
    meta = read_meta(d)
    weights = d / "model.safetensors"
    if verify_sha256:
        want = meta.get("files", {}).get("model.safetensors", {}).get("sha256")
        got = _sha256(weights)
        if want is not None and got != want:
            raise ValueError(f"{weights}: sha256 {got} differs from model.json ({want}): corrupt or truncated; re-export")
    model = build_model(meta)
    model.load_state_dict(load_file(str(weights)), strict=True)
    model.eval()
    if features_only:
        model = FeatureListNet(model, out_indices=(1, 2, 3, 4))
        model.eval()
    return model


def load_reference(export_dir: PathLike) -> Dict[str, torch.Tensor]:
    """``reference.safetensors`` (written by ``dspnet-export --reference``): ``input``
    ``[2, C, H, W]`` and the Rust network's eval-mode outputs ``pooled`` and ``layer1``..``layer4``."""
    return load_file(str(Path(export_dir) / "reference.safetensors"))


class FpnBackbone(nn.Module):
    """Multi-scale backbone for torchvision detection models: layer1..layer4 of an exported
    width (``FeatureListNet``) into a ``torchvision.ops.FeaturePyramidNetwork`` with a max-pool
    top level. ``forward(x)`` returns an ``OrderedDict`` ``'0'..'3'`` (strides of layer1..4)
    and ``'pool'`` of ``[B, out_channels, h, w]`` maps; ``self.out_channels`` is what
    ``FasterRCNN`` reads."""

    def __init__(self, body: nn.Module, in_channels_list: List[int], out_channels: int = 256):
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels_list, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def detection_backbone(export_dir: PathLike, out_channels: int = 256) -> FpnBackbone:
    """:class:`FpnBackbone` on an exported width (pretrained body, freshly initialised FPN), for
    ``torchvision.models.detection.FasterRCNN(backbone, num_classes=...)``."""
    body = load_subnet(export_dir, features_only=True)
    return FpnBackbone(body, list(body.feature_info.channels()), out_channels)
