#!/usr/bin/env python3
"""Peer loader for `dspnet-bench` (issue 6): PyTorch DataLoader + torchvision/PIL producing BYOL's
two views, lightly's BYOLTransform recipe written out in torchvision transforms, with the
parameters of our augment config (a JSON dump of dspnet's AugmentConfig).

Per view (lightly BYOLView1Transform / BYOLView2Transform order): RandomResizedCrop (bilinear,
antialiased) -> RandomHorizontalFlip -> RandomApply(ColorJitter) -> RandomGrayscale -> Gaussian
blur (lightly's: PIL ImageFilter.GaussianBlur with radius = sigma ~ U(sigma range), applied with
the view's probability) -> RandomSolarize (threshold 128, lightly's RandomSolarization) ->
ToTensor -> Normalize.

The samples' JPEG bytes are read from the same WebDataset shards as our loader, into memory before
timing (the peer does no file I/O while timed). Prints one JSON line:
{"images_per_s": ..., "images": ..., "seconds": ..., "workers": ..., "batch_size": ..., ...}.
Exit code 3 when torch or torchvision is missing, 2 on bad input.
"""
import argparse
import io
import json
import random
import sys
import tarfile
import time

try:
    import torch
    import torchvision
    from torchvision import transforms as T
    from PIL import Image, ImageFilter
except ImportError as e:  # the bench reports the peer as not measured
    print(f"error: {e}; install torch and torchvision (tools/setup.sh)", file=sys.stderr)
    sys.exit(3)


class PILGaussianBlur:
    """lightly's GaussianBlur: with probability p, blur with PIL radius sigma ~ U(sigmas)."""

    def __init__(self, sigmas, p):
        self.sigmas = sigmas
        self.p = p

    def __call__(self, img):
        if random.random() < self.p:
            return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigmas)))
        return img


def view_transform(v, size, mean, std):
    ops = [
        T.RandomResizedCrop(size, scale=tuple(v["crop_scale"]), ratio=tuple(v["crop_ratio"]),
                            interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.RandomHorizontalFlip(p=v["flip_p"]),
        T.RandomApply([T.ColorJitter(v["brightness"], v["contrast"], v["saturation"], v["hue"])], p=v["jitter_p"]),
        T.RandomGrayscale(p=v["grayscale_p"]),
    ]
    if v["blur_p"] > 0:
        ops.append(PILGaussianBlur(tuple(v["blur_sigma"]), v["blur_p"]))
    if v["solarize_p"] > 0:
        ops.append(T.RandomSolarize(threshold=128, p=v["solarize_p"]))
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)


class TwinViews(torch.utils.data.Dataset):
    def __init__(self, jpegs, aug):
        self.jpegs = jpegs
        size, mean, std = aug["image_size"], aug["mean"], aug["std"]
        self.a = view_transform(aug["view_a"], size, mean, std)
        self.b = view_transform(aug["view_b"], size, mean, std)

    def __len__(self):
        return len(self.jpegs)

    def __getitem__(self, i):
        img = Image.open(io.BytesIO(self.jpegs[i])).convert("RGB")
        return self.a(img), self.b(img)


def read_jpegs(shards):
    out = []
    for path in shards:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if m.isfile() and m.name.lower().endswith((".jpg", ".jpeg")):
                    out.append(tf.extractfile(m).read())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--augment", required=True, help="JSON file: dspnet AugmentConfig")
    ap.add_argument("--shards", nargs="+", required=True, help="WebDataset .tar shards with .jpg members")
    ap.add_argument("--images", type=int, required=True, help="images per timed pass")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--passes", type=int, default=1, help="timed passes after one warm-up pass (median reported)")
    args = ap.parse_args()
    try:
        with open(args.augment) as f:
            aug = json.load(f)
        jpegs = read_jpegs(args.shards)
    except (OSError, ValueError, tarfile.TarError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if not jpegs or args.images < 1:
        print("error: no .jpg member in --shards (or --images < 1)", file=sys.stderr)
        sys.exit(2)
    if aug["channels"] != 3:
        print("error: the peer supports 3-channel configs only", file=sys.stderr)
        sys.exit(2)
    jpegs = (jpegs * (args.images // len(jpegs) + 1))[: args.images]
    ds = TwinViews(jpegs, aug)
    dl = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                     persistent_workers=args.workers > 0, drop_last=False)
    rates = []
    for p in range(args.passes + 1):
        t = time.perf_counter()
        n = 0
        for a, b in dl:
            n += a.shape[0]
        s = time.perf_counter() - t
        if p > 0:
            rates.append(n / s)
    rates.sort()
    print(json.dumps({
        "images_per_s": rates[len(rates) // 2],
        "images": args.images,
        "passes": args.passes,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }))


if __name__ == "__main__":
    main()
