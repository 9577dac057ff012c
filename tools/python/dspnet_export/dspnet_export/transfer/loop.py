"""Fine-tuning: the learning-rate schedule, the training loop (SGD, gradient clipping, loss
statistics), the seeded batch order and the padding of segmentation batches."""

from __future__ import annotations

import math
import random
import sys
from typing import Callable, Iterable, List, Sequence, TypeVar

import numpy as np

from .data import IGNORE
from .models import set_bn_mode
from .settings import TransferSettings

T = TypeVar("T")


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up from ``base / 100`` over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return base * (0.01 + 0.99 * step / max(1, warmup))
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * t))


def train_loop(model, body, batches_fn: Callable[[int], Iterable], settings: TransferSettings, loss_fn) -> dict:
    """SGD (momentum ``settings.momentum``, weight decay ``settings.weight_decay``, learning rate
    :func:`lr_at`), gradient norm clipped to ``settings.grad_clip_norm``, for ``settings.steps``
    steps at most over ``settings.epochs`` epochs; ``body``'s BN as ``settings.bn`` says
    (:func:`~.models.set_bn_mode`). ``batches_fn(epoch)`` yields batches, ``loss_fn(model,
    batch)`` returns the scalar loss.

    Returns loss statistics (steps, first, last, mean of the last 10 %, finite, history rounded
    to 5 decimals); raises ``FloatingPointError`` on a non-finite loss."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    total = settings.steps
    losses: List[float] = []
    step = 0
    model.train()
    set_bn_mode(body, settings.bn == "frozen")
    for epoch in range(settings.epochs):
        if step >= total:
            break
        for batch in batches_fn(epoch):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, settings.lr, settings.warmup_steps)
            loss = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} at step {step}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip_norm)
            opt.step()
            losses.append(float(loss.item()))
            step += 1
            if settings.verbose:
                print(f"step {step}/{total} loss {losses[-1]:.4f}", file=sys.stderr, flush=True)
            if step >= total:
                break
    tail = losses[-max(1, len(losses) // 10):] if losses else []
    return {"steps": step, "first": losses[0] if losses else None, "last": losses[-1] if losses else None,
            "mean_last_10pct": float(np.mean(tail)) if tail else None,
            "finite": bool(all(math.isfinite(v) for v in losses)), "history": [round(v, 5) for v in losses]}


def epoch_batches(items: Sequence[T], batch: int, seed: int, epoch: int, shuffle: bool) -> List[List[T]]:
    """``items`` in batches of ``batch`` (the last one shorter), in order or, with ``shuffle``, in
    an order drawn from ``seed`` and ``epoch``."""
    order = list(range(len(items)))
    if shuffle:
        random.Random(seed * 1000003 + epoch).shuffle(order)
    return [[items[i] for i in order[j:j + batch]] for j in range(0, len(order), batch)]


def pad_batch(imgs, targets, multiple: int = 32):
    """Pads to a common size (a multiple of ``multiple``): images with 0, targets with
    :data:`~.data.IGNORE` (``targets=None``: all IGNORE). Returns ``[B, 3, H, W]`` float32 and
    ``[B, H, W]`` int64."""
    import torch

    h = max(x.shape[-2] for x in imgs)
    w = max(x.shape[-1] for x in imgs)
    h, w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    x = torch.zeros(len(imgs), 3, h, w)
    y = torch.full((len(imgs), h, w), IGNORE, dtype=torch.long)
    for i, img in enumerate(imgs):
        x[i, :, : img.shape[-2], : img.shape[-1]] = img
        if targets is not None:
            y[i, : targets[i].shape[-2], : targets[i].shape[-1]] = targets[i]
    return x, y
