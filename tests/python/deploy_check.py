#!/usr/bin/env python3
"""Python half of tests/export_cli.rs: loads dspnet-export folders with the dspnet_export
package (PYTHONPATH set by the Rust test to this checkout's tools/python/dspnet_export) and
prints one JSON object per line with measured values; the Rust test asserts the thresholds.
Several modes can run in one process, separated by ``--`` (importing torch/timm dominates).
One intra-op thread: these models are tiny, and two threads spin on a busy machine.

Modes
-----
  equiv DIR...
      For each export folder: max |timm - Rust| of the pooled features and of layer1..layer4
      (``load_subnet`` / ``features_only=True`` on reference.safetensors' input), the same for
      the model built by executing model.json's ``timm_snippet`` (timm + torch only), a
      negative control (the same weights with BN running statistics reset to PyTorch's 0/1
      initial values, which must NOT match), the parameter count and the convolution
      multiply-accumulates of one image (forward hooks on every nn.Conv2d), and the feature
      channels/strides timm reports.
  corrupt DIR
      Whether load_subnet refuses a copy whose model.safetensors has one byte flipped.
  onnx OUTDIR DIR...
      export_onnx + check_onnx per folder: max |onnxruntime - torch| on a batch of 3.
  detect DIR IMAGE
      torchvision Faster R-CNN (FPN on the exported width's layer1..layer4) in eval mode on one
      photo: output boxes/scores/labels and the FPN level shapes.
"""

import json
import os
import shutil
import sys
import tempfile
import warnings

import torch
import torch.nn as nn

warnings.filterwarnings("ignore")
torch.set_num_threads(1)

import dspnet_export as de  # noqa: E402


def maxdiff(a, b):
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).abs().max())


def conv_macs(model, x):
    total = [0]

    def hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        total[0] += out.shape[1] * out.shape[2] * out.shape[3] * (m.in_channels // m.groups) * k

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return total[0]


def equiv(d):
    meta = de.read_meta(d)
    ref = de.load_reference(d)
    x = ref["input"]
    out = {"dir": d}
    feats = de.load_subnet(d, features_only=True)
    with torch.no_grad():
        maps = feats(x)
    out["layers"] = [maxdiff(m, ref[f"layer{i + 1}"]) for i, m in enumerate(maps)]
    out["feature_shapes"] = [list(m.shape) for m in maps]
    out["feature_channels"] = list(feats.feature_info.channels())
    out["feature_reductions"] = list(feats.feature_info.reduction())
    # the documented timm-only snippet, executed in the export folder
    ns = {}
    cwd = os.getcwd()
    os.chdir(d)
    try:
        exec(meta["architecture"]["timm_snippet"], ns)
    finally:
        os.chdir(cwd)
    with torch.no_grad():
        out["snippet_pooled"] = maxdiff(ns["model"](x), ref["pooled"])
    out["snippet_is_timm_resnet"] = type(ns["model"]).__module__ == "timm.models.resnet"
    model = de.load_subnet(d)
    out["eval_mode"] = not model.training
    with torch.no_grad():
        out["pooled"] = maxdiff(model(x), ref["pooled"])
    out["params"] = sum(p.numel() for p in model.parameters())
    c = int(meta["input"]["channels"])
    h, w = meta["input"]["size"]
    out["macs"] = conv_macs(model, torch.zeros(1, c, h, w))
    # negative control: the same model with its BN running statistics reset to 0/1
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
    with torch.no_grad():
        out["default_bn_pooled"] = maxdiff(model(x), ref["pooled"])
    return out


def corrupt(d):
    """Copies model.json + model.safetensors with the last byte flipped: load_subnet must raise
    ValueError naming the sha256."""
    with tempfile.TemporaryDirectory() as t:
        for name in ("model.json", "model.safetensors"):
            shutil.copy(os.path.join(d, name), os.path.join(t, name))
        p = os.path.join(t, "model.safetensors")
        data = bytearray(open(p, "rb").read())
        data[-1] ^= 0xFF
        open(p, "wb").write(bytes(data))
        try:
            de.load_subnet(t)
            return {"dir": d, "refused": False}
        except ValueError as e:
            return {"dir": d, "refused": "sha256" in str(e), "message": str(e)}


def onnx_check(outdir, d):
    path = os.path.join(outdir, os.path.basename(os.path.normpath(d)) + ".onnx")
    de.export_onnx(d, path)
    import onnx

    opset = [o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx")]
    return {"dir": d, "onnx": path, "max_abs_diff": de.check_onnx(d, path), "opset": opset}


def detect(d, image):
    from torchvision.io import read_image
    from torchvision.models.detection import FasterRCNN

    torch.manual_seed(0)
    backbone = de.detection_backbone(d)
    det = FasterRCNN(backbone, num_classes=91, min_size=320, max_size=480, box_score_thresh=0.0)
    det.eval()
    img = read_image(image).float() / 255.0
    with torch.no_grad():
        images, _ = det.transform([img])
        levels = backbone(images.tensors)
        outs = det([img])
    o = outs[0]
    return {
        "image_shape": list(img.shape),
        "batch_shape": list(images.tensors.shape),
        "fpn": {k: list(v.shape) for k, v in levels.items()},
        "body_channels": list(backbone.body.feature_info.channels()),
        "body_reductions": list(backbone.body.feature_info.reduction()),
        "boxes_shape": list(o["boxes"].shape),
        "boxes_min": float(o["boxes"].min()) if o["boxes"].numel() else None,
        "boxes_max_x": float(o["boxes"][:, [0, 2]].max()) if o["boxes"].numel() else None,
        "boxes_max_y": float(o["boxes"][:, [1, 3]].max()) if o["boxes"].numel() else None,
        "boxes_ordered": bool(((o["boxes"][:, 2] >= o["boxes"][:, 0]) & (o["boxes"][:, 3] >= o["boxes"][:, 1])).all()),
        "scores_shape": list(o["scores"].shape),
        "scores_min": float(o["scores"].min()) if o["scores"].numel() else None,
        "scores_max": float(o["scores"].max()) if o["scores"].numel() else None,
        "labels_shape": list(o["labels"].shape),
    }


def main(argv):
    # several commands in one process (imports dominate): CMD ARGS... [-- CMD ARGS...]...
    cmds, cur = [], []
    for a in argv[1:]:
        if a == "--":
            cmds.append(cur)
            cur = []
        else:
            cur.append(a)
    cmds.append(cur)
    for cmd in cmds:
        mode, args = cmd[0], cmd[1:]
        if mode == "equiv":
            for d in args:
                print(json.dumps(equiv(d)), flush=True)
        elif mode == "onnx":
            for d in args[1:]:
                print(json.dumps(onnx_check(args[0], d)), flush=True)
        elif mode == "corrupt":
            print(json.dumps(corrupt(args[0])), flush=True)
        elif mode == "detect":
            print(json.dumps(detect(args[0], args[1])), flush=True)
        else:
            raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv)
