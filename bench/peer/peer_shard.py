#!/usr/bin/env python3
"""Peer sharder for `dspnet-bench`'s shard part: Python webdataset's ShardWriter doing the job of
`dspnet-shard` on the same input, written the way a PyTorch user writes it (one process):

* --mode folder: DIR/<class>/<image>, classes sorted, files sorted, shuffled with --seed;
* --mode ilsvrc: a tar of per-synset tars (ILSVRC2012_img_train.tar's layout), read with
  tarfile, synsets in sorted order, each inner tar streamed (no shuffle: the cheapest order).

Each image is checked with PIL before it is written: --verify header opens it (reads the
header, as Image.open does), --verify full also decodes it (convert("RGB")); an image PIL
refuses is skipped. Samples are {__key__: stem, jpg|png: bytes, cls: index, json: {class,
source}}, ShardWriter(maxcount=--maxcount). Prints one JSON line:
{"images": ..., "skipped": ..., "seconds": ..., "images_per_s": ..., "webdataset": ..., "pillow": ...}
(seconds from the first file read to the last shard closed: imports and start-up excluded).
Exit code 3 when webdataset or PIL is missing, 2 on bad input.
"""
import argparse
import io
import json
import os
import random
import sys
import tarfile
import time

try:
    import PIL
    import webdataset as wds
    from PIL import Image
except ImportError as e:  # the bench reports the peer as not measured
    print(f"error: {e}; install webdataset and pillow (tools/setup.sh)", file=sys.stderr)
    sys.exit(3)


def check(data, full):
    """The format PIL finds ("jpg", "png", "webp"), or None when PIL cannot use the image."""
    try:
        im = Image.open(io.BytesIO(data))
        im.size
        if full:
            im.convert("RGB")
        return {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}.get(im.format)
    except Exception:
        return None


def folder_items(root, seed):
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    items = []
    for ci, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(root, c))):
            if f.lower().endswith((".jpg", ".jpeg", ".png", ".webp")):
                items.append((os.path.join(root, c, f), ci, c, f"{c}/{f}"))
    random.Random(seed).shuffle(items)
    for path, ci, c, source in items:
        with open(path, "rb") as fh:
            data = fh.read()
        key = f"{c}_{os.path.splitext(os.path.basename(path))[0]}"
        yield key, data, ci, c, source


def ilsvrc_items(path):
    outer = tarfile.open(path, "r:")
    synsets = sorted((m for m in outer.getmembers() if m.name.endswith(".tar")), key=lambda m: m.name)
    for ci, m in enumerate(synsets):
        wnid = os.path.basename(m.name)[:-4]
        with tarfile.open(fileobj=outer.extractfile(m), mode="r|") as inner:
            for ti in inner:
                if not ti.isfile():
                    continue
                data = inner.extractfile(ti).read()
                name = os.path.basename(ti.name)
                yield os.path.splitext(name)[0], data, ci, wnid, name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["folder", "ilsvrc"], required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--maxcount", type=int, default=10000)
    ap.add_argument("--verify", choices=["header", "full"], default="header")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not os.path.exists(a.input):
        print(f"error: {a.input} does not exist", file=sys.stderr)
        sys.exit(2)
    os.makedirs(a.output, exist_ok=True)
    full = a.verify == "full"
    t = time.perf_counter()
    items = folder_items(a.input, a.seed) if a.mode == "folder" else ilsvrc_items(a.input)
    n = skipped = 0
    with wds.ShardWriter(os.path.join(a.output, "train-%06d.tar"), maxcount=a.maxcount, verbose=0) as sink:
        for key, data, ci, cname, source in items:
            ext = check(data, full)
            if ext is None:
                skipped += 1
                continue
            sink.write({"__key__": key, ext: data, "cls": ci, "json": {"class": cname, "source": source}})
            n += 1
    s = time.perf_counter() - t
    print(json.dumps({"images": n, "skipped": skipped, "seconds": s, "images_per_s": (n + skipped) / s,
                      "webdataset": getattr(wds, "__version__", "?"), "pillow": PIL.__version__}))


if __name__ == "__main__":
    main()
