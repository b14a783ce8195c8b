"""`tx.gradcheck(model_or_layer, inputs)`: check a hand-written backward against central
finite differences, in float64 on the NumPy backend.

The scalar checked is L = Σ y ⊙ g for a fixed random g (so backward receives dL/dy = g).
For a sample of entries of every parameter (and of every float input of a layer):

    numeric = (L(θ + h) − L(θ − h)) / 2h,   h = 1e-6
    rel err = |backward − numeric| / max(|backward|, |numeric|, atol / rtol)
    (the floor treats an entry whose gradient is tiny by its absolute error: an entry passes
    iff its error is within rtol relatively or atol absolutely)

With h = 1e-6 in float64 the truncation error is O(h²) ~ 1e-12 and the rounding error
~ ε·|L|/h ~ 1e-10·|L|, so a correct backward shows relative errors around 1e-7 or below;
a wrong one shows errors of order 1. Dropout masks are held fixed by reseeding the model's
dropout generators before every forward.

A float32 model with a `config` is copied to float64 (same weights); a layer must have been
built in a float64 ParamStore.
"""
from __future__ import annotations

import numpy as np

from . import _backend
from .nn.dropout import Dropout


class GradcheckReport(dict):
    """name → max relative error; `.rows` (name, shape, checked, max abs err, max rel err, ok),
    `.passed`, `.failed` (names), `.table` (the printed text)."""

    rows: list
    table: str

    @property
    def failed(self) -> list:
        return [r[0] for r in self.rows if not r[5]]

    @property
    def passed(self) -> bool:
        return not self.failed


def _as_float64_model(model):
    """The same model in float64 (models with a config and a registered architecture)."""
    if model.dtype == np.float64:
        return model
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError("gradcheck: the layer's parameters are float32; build it in a ParamStore(np.float64) "
                        "(finite differences need float64)")
    clone = type(model)(config, dtype=np.float64)
    clone.load_state_dict(model.parameters())  # (the padding layout differs with the dtype)
    if not model.training:
        clone.eval()
    return clone


def _params(module):
    """(name, value, grad) for every parameter."""
    store = getattr(module, "store", None)
    if store is not None and getattr(store, "flat", None) is not None:
        grads = store.gradients()
        return [(n, v, grads[n]) for n, v in store.parameters().items()], store.zero_grad
    ps = module.params()

    def zero():
        for p in ps:
            p.grad[...] = 0
    return [(p.name, p.value, p.grad) for p in ps], zero


def _output(y):
    if isinstance(y, tuple):
        y = y[0]
    if not isinstance(y, np.ndarray):
        for attr in ("logits", "last_hidden_state"):
            if isinstance(getattr(y, attr, None), np.ndarray):
                return getattr(y, attr)
        raise TypeError(f"gradcheck: the forward returned {type(y).__name__}; pass forward=fn returning an array")
    return y


def gradcheck(model_or_layer, inputs, *, samples: int = 5, h: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-8,
              seed: int = 0, forward=None, check_inputs: bool = True, dropout_seed: int = 1234,
              verbose: bool = True, file=None) -> GradcheckReport:
    """Finite-difference check of every parameter's gradient (`samples` entries each).

    inputs: one array or a tuple of positional inputs (e.g. ids for a model; x for a layer).
    forward: optional fn(module, *inputs) → output array (default: module(*inputs)); the
    module's backward(g) must take the output's gradient. Prints the table (verbose) and
    returns a GradcheckReport (a dict name → max relative error)."""
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    inputs = tuple(np.array(x, dtype=np.float64) if isinstance(x, np.ndarray) and x.dtype.kind == "f" else x
                   for x in inputs)
    with _backend.use_backend("numpy"):
        module = _as_float64_model(model_or_layer) if hasattr(model_or_layer, "store") else model_or_layer
        params, zero_grad = _params(module)
        if not params:
            raise ValueError("gradcheck: the module has no parameters")
        if any(v.dtype != np.float64 for _, v, _ in params):
            raise TypeError("gradcheck: parameters must be float64 (build the layer in a ParamStore(np.float64))")
        rngs = {id(m.rng): m.rng for m in module.modules() if isinstance(m, Dropout)}
        if hasattr(module, "rng"):
            rngs[id(module.rng)] = module.rng
        call = forward or (lambda mod, *xs: mod(*xs))

        def fwd():
            for r in rngs.values():
                r.seed(dropout_seed)
            return _output(call(module, *inputs))

        rng = np.random.default_rng(seed)
        y = fwd()
        g = rng.standard_normal(y.shape)
        zero_grad()
        y = fwd()
        dins = module.backward(g)
        dins = dins if isinstance(dins, tuple) else (dins,)
        analytic = [(n, v, gr.copy()) for n, v, gr in params]
        if check_inputs:
            floats = [x for x in inputs if isinstance(x, np.ndarray) and x.dtype.kind == "f"]
            analytic += [(f"input[{i}]", x, np.asarray(d)) for i, (x, d) in enumerate(zip(floats, dins))
                         if isinstance(d, np.ndarray) and d.shape == x.shape]

        def loss():
            return float(np.sum(fwd() * g))

        report = GradcheckReport()
        report.rows = []
        for name, value, grad in analytic:
            idxs = rng.choice(value.size, size=min(samples, value.size), replace=False) if value.size else []
            worst_abs = worst_rel = 0.0
            for flat_i in idxs:
                idx = np.unravel_index(flat_i, value.shape)
                n, a = central_difference(loss, value, idx, h), float(grad[idx])
                err = abs(a - n)
                rel = err / max(abs(a), abs(n), atol / rtol)
                worst_abs, worst_rel = max(worst_abs, err), max(worst_rel, rel)
            ok = worst_rel <= rtol
            report[name] = worst_rel
            report.rows.append((name, tuple(value.shape), len(idxs), worst_abs, worst_rel, ok))
    report.table = _table(report.rows, rtol)
    if verbose:
        print(report.table, file=file, flush=True)
    return report


def central_difference(loss, value: np.ndarray, idx, h: float = 1e-6) -> float:
    """(loss() at value[idx] + h − loss() at value[idx] − h) / 2h, restoring value[idx] after."""
    old = value[idx]
    value[idx] = old + h
    lp = loss()
    value[idx] = old - h
    lm = loss()
    value[idx] = old
    return (lp - lm) / (2 * h)


def _table(rows, rtol) -> str:
    w = max([len("parameter")] + [len(r[0]) for r in rows])
    head = f"{'parameter':<{w}}  {'shape':<16} {'n':>3}  {'max abs err':>11}  {'max rel err':>11}  status"
    lines = [head, "-" * len(head)]
    for name, shape, n, ab, rel, ok in rows:
        lines.append(f"{name:<{w}}  {str(shape):<16} {n:>3}  {ab:>11.3e}  {rel:>11.3e}  {'ok' if ok else 'FAIL'}")
    bad = sum(1 for r in rows if not r[5])
    lines.append(f"{len(rows)} tensors checked, {bad} failed (rtol {rtol:g})"
                 + ("" if not bad else ": " + ", ".join(r[0] for r in rows if not r[5])))
    return "\n".join(lines)


__all__ = ["gradcheck", "GradcheckReport", "central_difference"]
