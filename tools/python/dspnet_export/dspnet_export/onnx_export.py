"""ONNX export of one exported width, checked with onnxruntime."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional, Union

import torch

from .load import load_subnet, read_meta

#: ONNX opset used by :func:`export_onnx` (verified offline with torch 2.13's TorchScript-based
#: exporter and onnxruntime 1.32).
OPSET = 17

PathLike = Union[str, Path]


def export_onnx(export_dir: PathLike, path: PathLike, opset: int = OPSET) -> Path:
    """Writes the width in ``export_dir`` as an ONNX graph ``images [batch, C, H, W]`` fp32 ->
    ``features [batch, feature_dim]`` (eval mode, dynamic batch) to ``path``, atomically (a
    temporary file beside it, then rename). Uses torch's TorchScript-based exporter
    (``dynamo=False``), which needs no extra package. Returns ``path``."""
    meta = read_meta(export_dir)
    model = load_subnet(export_dir)
    c = int(meta["input"]["channels"])
    h, w = (int(v) for v in meta["input"]["size"])
    x = torch.zeros(1, c, h, w)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            input_names=["images"],
            output_names=["features"],
            opset_version=opset,
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
            dynamo=False,
        )
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def check_onnx(export_dir: PathLike, path: PathLike, x: Optional[torch.Tensor] = None) -> float:
    """Max absolute difference between onnxruntime (CPU) on ``path`` and the torch model of
    ``export_dir`` on ``x`` (default: a seeded ``[3, C, H, W]`` normal batch, so the dynamic
    batch axis is exercised)."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    meta = read_meta(export_dir)
    if x is None:
        c = int(meta["input"]["channels"])
        h, w = (int(v) for v in meta["input"]["size"])
        x = torch.randn(3, c, h, w, generator=torch.Generator().manual_seed(0))
    model = load_subnet(export_dir)
    with torch.no_grad():
        want = model(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["features"], {"images": x.numpy()})[0]
    return float(np.abs(got - want).max())
