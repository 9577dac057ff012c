#!/usr/bin/env python3
"""Peer of dspnet-bench's trainer figures: ONE BYOL step (Grill et al. 2020) on a small-image
ResNet-18 built from torchvision/PyTorch modules, timed the way `dspnet-bench` times ours.

The network and the step match dspnet's single-width step (trainer/src/dspnet.rs) op for op:
- backbone: torchvision `resnet18` with the small-image stem (3x3 stride-1 conv, no max pool),
  `fc` removed, `base` channels in the stem (64 = torchvision);
- projector and predictor: Linear(no bias) -> BatchNorm1d -> ReLU -> Linear (hidden 4096,
  output 256, as configs/cifar10-small.toml);
- `--views separate` (default; how lightly's and solo-learn's BYOL examples run it): each view
  passes through the online network and the momentum teacher on its own (BN statistics per
  view); `--views concat` (dspnet's way): both views pass as one batch of 2B images. The
  momentum teacher is a copy of backbone + projector, BN in train mode, no gradient;
- loss: BYOL's normalised regression loss, symmetrised, in fp32;
- one LARS step (eta 0.02, momentum 0.9, weight decay 1e-5 on rank > 1 tensors only, as
  trainer/src/optim.rs), then the EMA update of the teacher (parameters and BN buffers).

Precision "bf16": `torch.autocast("cpu", dtype=torch.bfloat16)` around the forward passes
(fp32 master weights, loss in fp32); `--channels-last` puts model and images in
`torch.channels_last`.

Timing: `--warmup` untimed steps, then `--steps` timed steps; images/s = batch / median step
time (one image = its two views); also the median CPU seconds (all threads) per step.
Peak memory: the process's peak resident set size (VmHWM from /proc/self/status) over the
warm-up and timed steps, after glibc's malloc_trim(0) and a reset through /proc/self/clear_refs
(as dspnet-bench measures ours).

Prints one JSON line. Exit code 3 when torch or torchvision is missing, 2 on bad arguments.
"""

import argparse
import copy
import json
import statistics
import sys
import time


def peak_rss_reset():
    """Resets the kernel's peak-RSS counter of this process (Linux >= 4.0); False elsewhere."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def trim_heap():
    """glibc's malloc_trim(0): hands freed heap memory back to the kernel (no-op elsewhere)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def status_bytes(field):
    """VmHWM / VmRSS of this process in bytes (None when /proc is unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=128, help="images per step (each has two views)")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--base", type=int, default=64, help="stem channels of the ResNet-18")
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--out-dim", type=int, default=256)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--views", choices=["separate", "concat"], default="separate")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the device bundle's speed stage)")
    args = ap.parse_args()
    if args.batch < 2 or args.steps < 1 or args.warmup < 0 or args.base < 1:
        print("error: --batch must be >= 2, --steps >= 1, --warmup >= 0, --base >= 1", file=sys.stderr)
        sys.exit(2)
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        import torchvision
    except ImportError as e:
        print(f"error: {e}; install torch and torchvision (tools/setup.sh)", file=sys.stderr)
        sys.exit(3)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    def small_resnet18():
        net = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2])
        if args.base != 64:
            # torchvision fixes 64 base channels; rebuild with another base through _make_layer.
            net.inplanes = args.base
            net.conv1 = nn.Conv2d(3, args.base, 3, 1, 1, bias=False)
            net.bn1 = nn.BatchNorm2d(args.base)
            b = args.base
            net.layer1 = net._make_layer(torchvision.models.resnet.BasicBlock, b, 2)
            net.layer2 = net._make_layer(torchvision.models.resnet.BasicBlock, 2 * b, 2, stride=2)
            net.layer3 = net._make_layer(torchvision.models.resnet.BasicBlock, 4 * b, 2, stride=2)
            net.layer4 = net._make_layer(torchvision.models.resnet.BasicBlock, 8 * b, 2, stride=2)
        else:
            net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        return net

    def mlp(i):
        return nn.Sequential(
            nn.Linear(i, args.hidden, bias=False),
            nn.BatchNorm1d(args.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(args.hidden, args.out_dim),
        )

    feat = 8 * args.base
    online = nn.ModuleDict({"backbone": small_resnet18(), "projector": mlp(feat)})
    predictor = mlp(args.out_dim)
    teacher = copy.deepcopy(online)
    for p in teacher.parameters():
        p.requires_grad_(False)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    for m in (online, predictor, teacher):
        m.to(dev)
        m.to(memory_format=fmt)
        m.train()
    params = list(online.parameters()) + list(predictor.parameters())
    momenta = [torch.zeros_like(p) for p in params]
    online_state = list(online.parameters()) + list(online.buffers())
    teacher_state = list(teacher.parameters()) + list(teacher.buffers())
    ema_pairs = [(t, o) for t, o in zip(teacher_state, online_state) if t.is_floating_point()]

    def regression_loss(p, z):
        return (2 - 2 * F.cosine_similarity(p.float(), z.float().detach(), dim=1)).mean()

    def lars_step(lr, eta=0.02, momentum=0.9, wd=1e-5):
        with torch.no_grad():
            for p, v in zip(params, momenta):
                if p.grad is None:
                    continue
                g = p.grad
                if p.dim() > 1:
                    g = g + wd * p
                    wn, gn = p.norm().item(), g.norm().item()
                    if wn > 0 and gn > 0:
                        g = g * (eta * wn / gn)
                v.mul_(momentum).add_(g)
                p.add_(v, alpha=-lr)

    def ema(tau=0.99):
        with torch.no_grad():
            ts = [t for t, _ in ema_pairs]
            os_ = [o for _, o in ema_pairs]
            torch._foreach_mul_(ts, tau)
            torch._foreach_add_(ts, os_, alpha=1 - tau)

    n = args.batch
    shape = (n, 3, args.image_size, args.image_size)
    view_a = torch.randn(shape, device=dev).contiguous(memory_format=fmt)
    view_b = torch.randn(shape, device=dev).contiguous(memory_format=fmt)
    bf16 = args.precision == "bf16"

    def project(net, x):
        return net["projector"](net["backbone"](x))

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            if args.views == "concat":
                x = torch.cat([view_a, view_b], 0)
                with torch.no_grad():
                    z = project(teacher, x)
                q = predictor(project(online, x))
                q_a, q_b, z_a, z_b = q[:n], q[n:], z[:n], z[n:]
            else:
                q_a = predictor(project(online, view_a))
                q_b = predictor(project(online, view_b))
                with torch.no_grad():
                    z_a = project(teacher, view_a)
                    z_b = project(teacher, view_b)
        loss = regression_loss(q_a, z_b) + regression_loss(q_b, z_a)
        for p in params:
            p.grad = None
        loss.backward()
        lars_step(0.1)
        ema()
        return loss.item()

    trim_heap()
    reset_ok = peak_rss_reset()
    rss_start = status_bytes("VmRSS")
    for _ in range(args.warmup):
        step()
    times = []
    cpu = []
    loss = None
    for _ in range(args.steps):
        t, c = time.perf_counter(), time.process_time()
        loss = step()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    med = statistics.median(times)
    print(json.dumps({
        "images_per_s": n / med,
        "step_seconds": times,
        "median_step_seconds": med,
        "cpu_seconds_per_step": statistics.median(cpu),
        "batch": n,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "views": args.views,
        "threads": torch.get_num_threads(),
        "peak_rss_bytes": status_bytes("VmHWM") if reset_ok else None,
        "rss_before_first_step_bytes": rss_start,
        "loss": loss,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }))


if __name__ == "__main__":
    main()
