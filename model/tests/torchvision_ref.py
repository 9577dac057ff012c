#!/usr/bin/env python3
"""Independent torchvision reference for the dspnet-model tests.

Modes
-----
  counts
      Print, for ResNet-18/34/50 with the ImageNet stem and base width 64, the parameter count
      (without fc, BN affine only) and the convolution multiply-accumulates of one 224x224 image
      (counted with forward hooks on every nn.Conv2d), for widths 0.25, 0.5, 0.75, 1.0.
      The numbers hardcoded in model/tests/resnet.rs were produced with this mode.
  check (DEPTH WIDTH STATE.safetensors IO.safetensors pass|fail)...
      For each group: build torchvision.models.resnetDEPTH (channels scaled to WIDTH, see
      `build`), load STATE strictly (everything but fc; num_batches_tracked may be absent), run
      IO's "input" in eval mode through the network up to the global average pool, and compare
      with IO's "output" (the Rust result). A group passes when the maximum absolute difference
      is <= 1e-4. Exits 0 iff every group's outcome equals its expectation ("fail" groups are
      negative controls).

The safetensors files are parsed here by hand (8-byte little-endian header length, JSON header,
raw little-endian data) so that the Python `safetensors` package is not required.
"""
import json
import struct
import sys

import torch
import torchvision


def slim(full, width):
    # Same rounding as dspnet_model::slim_channels (round half away from zero, at least 1).
    import math
    v = full * width
    r = math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)
    return max(1, int(r))


def build(depth, width):
    """torchvision ResNet whose every channel count is slim(c, width).

    torchvision hardcodes the stage widths 64/128/256/512, so _make_layer is wrapped to scale
    `planes`, and the stem conv/bn are replaced. For widths where slim(4*c) == 4*slim(c) (all of
    0.25/0.5/0.75/1.0 with base 64) this is exactly the slimmed sub-network.
    """
    ctor = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34,
            50: torchvision.models.resnet50}[depth]
    if width == 1.0:
        m = ctor()
    else:
        orig = torchvision.models.resnet.ResNet._make_layer

        def scaled(self, block, planes, blocks, stride=1, dilate=False):
            if planes == 64:
                self.inplanes = slim(64, width)
            return orig(self, block, slim(planes, width), blocks, stride, dilate)

        torchvision.models.resnet.ResNet._make_layer = scaled
        try:
            m = ctor()
        finally:
            torchvision.models.resnet.ResNet._make_layer = orig
        c = slim(64, width)
        m.conv1 = torch.nn.Conv2d(3, c, kernel_size=7, stride=2, padding=3, bias=False)
        m.bn1 = torch.nn.BatchNorm2d(c)
    m.fc = torch.nn.Identity()
    return m


def conv_macs(m, h, w):
    total = [0]

    def hook(mod, inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total[0] += out.shape[1] * (mod.in_channels // mod.groups) * k * out.shape[2] * out.shape[3]

    hs = [mod.register_forward_hook(hook) for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    with torch.no_grad():
        m.eval()(torch.zeros(1, 3, h, w))
    for x in hs:
        x.remove()
    return total[0]


DTYPES = {"F32": torch.float32, "F64": torch.float64, "BF16": torch.bfloat16,
          "F16": torch.float16, "I64": torch.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        buf = bytearray(data[base + a:base + b])
        t = torch.frombuffer(buf, dtype=DTYPES[meta["dtype"]]) if b > a else \
            torch.empty(0, dtype=DTYPES[meta["dtype"]])
        out[name] = t.reshape(meta["shape"]).clone()
    return out


def main():
    if sys.argv[1] == "counts":
        for depth in (18, 34, 50):
            for width in (0.25, 0.5, 0.75, 1.0):
                m = build(depth, width)
                params = sum(p.numel() for p in m.parameters())
                print(f"R{depth} w={width}: params={params} macs224={conv_macs(m, 224, 224)}")
        return 0
    args = sys.argv[2:]
    if not args or len(args) % 5:
        print("usage: check (DEPTH WIDTH STATE IO pass|fail)...")
        return 2
    ok = True
    for i in range(0, len(args), 5):
        depth, width, state, io, expect = int(args[i]), float(args[i + 1]), args[i + 2], args[i + 3], args[i + 4]
        passed = check_one(depth, width, state, io)
        if passed != (expect == "pass"):
            print(f"  -> unexpected result for R{depth} w={width} (expected {expect})")
            ok = False
    return 0 if ok else 1


def check_one(depth, width, state_path, io_path):
    state = read_safetensors(state_path)
    io = read_safetensors(io_path)
    m = build(depth, width)
    # dspnet keeps no num_batches_tracked (fixed momentum): take torchvision's own, then load
    # with strict key checking.
    for k, v in m.state_dict().items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = v
    try:
        m.load_state_dict(state, strict=True)
    except RuntimeError as e:
        print(f"R{depth} w={width}: state dict mismatch: {e}")
        return False
    m.eval()
    with torch.no_grad():
        y = m(io["input"])
    ref = io["output"]
    if y.shape != ref.shape:
        print(f"R{depth} w={width}: shape mismatch: torchvision {tuple(y.shape)} vs rust {tuple(ref.shape)}")
        return False
    diff = (y - ref).abs().max().item()
    scale = ref.abs().max().item()
    print(f"R{depth} w={width}: max_abs_diff={diff:.3e} (max |feature| {scale:.3e}) tol 1e-4")
    return diff <= 1e-4

if __name__ == "__main__":
    sys.exit(main())
