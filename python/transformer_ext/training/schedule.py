"""Learning-rate schedules: `lr = schedule(step)` for the update number step = 1, 2, ...

WarmupCosine (GPT-2 / nanoGPT style):
    step ≤ warmup:           lr_max · step / warmup                          (linear warm-up)
    warmup < step ≤ total:   lr_min + ½(lr_max − lr_min)(1 + cos(π · (step − warmup)/(total − warmup)))
    step > total:            lr_min
`total_steps=None` (not known yet, e.g. a wall-clock budget) holds lr_max after the warm-up
until it is set.
"""
from __future__ import annotations

import math


class Constant:
    def __init__(self, lr: float, warmup_steps: int = 0):
        self.lr, self.warmup_steps, self.total_steps = float(lr), int(warmup_steps), None

    def __call__(self, step: int) -> float:
        if self.warmup_steps and step <= self.warmup_steps:
            return self.lr * step / self.warmup_steps
        return self.lr


class WarmupCosine:
    def __init__(self, lr: float, warmup_steps: int, total_steps: int | None, min_lr: float = 0.0):
        if lr < 0 or min_lr < 0 or warmup_steps < 0:
            raise ValueError(f"WarmupCosine: invalid lr={lr}, min_lr={min_lr}, warmup_steps={warmup_steps}")
        self.lr, self.min_lr, self.warmup_steps = float(lr), float(min_lr), int(warmup_steps)
        self.total_steps = None if total_steps is None else int(total_steps)

    def __call__(self, step: int) -> float:
        if self.warmup_steps and step <= self.warmup_steps:
            return self.lr * step / self.warmup_steps
        if self.total_steps is None:
            return self.lr
        if step > self.total_steps:
            return self.min_lr
        span = max(1, self.total_steps - self.warmup_steps)
        progress = (step - self.warmup_steps) / span
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))
