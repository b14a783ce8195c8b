"""AdamW (Loshchilov & Hutter 2019) over a model's flat parameter buffer.

The store lays the weight-decayed tensors (matrices, embeddings) out first, so the two
parameter groups are two slices: `flat[:n_decay]` steps with weight decay,
`flat[n_decay:]` (biases, LayerNorm) without. Each slice is one fused `ops.adamw_step`
(torch.optim.AdamW's update). The moments m, v are flat twins of the parameter buffer.
"""
from __future__ import annotations

import numpy as np

from .. import ops


class AdamW:
    def __init__(self, model_or_store, lr: float = 3e-4, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        store = getattr(model_or_store, "store", model_or_store)
        if getattr(store, "flat", None) is None:
            raise TypeError("AdamW: expected a Model or an allocated ParamStore")
        if not lr >= 0 or not eps > 0 or not weight_decay >= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"AdamW: invalid hyper-parameters lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        self.store = store
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), tuple(map(float, betas)), float(eps), float(weight_decay)
        self.m = np.zeros_like(store.flat)
        self.v = np.zeros_like(store.flat)
        self.step_count = 0

    def step(self, lr: float | None = None) -> None:
        """One update with the gradients in `store.flat_grad` (lr overrides the default)."""
        self.step_count += 1
        lr = self.lr if lr is None else float(lr)
        s, nd = self.store, self.store.n_decay
        b1, b2 = self.betas
        for sl, wd in ((slice(0, nd), self.weight_decay), (slice(nd, None), 0.0)):
            p = s.flat[sl]
            if p.size:
                ops.adamw_step(p, s.flat_grad[sl], self.m[sl], self.v[sl], self.step_count, lr,
                               beta1=b1, beta2=b2, eps=self.eps, weight_decay=wd)

    def state_dict(self) -> tuple[dict, dict]:
        """(tensors {"exp_avg": m, "exp_avg_sq": v}, JSON-able scalars)."""
        return ({"exp_avg": self.m, "exp_avg_sq": self.v},
                {"step": self.step_count, "lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                 "weight_decay": self.weight_decay, "n_decay": int(self.store.n_decay)})

    def load_state_dict(self, tensors: dict, scalars: dict) -> None:
        for name, buf in (("exp_avg", self.m), ("exp_avg_sq", self.v)):
            a = np.asarray(tensors[name])
            if a.shape != buf.shape:
                raise ValueError(f"AdamW.load_state_dict: {name} has shape {a.shape}, the model's flat buffer "
                                 f"has shape {buf.shape}")
            buf[...] = a
        if int(scalars.get("n_decay", self.store.n_decay)) != self.store.n_decay:
            raise ValueError("AdamW.load_state_dict: the saved parameter-group split does not match this model")
        self.step_count = int(scalars["step"])
