"""NumPy reference implementation of every op: the fallback backend, the test oracle
and the benchmark baseline.

Every function computes in the dtype of its float inputs (float32 or float64); only
scalar losses are accumulated in float64. Nothing here validates its arguments beyond
what NumPy itself does -- the public wrappers in ``ops/*.py`` do that. The signatures
are those of the public API (see ``ops/__init__.py``):

    y = op(inputs..., return_saved=False)
    y, saved = op(inputs..., return_saved=True)
    grads = op_backward(dy, inputs..., saved)    # saved=None recomputes what is needed

``erf`` (for the exact GELU) comes from ``scipy.special.erf`` when SciPy is importable;
otherwise from ``math.erf`` applied element-wise through ``np.frompyfunc`` -- correctly
rounded in float64 (good enough for float64 gradient checks) but ~50x slower. NumPy is
the only required dependency.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "matmul", "matmul_backward", "feed_forward", "feed_forward_backward",
    "softmax", "softmax_backward", "layer_norm", "layer_norm_backward",
    "gelu", "gelu_backward", "relu", "relu_backward",
    "attention", "attention_backward", "attention_mask_to_additive", "attention_dropout_mask",
    "attention_dropout_factors",
    "embedding", "embedding_backward", "sinusoidal_positions",
    "cross_entropy", "adamw_step", "erf",
]

try:  # optional: fast vectorised erf
    from scipy.special import erf as _scipy_erf  # type: ignore[import-not-found]
except Exception:  # pragma: no cover - depends on the environment
    _scipy_erf = None

_math_erf_ufunc = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    """erf(x) element-wise, in x's dtype (scipy if available, else math.erf per element)."""
    x = np.asarray(x)
    if _scipy_erf is not None:
        return _scipy_erf(x).astype(x.dtype, copy=False)
    return np.asarray(_math_erf_ufunc(x), dtype=np.float64).astype(x.dtype, copy=False)


def _rows(a):
    """a as 2-D (rows, last axis); a.reshape(-1, n) fails when n = 0."""
    return a.reshape(math.prod(a.shape[:-1]), a.shape[-1])


def _ret(y, saved, return_saved):
    return (y, saved) if return_saved else y


# --------------------------------------------------------------------------- matmul
def matmul(x, w, b=None, transpose_w=False, return_saved=False):
    """y = x @ w + b  (x: (..., K); w: (K, N), or (N, K) used as wᵀ when transpose_w; b: (N,)).

    saved = None (the backward needs only the inputs)."""
    y = np.matmul(x, w.T if transpose_w else w)
    if b is not None:
        y += b
    return _ret(y, None, return_saved)


def matmul_backward(dy, x, w, b=None, saved=None, transpose_w=False):
    """dx = dy @ wᵀ,  dw = xᵀ @ dy  (or dyᵀ @ x when transpose_w: dw keeps w's layout),
    db = Σ_rows dy (None when b is None). Leading axes of x/dy are flattened to rows."""
    K = x.shape[-1]
    N = dy.shape[-1]
    dx = np.matmul(dy, w if transpose_w else w.T)
    M = int(np.prod(x.shape[:-1], dtype=np.int64))  # explicit: reshape(-1, 0) can't infer rows
    x2 = x.reshape(M, K)
    dy2 = dy.reshape(M, N)
    dw = np.matmul(dy2.T, x2) if transpose_w else np.matmul(x2.T, dy2)
    db = None if b is None else dy2.sum(axis=0)
    return dx, dw, db


# --------------------------------------------------------------------------- softmax
def softmax(x, return_saved=False):
    """y_i = exp(x_i - max x) / Σ_j exp(x_j - max x) over the last axis.

    A row of all -inf gives zeros (no NaN, no warning). saved = y."""
    m = np.max(x, axis=-1, keepdims=True) if x.shape[-1] else np.zeros(x.shape[:-1] + (1,), x.dtype)
    m = np.where(np.isneginf(m), np.zeros((), x.dtype), m)  # all -inf row: exp(-inf - 0) = 0
    e = np.exp(x - m)
    s = np.sum(e, axis=-1, keepdims=True)
    y = e / np.where(s == 0, np.ones((), x.dtype), s)
    return _ret(y, y, return_saved)


def softmax_backward(dy, x, saved=None):
    """dx = y ⊙ (dy - Σ_j dy_j y_j) with y = softmax(x) (taken from saved when given)."""
    y = saved if saved is not None else softmax(x)
    return y * (dy - np.sum(dy * y, axis=-1, keepdims=True))


# --------------------------------------------------------------------------- layer norm
def layer_norm(x, gamma, beta, eps=1e-5, return_saved=False):
    """y = (x - μ) · rstd · γ + β over the last axis, μ = mean(x), σ² = mean((x-μ)²)
    (biased), rstd = 1/√(σ² + eps). saved = (μ, rstd), each of shape x.shape[:-1]."""
    mean = np.mean(x, axis=-1, keepdims=True)
    xc = x - mean
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)  # eps is a weak Python scalar: stays in x's dtype
    rstd = rstd.astype(x.dtype, copy=False)
    y = xc * rstd * gamma + beta
    return _ret(y, (mean[..., 0], rstd[..., 0]), return_saved)


def layer_norm_backward(dy, x, gamma, beta, saved=None, eps=1e-5):
    """With x̂ = (x - μ)·rstd and g = dy ⊙ γ:
    dx = rstd · (g - mean(g) - x̂ · mean(g ⊙ x̂)),  dγ = Σ_rows dy ⊙ x̂,  dβ = Σ_rows dy."""
    if saved is None:
        _, saved = layer_norm(x, gamma, beta, eps, return_saved=True)
    mean, rstd = saved
    mean = mean[..., None]
    rstd = rstd[..., None]
    xhat = (x - mean) * rstd
    g = dy * gamma
    dx = rstd * (g - np.mean(g, axis=-1, keepdims=True) - xhat * np.mean(g * xhat, axis=-1, keepdims=True))
    n = x.shape[-1]
    dgamma = _rows(dy * xhat).sum(axis=0)
    dbeta = _rows(dy).sum(axis=0)
    return dx, dgamma, dbeta


# --------------------------------------------------------------------------- GELU / ReLU
_GELU_C = math.sqrt(2.0 / math.pi)  # √(2/π)
_GELU_A = 0.044715
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _check_approximate(approximate):
    if approximate not in ("tanh", "none"):
        raise ValueError(f"gelu: approximate must be 'tanh' or 'none', got {approximate!r}")


def gelu(x, approximate="tanh", return_saved=False):
    """"tanh": y = 0.5x(1 + tanh(√(2/π)(x + 0.044715x³)));  "none": y = 0.5x(1 + erf(x/√2)).
    saved = None."""
    _check_approximate(approximate)
    with np.errstate(over="ignore"):  # x³ may overflow to inf for huge x: tanh(±inf) = ±1 is right
        if approximate == "tanh":
            t = np.tanh(_GELU_C * (x + _GELU_A * (x * x * x)))
        else:
            t = erf(x * _INV_SQRT2)
        y = 0.5 * x * (1 + t)
    return _ret(y, None, return_saved)


def gelu_backward(dy, x, saved=None, approximate="tanh"):
    """"tanh": dx = dy·[0.5(1+t) + 0.5x(1-t²)√(2/π)(1 + 3·0.044715x²)], t = tanh(√(2/π)(x+0.044715x³));
    "none": dx = dy·[0.5(1 + erf(x/√2)) + x·φ(x)], φ(x) = exp(-x²/2)/√(2π)."""
    _check_approximate(approximate)
    with np.errstate(over="ignore", invalid="ignore"):
        if approximate == "tanh":
            x2 = x * x
            t = np.tanh(_GELU_C * (x + _GELU_A * (x2 * x)))
            sech2 = 1 - t * t
            inner = (0.5 * x * sech2) * (_GELU_C * (1 + (3 * _GELU_A) * x2))
            inner = np.where(sech2 == 0, np.zeros((), x.dtype), inner)  # huge |x|: 0·inf -> 0
            d = 0.5 * (1 + t) + inner
        else:
            phi = np.exp(-0.5 * (x * x)) * _INV_SQRT_2PI
            xphi = np.where(phi == 0, np.zeros((), x.dtype), x * phi)
            d = 0.5 * (1 + erf(x * _INV_SQRT2)) + xphi
    return dy * d


def relu(x, return_saved=False):
    """y = max(x, 0) (NaN propagates). saved = None."""
    return _ret(np.maximum(x, np.zeros((), x.dtype)), None, return_saved)


def relu_backward(dy, x, saved=None):
    """dx = dy · [x > 0]  (0 at x == 0)."""
    return np.where(x > 0, dy, np.zeros((), dy.dtype))


# --------------------------------------------------------------------------- feed-forward
_ACTIVATIONS = {"gelu": "tanh", "gelu_tanh": "tanh", "gelu_erf": "none", "relu": None}


def _activation(activation):
    if activation not in _ACTIVATIONS:
        raise ValueError(f"feed_forward: activation must be one of {tuple(_ACTIVATIONS)}, got {activation!r}")
    return _ACTIVATIONS[activation]


def _act_forward(h, activation):
    appr = _activation(activation)
    return relu(h) if appr is None else gelu(h, approximate=appr)


def _act_backward(da, h, activation):
    appr = _activation(activation)
    return relu_backward(da, h) if appr is None else gelu_backward(da, h, approximate=appr)


def feed_forward(x, w1, b1, w2, b2, activation="gelu", return_saved=False):
    """h = x @ w1 + b1;  a = act(h);  y = a @ w2 + b2.  saved = h (shape (..., d_ff)).
    activation: "gelu" (= "gelu_tanh"), "gelu_erf" or "relu"."""
    _activation(activation)
    h = matmul(x, w1, b1)
    y = matmul(_act_forward(h, activation), w2, b2)
    return _ret(y, h, return_saved)


def feed_forward_backward(dy, x, w1, b1, w2, b2, saved=None, activation="gelu"):
    """Chain rule through matmul → act → matmul: returns (dx, dw1, db1, dw2, db2)
    (db* is None when the bias is None)."""
    h = saved if saved is not None else matmul(x, w1, b1)
    a = _act_forward(h, activation)
    da, dw2, db2 = matmul_backward(dy, a, w2, b2)
    dh = _act_backward(da, h, activation)
    dx, dw1, db1 = matmul_backward(dh, x, w1, b1)
    return dx, dw1, db1, dw2, db2


# --------------------------------------------------------------------------- attention
def attention_mask_to_additive(mask, B, H, Tq, Tk, dtype, causal=False):
    """Normalise an attention mask to an additive float array broadcastable to (B, H, Tq, Tk).

    - ``mask`` bool/integer and 2-D: key-padding mask of shape (B, Tk), True/nonzero = attend;
      returned with shape (B, 1, 1, Tk).
    - ``mask`` bool/integer of any other ndim (normally 4-D): broadcastable to (B, H, Tq, Tk)
      by NumPy rules, True/nonzero = attend.
    - ``mask`` float: additive, broadcastable to (B, H, Tq, Tk); values used as given
      (cast to ``dtype``).
    Boolean masks become 0 (attend) / -inf (masked). The result is always 4-D (leading
    singleton axes added) and of ``dtype``. ``causal=True`` additionally masks key j for
    query i when j > i + (Tk - Tq) (AND with the mask, i.e. -inf added). Returns None when
    ``mask`` is None and not causal. Shapes are not validated here (the ops wrapper does).
    """
    dtype = np.dtype(dtype)
    zero = np.zeros((), dtype)
    ninf = np.array(-np.inf, dtype)
    add = None
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype.kind in "biu":
            if mask.ndim == 2:
                mask = mask.reshape(mask.shape[0], 1, 1, mask.shape[1])
            add = np.where(mask.astype(bool, copy=False), zero, ninf)
        else:
            add = mask.astype(dtype, copy=False)
        if add.ndim < 4:
            add = add.reshape((1,) * (4 - add.ndim) + add.shape)
    if causal:
        i = np.arange(Tq)[:, None]
        j = np.arange(Tk)[None, :]
        c = np.where(j <= i + (Tk - Tq), zero, ninf).reshape(1, 1, Tq, Tk)
        add = c if add is None else add + c
    return add


_U64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(z):
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _fmix32(h, tmp):
    """MurmurHash3's finaliser on a uint32 array, in place (wrapping arithmetic); tmp: scratch."""
    for shift, mul in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        np.right_shift(h, np.uint32(shift), out=tmp)
        h ^= tmp
        h *= np.uint32(mul)
    np.right_shift(h, np.uint32(16), out=tmp)
    h ^= tmp
    return h


def attention_dropout_threshold(p) -> int:
    """Keep iff hash >= ceil(p·2^32), with p rounded to float32 first (as the C++ kernel
    receives it), so both backends derive the same integer threshold."""
    t = math.ceil(float(np.float32(p)) * 4294967296.0)
    return min(t, 0xFFFFFFFF)


def attention_dropout_mask(seed, B, H, Tq, Tk, p):
    """The attention-dropout keep mask M (B, H, Tq, Tk), bool, of the C++ kernel, bit for bit:

        z = mix64(mix64(mix64(mix64(seed + G) + (b+1)G) + (h+1)G) + (i+1)G)    per row
        x = fmix32(fmix32(hi32(z) + j) ^ lo32(z))                             per element
        keep iff x >= ceil(float32(p)·2^32)

    (mix64: SplitMix64's finaliser, G = 0x9E3779B97F4A7C15, fmix32: MurmurHash3's;
    arithmetic modulo 2^64 / 2^32.) A counter-based hash: any entry is a pure function of
    (seed, b, h, i, j), so the fused kernel recomputes it per tile and never stores it."""
    G = np.uint64(_GOLDEN)
    with np.errstate(over="ignore"):
        z = _mix64(np.array([(int(seed) + _GOLDEN) & _U64], np.uint64))             # (1,)
        z = _mix64(z[:, None] + (np.arange(B, dtype=np.uint64) + np.uint64(1)) * G)  # (1, B)
        z = _mix64(z[..., None] + (np.arange(H, dtype=np.uint64) + np.uint64(1)) * G)
        z = _mix64(z[..., None] + (np.arange(Tq, dtype=np.uint64) + np.uint64(1)) * G)
        z = z.reshape(B, H, Tq, 1)
        lo = (z & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        hi = (z >> np.uint64(32)).astype(np.uint32)
        j = np.arange(Tk, dtype=np.uint64).astype(np.uint32)  # j mod 2^32
        x = hi + j
        tmp = np.empty_like(x)
        _fmix32(x, tmp)
        x ^= lo
        _fmix32(x, tmp)
    return x >= np.uint32(attention_dropout_threshold(p))


def attention_dropout_factors(seed, B, H, Tq, Tk, p, dtype):
    """M/(1−p) as a `dtype` array (B, H, Tq, Tk), or None when p == 0 (1/(1−p) from the
    float32 p in float32, as the kernel computes it)."""
    dtype = np.dtype(dtype)
    if not p:
        return None
    keep = attention_dropout_mask(seed, B, H, Tq, Tk, p)
    ks = dtype.type(1.0 / (1.0 - float(np.float32(p)))) if dtype == np.float32 else dtype.type(1.0 / (1.0 - p))
    f = keep.astype(dtype)
    f *= ks
    return f


def _attention_scores(q, k, causal, mask):
    """s = q kᵀ / √d_k + additive mask, shape (B, H, Tq, Tk)."""
    B, H, Tq, D = q.shape
    Tk = k.shape[-2]
    scale = q.dtype.type(1.0 / math.sqrt(D)) if D else q.dtype.type(1.0)
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    add = attention_mask_to_additive(mask, B, H, Tq, Tk, q.dtype, causal=causal)
    if add is not None:
        s = s + add
    return s, scale


def attention(q, k, v, causal=False, mask=None, return_saved=False, dropout_p=0.0, seed=None):
    """out = (P ⊙ M/(1−p)) v with P = softmax(q kᵀ/√d_k + mask)  (q: (B,H,Tq,D); k, v: (B,H,Tk,D)).

    causal: query i sees key j iff j <= i + (Tk - Tq). mask: see attention_mask_to_additive.
    dropout_p = p > 0: attention dropout with the keep mask M = attention_dropout_mask(seed, ...)
    (p = 0: M/(1−p) = 1). A query row with no visible key gives 0. saved = (out, lse) with
    lse = log Σ_j exp(s_ij) of shape (B,H,Tq) (undropped; -inf for a fully masked row)."""
    s, _ = _attention_scores(q, k, causal, mask)
    zero = np.zeros((), s.dtype)
    m = np.max(s, axis=-1, keepdims=True) if s.shape[-1] else np.full(s.shape[:-1] + (1,), -np.inf, s.dtype)
    m = np.where(np.isneginf(m), zero, m)
    e = np.exp(s - m)
    l = np.sum(e, axis=-1, keepdims=True)
    empty = l == 0
    l = np.where(empty, np.ones((), s.dtype), l)
    p = e / l
    B, H, Tq, Tk = s.shape
    f = attention_dropout_factors(seed, B, H, Tq, Tk, dropout_p, s.dtype)
    out = np.matmul(p if f is None else p * f, v)
    lse = np.where(empty, np.array(-np.inf, s.dtype), m + np.log(l))[..., 0]
    return _ret(out, (out, lse), return_saved)


def attention_backward(dout, q, k, v, saved=None, causal=False, mask=None, dropout_p=0.0, seed=None):
    """With P = softmax(S) (recomputed as exp(S - lse)), F = M/(1−p) the dropout factors
    (1 without dropout), P̃ = P ⊙ F, and D_i = Σ_d dout_id out_id = Σ_j P_ij dP_ij:
    dv = P̃ᵀ dout;  dP = (dout vᵀ) ⊙ F;  dS = P ⊙ (dP - D);  dq = dS k / √d_k;  dk = dSᵀ q / √d_k.
    Fully masked rows (lse = -inf) have P = 0 and contribute no gradient."""
    s, scale = _attention_scores(q, k, causal, mask)
    zero = np.zeros((), s.dtype)
    if saved is None:
        p = softmax(s)
        out = None
    else:
        out, lse = saved
        lse = lse[..., None]
        finite = ~np.isneginf(lse)
        lse_safe = np.where(finite, lse, zero)
        p = np.where(finite, np.exp(s - lse_safe), zero)
    B, H, Tq, Tk = s.shape
    f = attention_dropout_factors(seed, B, H, Tq, Tk, dropout_p, s.dtype)
    dv = np.matmul(np.swapaxes(p if f is None else p * f, -1, -2), dout)
    dp = np.matmul(dout, np.swapaxes(v, -1, -2))
    if f is not None:
        dp = dp * f
    if out is not None:
        d = np.sum(dout * out, axis=-1, keepdims=True)
    else:
        d = np.sum(p * dp, axis=-1, keepdims=True)
    ds = p * (dp - d)
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return dq, dk, dv


# --------------------------------------------------------------------------- embeddings
def embedding(ids, table, return_saved=False):
    """out[..., :] = table[ids[...], :]. saved = None."""
    return _ret(table[ids], None, return_saved)


def embedding_backward(dy, ids, table, saved=None):
    """dtable[v] = Σ_{positions p with ids[p] == v} dy[p]  (scatter-add; repeated ids accumulate)."""
    d = table.shape[-1]
    dtable = np.zeros(table.shape, dtype=dy.dtype)
    np.add.at(dtable, np.asarray(ids).reshape(-1), _rows(dy))
    return dtable


def sinusoidal_positions(T, d, dtype=np.float32):
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d)), shape (T, d)
    (odd d: the last column is the sin of the next pair). Computed in float64, cast to dtype."""
    pos = np.arange(T, dtype=np.float64)[:, None]
    col = np.arange(d)
    two_i = (col - (col % 2)).astype(np.float64)  # 2i for both columns of a pair
    angle = pos / np.power(10000.0, two_i / d) if d else np.zeros((T, 0))
    pe = np.where(col % 2 == 0, np.sin(angle), np.cos(angle))
    return pe.astype(dtype)


# --------------------------------------------------------------------------- loss
def cross_entropy(logits, targets, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """PyTorch's F.cross_entropy over logits (..., V) and int targets (...):
    loss_n = (1-ε)·(-log p_n[t_n]) + ε·mean_j(-log p_n[j]),  p_n = softmax(logits_n);
    targets == ignore_index are skipped; "mean" divides by the number of kept targets, "sum" doesn't.
    dlogits_n = (p_n - (1-ε)·onehot(t_n) - ε/V) / (N_kept if "mean" else 1); 0 for skipped rows.
    Returns (loss as a Python float, dlogits in logits' dtype); all skipped -> (0.0, zeros)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"cross_entropy: reduction must be 'mean' or 'sum', got {reduction!r}")
    V = logits.shape[-1]
    x = _rows(logits)
    t = np.asarray(targets).reshape(-1)
    keep = t != ignore_index
    n_keep = int(np.count_nonzero(keep))
    dlogits = np.zeros(logits.shape, dtype=logits.dtype)
    if n_keep == 0 or V == 0:
        return 0.0, dlogits
    xk = x[keep]
    tk = t[keep].astype(np.intp)
    m = np.max(xk, axis=-1, keepdims=True)
    z = xk - m
    lse = np.log(np.sum(np.exp(z), axis=-1, keepdims=True))
    logp = z - lse  # log-softmax, in the logits' dtype
    eps = float(label_smoothing)
    nll = -np.take_along_axis(logp, tk[:, None], axis=-1)[:, 0].astype(np.float64)
    per_row = (1.0 - eps) * nll
    if eps:
        per_row = per_row + eps * (-np.mean(logp.astype(np.float64), axis=-1))
    total = float(np.sum(per_row))
    scale = 1.0 / n_keep if reduction == "mean" else 1.0
    g = np.exp(logp)
    if eps:
        g -= eps / V
    g[np.arange(g.shape[0]), tk] -= 1.0 - eps
    if scale != 1.0:
        g *= scale
    _rows(dlogits)[keep] = g
    return total * scale, dlogits


# --------------------------------------------------------------------------- optimiser
def adamw_step(params, grads, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    """One torch.optim.AdamW step t (1-based), in place on float32/float64 buffers:
    p *= 1 - lr·wd;  m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²;
    p -= (lr / (1-β1^t)) · m / (√v / √(1-β2^t) + eps).  Returns None."""
    step = int(step)
    lr, beta1, beta2, eps, weight_decay = float(lr), float(beta1), float(beta2), float(eps), float(weight_decay)
    if weight_decay != 0.0:
        params *= 1.0 - lr * weight_decay
    m *= beta1
    m += (1.0 - beta1) * grads
    v *= beta2
    v += ((1.0 - beta2) * grads) * grads  # not (1-β2)·(g·g): g·g overflows float32 from |g| ~ 1.8e19
    step_size = lr / (1.0 - beta1 ** step)
    bc2_sqrt = math.sqrt(1.0 - beta2 ** step)
    denom = np.sqrt(v) / bc2_sqrt + eps
    params -= step_size * (m / denom)
    return None
