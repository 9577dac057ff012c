"""Load what ``dspnet-export`` writes (one folder per width: ``model.safetensors``,
``model.json``, optionally ``reference.safetensors``) as ordinary PyTorch/timm models.

* :func:`load_subnet` -- a ready ``timm.models.resnet.ResNet`` in eval mode, weights loaded with
  strict keys from safetensors (never unpickled); ``features_only=True`` gives the stride
  4/8/16/32 (ImageNet stem) feature maps of layer1..layer4 through timm's ``FeatureListNet``.
* :func:`detection_backbone` -- those maps behind a torchvision ``FeaturePyramidNetwork``, ready
  for ``torchvision.models.detection.FasterRCNN`` / ``MaskRCNN``.
* :func:`export_onnx` / :func:`check_onnx` -- ONNX export of a width and its check with
  onnxruntime.
* :mod:`dspnet_export.transfer` -- detection (Faster R-CNN + FPN, COCO box mAP) and semantic
  segmentation (FCN head on FPN features, mIoU) fine-tuning of a width on COCO128 or COCO:
  ``python -m dspnet_export.transfer {detect,segment} --backbone DIR [--random] --coco DIR``.
"""

from .load import (
    FORMAT,
    build_model,
    detection_backbone,
    load_reference,
    load_subnet,
    read_meta,
)
from .onnx_export import check_onnx, export_onnx

__all__ = [
    "FORMAT",
    "build_model",
    "check_onnx",
    "detection_backbone",
    "export_onnx",
    "load_reference",
    "load_subnet",
    "read_meta",
]
