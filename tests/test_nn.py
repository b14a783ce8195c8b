"""transformer_ext.nn layers and the parameter store.

Gradients: central finite differences in float64 on the NumPy backend, on a sample of
entries of every parameter and every float input, for the scalar loss L = Σ y ⊙ g with a
fixed random g (so dL/dy = g is what backward receives). With h = 1e-6 in float64 the
truncation error is O(h²) ~ 1e-12 and the rounding error ~ ε·|L|/h ~ 1e-9, so agreement to
1e-6 relative (atol 1e-8) is a real check. Then the cpp backend (float32) against the numpy
backend (float64) on the same weights.
"""
import math

import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext import nn
from transformer_ext.gradcheck import central_difference
from transformer_ext.models.params import ParamStore

H = 1e-6


# ---------------------------------------------------------------------------- helpers
def build(case, dtype=np.float64, seed=0):
    """Allocate a store for `case`, with every parameter (also LayerNorm γ/β and biases)
    randomised so that no gradient is trivially zero."""
    store = ParamStore(dtype, seed)
    layer, call, inputs = case(store)
    store.allocate()
    rng = np.random.default_rng(seed + 100)
    for p in layer.params():
        p.value[...] = p.value + rng.normal(0, 0.3, p.shape)
    return store, layer, call, inputs


def make_inputs(specs, dtype, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for spec in specs:
        if isinstance(spec, np.ndarray):  # fixed (int) input
            out.append(spec)
        else:
            out.append(rng.standard_normal(spec).astype(dtype))
    return out


def as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


def grad_check(case, samples=4, seed=0, reseed=None):
    """Finite differences vs backward for every parameter and float input of `case`."""
    with tx.use_backend("numpy"):
        store, layer, call, specs = build(case, np.float64, seed)
        inputs = make_inputs(specs, np.float64)
        rng = np.random.default_rng(seed + 7)

        def fwd():
            if reseed is not None:
                reseed(layer)
            return call(layer, *inputs)

        y = fwd()
        g = rng.standard_normal(y.shape)
        store.zero_grad()
        y = fwd()
        dins = as_tuple(layer.backward(g))
        loss = lambda: float(np.sum(fwd() * g))  # noqa: E731

        def numeric(arr, idx):
            return central_difference(loss, arr, idx, H)

        checked = 0
        targets = [(p.name, p.value, p.grad) for p in layer.params()]
        float_inputs = [x for x in inputs if x.dtype.kind == "f"]
        targets += [(f"input{i}", x, d) for i, (x, d) in enumerate(zip(float_inputs, dins)) if d is not None]
        for name, value, grad in targets:
            assert grad.shape == value.shape, name
            for flat_i in rng.choice(value.size, size=min(samples, value.size), replace=False):
                idx = np.unravel_index(flat_i, value.shape)
                n, a = numeric(value, idx), grad[idx]
                assert abs(a - n) <= 1e-8 + 1e-6 * max(abs(a), abs(n)), f"{name}{idx}: backward {a} vs numeric {n}"
                checked += 1
        assert checked > 0


def cpp_vs_numpy(case, rtol=2e-4, reseed=None):
    """The same layer, weights and inputs on cpp (float32) and numpy (float64): outputs and all
    gradients agree to float32 accuracy, relative to each array's largest entry (float32 rounding
    of sums of O(10-100) terms: ~1e-6·√n relative; 2e-4 leaves room for the tanh/exp kernels)."""
    results = {}
    for backend, dtype in (("numpy", np.float64), ("cpp", np.float32)):
        with tx.use_backend(backend):
            store, layer, call, specs = build(case, dtype)
            inputs = make_inputs(specs, dtype)
            if reseed is not None:
                reseed(layer)
            y = call(layer, *inputs)
            g = np.random.default_rng(5).standard_normal(y.shape).astype(dtype)
            store.zero_grad()
            dins = as_tuple(layer.backward(g))
            results[backend] = [y, *[d for d in dins if d is not None]] + [p.grad.copy() for p in layer.params()]
    # an array whose exact value is ~0 (the key bias's gradient: q·b_k shifts a whole softmax
    # row) holds only rounding noise: floor its scale at 1% of the case's largest array
    floor = 0.01 * max(np.abs(r).max() for r in results["numpy"])
    for ref, got in zip(results["numpy"], results["cpp"]):
        assert got.dtype == np.float32
        scale = max(np.abs(ref).max(), floor)
        np.testing.assert_allclose(got, ref, rtol=0, atol=rtol * scale)


# ---------------------------------------------------------------------------- cases
# Each case: store -> (layer, call(layer, *inputs) -> output, input specs (shapes or fixed arrays)).
def linear_case(layout, bias):
    def case(s):
        return nn.Linear.create(s, "lin", 5, 7, bias=bias, layout=layout), lambda L, x: L(x), [(2, 3, 5)]
    return case


def layer_norm_case(s):
    return nn.LayerNorm.create(s, "ln", 6, eps=1e-5), lambda L, x: L(x), [(3, 4, 6)]


IDS = np.array([[1, 3, 3, 0], [7, 1, 2, 3]])


def embedding_case(s):
    return nn.Embedding.create(s, "emb.weight", 8, 5), lambda L, ids: L(ids), [IDS]


def positions_case(s):
    return nn.LearnedPositions.create(s, "pos.weight", 10, 5), lambda L, x: L(x, offset=3), [(2, 4, 5)]


def ffn_case(activation, layout, inner_dropout=0.0):
    def case(s):
        fc1 = nn.Linear.create(s, "fc1", 6, 10, layout=layout)
        fc2 = nn.Linear.create(s, "fc2", 10, 6, layout=layout)
        drop = nn.Dropout(inner_dropout, nn.DropoutRNG(0)) if inner_dropout else None
        return nn.FeedForward(fc1, fc2, activation, drop), lambda L, x: L(x), [(2, 3, 6)]
    return case


D, NH = 8, 2
PAD = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=bool)


def mha_case(kind, causal=False, mask=None, attn_p=0.0, return_attention=False, Tq=5, Tk=5):
    def case(s):
        drop = nn.Dropout(attn_p, nn.DropoutRNG(0)) if attn_p else None
        out = nn.Linear.create(s, "o", D, D)
        if kind == "fused_qkv":
            layer = nn.MultiHeadAttention(NH, out, qkv=nn.Linear.create(s, "qkv", D, 3 * D), causal=causal, attn_dropout=drop)
        elif kind == "packed_rows":  # torch's in_proj_weight (3d, d), self-attention
            layer = nn.MultiHeadAttention(NH, out, qkv=nn.Linear.create(s, "in_proj", D, 3 * D, layout="out_in"),
                                          causal=causal, attn_dropout=drop)
        elif kind in ("separate", "cross"):
            layer = nn.MultiHeadAttention(NH, out, q=nn.Linear.create(s, "q", D, D, layout="out_in"),
                                          k=nn.Linear.create(s, "k", D, D, layout="out_in"),
                                          v=nn.Linear.create(s, "v", D, D, layout="out_in"), causal=causal, attn_dropout=drop)
        elif kind == "cross_packed_rows":  # torch's in_proj (3d, d) split into q rows and k|v rows
            w, b = s.declare("in_proj_weight", (3 * D, D)), s.declare("in_proj_bias", (3 * D,), init="zeros")
            layer = nn.MultiHeadAttention(NH, out, q=nn.Linear(w.rows(0, D), b.rows(0, D), "out_in"),
                                          kv=nn.Linear(w.rows(D, 3 * D), b.rows(D, 3 * D), "out_in"),
                                          causal=causal, attn_dropout=drop)
        elif kind == "cross_kv":
            layer = nn.MultiHeadAttention(NH, out, q=nn.Linear.create(s, "q", D, D), kv=nn.Linear.create(s, "kv", D, 2 * D),
                                          causal=causal, attn_dropout=drop)
        cross = kind.startswith("cross")

        def call(L, x, *mem):
            r = L(x, mem[0] if cross else None, mask=mask, return_attention=return_attention)
            return r[0] if return_attention else r
        specs = [(2, Tq, D)] + ([(2, Tk, D)] if cross else [])
        return layer, call, specs
    return case


def dropout_case(s):
    return nn.Dropout(0.3, nn.DropoutRNG(0)), lambda L, x: L(x), [(4, 6)]


def reseed_all(layer):
    for m in layer.modules():
        if isinstance(m, nn.Dropout):
            m.rng.seed(42)


def block_case(pre_ln, causal, p=0.0):
    def case(s):
        rng = nn.DropoutRNG(0)
        attn = nn.MultiHeadAttention(NH, nn.Linear.create(s, "attn.c_proj", D, D),
                                     qkv=nn.Linear.create(s, "attn.c_attn", D, 3 * D), causal=causal,
                                     attn_dropout=nn.Dropout(p, rng))
        ffn = nn.FeedForward(nn.Linear.create(s, "mlp.c_fc", D, 16), nn.Linear.create(s, "mlp.c_proj", 16, D), "gelu_tanh")
        block = nn.TransformerBlock(attn, ffn, nn.LayerNorm.create(s, "ln_1", D), nn.LayerNorm.create(s, "ln_2", D),
                                    nn.Dropout(p, rng), nn.Dropout(p, rng), pre_ln=pre_ln)
        mask = None if causal else PAD
        return block, lambda L, x: L(x, mask=mask), [(2, 5, D)]
    return case


def decoder_case(pre_ln=False, p=0.0):
    def case(s):
        rng = nn.DropoutRNG(0)
        lin = lambda name, a, b: nn.Linear.create(s, name, a, b, layout="out_in")  # noqa: E731
        sa = nn.MultiHeadAttention(NH, lin("sa.out", D, D), qkv=lin("sa.in", D, 3 * D), causal=True,
                                   attn_dropout=nn.Dropout(p, rng))
        ca = nn.MultiHeadAttention(NH, lin("ca.out", D, D), q=lin("ca.q", D, D), kv=lin("ca.kv", D, 2 * D),
                                   attn_dropout=nn.Dropout(p, rng))
        ffn = nn.FeedForward(lin("ff1", D, 12), lin("ff2", 12, D), "relu", nn.Dropout(p, rng))
        norms = [nn.LayerNorm.create(s, f"norm{i}", D) for i in (1, 2, 3)]
        block = nn.DecoderBlock(sa, ca, ffn, *norms, nn.Dropout(p, rng), nn.Dropout(p, rng), nn.Dropout(p, rng), pre_ln=pre_ln)
        return block, lambda L, x, m: L(x, m, memory_mask=PAD), [(2, 4, D), (2, 5, D)]
    return case


CASES = {
    "linear_in_out": linear_case("in_out", True),
    "linear_out_in": linear_case("out_in", True),
    "linear_nobias": linear_case("out_in", False),
    "layer_norm": layer_norm_case,
    "embedding": embedding_case,
    "learned_positions": positions_case,
    "ffn_gelu_tanh_fused": ffn_case("gelu_tanh", "in_out"),
    "ffn_gelu_erf_fused": ffn_case("gelu_erf", "in_out"),
    "ffn_relu_out_in": ffn_case("relu", "out_in"),
    "ffn_gelu_tanh_out_in": ffn_case("gelu_tanh", "out_in"),
    "mha_causal_fused_qkv": mha_case("fused_qkv", causal=True),
    "mha_packed_rows_padding": mha_case("packed_rows", mask=PAD),
    "mha_separate_causal_padding": mha_case("separate", causal=True, mask=PAD),
    "mha_cross": mha_case("cross", Tq=3, Tk=5, mask=PAD),
    "mha_cross_kv": mha_case("cross_kv", Tq=4, Tk=5, mask=PAD),
    "mha_cross_packed_rows": mha_case("cross_packed_rows", Tq=4, Tk=5, mask=PAD),
    "mha_explicit_causal": mha_case("fused_qkv", causal=True, return_attention=True),
    "mha_explicit_cross": mha_case("cross", Tq=3, Tk=5, mask=PAD, return_attention=True),
    "block_pre_ln_causal": block_case(True, True),
    "block_post_ln_padding": block_case(False, False),
    "decoder_post_ln": decoder_case(False),
    "decoder_pre_ln": decoder_case(True),
}

DROPOUT_CASES = {  # checked with the masks held fixed (reseeded before every forward)
    "dropout": dropout_case,
    "ffn_inner_dropout": ffn_case("gelu_tanh", "out_in", inner_dropout=0.2),
    "mha_attn_dropout": mha_case("fused_qkv", causal=True, attn_p=0.2),
    "block_dropout": block_case(True, True, p=0.2),
    "decoder_dropout": decoder_case(False, p=0.2),
}


# ---------------------------------------------------------------------------- gradient checks
@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    grad_check(CASES[name])


@pytest.mark.parametrize("name", list(DROPOUT_CASES))
def test_gradcheck_fixed_dropout_mask(name):
    grad_check(DROPOUT_CASES[name], reseed=reseed_all)


@pytest.mark.parametrize("name", list(CASES) + list(DROPOUT_CASES))
def test_cpp_matches_numpy(name, isa):
    case = CASES.get(name) or DROPOUT_CASES[name]
    cpp_vs_numpy(case, reseed=reseed_all)


# ---------------------------------------------------------------------------- layer semantics
def test_backward_accumulates_and_consumes_forward():
    with tx.use_backend("numpy"):
        store, layer, call, specs = build(CASES["linear_in_out"])
        (x,) = make_inputs(specs, np.float64)
        dy = np.ones((2, 3, 7))
        layer(x)
        layer.backward(dy)
        once = store.flat_grad.copy()
        layer(x)
        layer.backward(dy)
        np.testing.assert_allclose(store.flat_grad, 2 * once)
        with pytest.raises(RuntimeError, match="Linear.backward: nothing saved"):
            layer.backward(dy)  # the forward was consumed


def test_eval_keeps_nothing_and_backward_raises():
    with tx.use_backend("numpy"):
        store, block, call, specs = build(CASES["block_pre_ln_causal"])
        (x,) = make_inputs(specs, np.float64)
        y_train = call(block, x)
        block.backward(np.ones_like(y_train))
        block.eval()
        y_eval = call(block, x)
        np.testing.assert_allclose(y_eval, y_train, rtol=1e-12)  # no dropout: same function
        for m in block.modules():
            assert all(getattr(m, a) is None for a in ("_x", "_saved", "_h", "_ids", "_span", "_mask") if hasattr(m, a))
        with pytest.raises(RuntimeError, match="train mode"):
            block.backward(np.ones_like(y_eval))
        block.train()
        call(block, x)
        block.backward(np.ones_like(y_train))


def test_explicit_attention_matches_fused_and_returns_probabilities():
    with tx.use_backend("numpy"):
        store, layer, _, specs = build(mha_case("separate", causal=True, mask=PAD))
        (x,) = make_inputs(specs, np.float64)
        y_fused = layer(x, mask=PAD)
        layer.backward(np.ones_like(y_fused))
        g_fused = store.flat_grad.copy()
        store.zero_grad()
        y, probs = layer(x, mask=PAD, return_attention=True)
        layer.backward(np.ones_like(y))
        np.testing.assert_allclose(y, y_fused, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(store.flat_grad, g_fused, rtol=1e-9, atol=1e-12)
        assert probs.shape == (2, NH, 5, 5)
        # causal AND padding: batch 1 sees keys 0..1 only; row i sees j <= i
        allowed = np.tril(np.ones((5, 5), bool))[None, None] & PAD[:, None, None, :]
        assert np.all(probs[~np.broadcast_to(allowed, probs.shape)] == 0)
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-12)


def test_fused_and_layered_feed_forward_agree():
    with tx.use_backend("numpy"):
        s_fused, ffn, _, specs = build(ffn_case("gelu_erf", "in_out"))
        s_lay = ParamStore(np.float64, 0)
        fc1 = nn.Linear(s_lay.declare("fc1.weight", (10, 6)), s_lay.declare("fc1.bias", (10,)), "out_in")
        fc2 = nn.Linear(s_lay.declare("fc2.weight", (6, 10)), s_lay.declare("fc2.bias", (6,)), "out_in")
        lay = nn.FeedForward(fc1, fc2, "gelu_erf")
        s_lay.allocate()
        P = s_fused.parameters()
        s_lay.load_state_dict({"fc1.weight": P["fc1.weight"].T, "fc1.bias": P["fc1.bias"],
                               "fc2.weight": P["fc2.weight"].T, "fc2.bias": P["fc2.bias"]})
        (x,) = make_inputs(specs, np.float64)
        y1, y2 = ffn(x), lay(x)
        np.testing.assert_allclose(y1, y2, rtol=1e-12)
        np.testing.assert_allclose(ffn.backward(y1), lay.backward(y1), rtol=1e-12)
        np.testing.assert_allclose(s_fused["fc1.weight"].grad, s_lay["fc1.weight"].grad.T, rtol=1e-12)


def test_dropout_train_eval():
    rng = nn.DropoutRNG(3)
    drop = nn.Dropout(0.25, rng)
    x = np.ones((200, 100), np.float32)
    y = drop(x)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    assert y.dtype == np.float32
    dx = drop.backward(np.full_like(x, 2.0))
    np.testing.assert_array_equal(dx != 0, kept)  # the forward's mask, reused
    rng.seed(3)
    np.testing.assert_array_equal(drop(x), y)  # reseeding reproduces the mask
    drop.eval()
    assert drop(x) is x
    assert nn.Dropout(0.0)(x) is x
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        nn.Dropout(1.0)


def test_positions():
    with tx.use_backend("numpy"):
        sin = nn.SinusoidalPositions(6, max_len=12)
        x = np.zeros((2, 4, 6))
        y = sin(x, offset=2)
        pos, i = 3, 1  # y[:, 1] is position 3; column 2i = 2 is sin(pos / 10000^(2/6))
        assert y[0, 1, 2] == pytest.approx(math.sin(pos / 10000 ** (2 / 6)))
        assert y[1, 1, 3] == pytest.approx(math.cos(pos / 10000 ** (2 / 6)))
        assert sin.backward(y) is y
        with pytest.raises(ValueError, match="exceed the table's 12 positions"):
            sin(np.zeros((1, 11, 6)), offset=2)
        store, pos_layer, _, _ = build(positions_case)
        with pytest.raises(ValueError, match=r"positions 8\.\.11 exceed the table's 10 positions"):
            pos_layer(np.zeros((1, 4, 5)), offset=8)


def test_layer_construction_errors():
    s = ParamStore(np.float64)
    with pytest.raises(ValueError, match="layout must be one of"):
        nn.Linear.create(s, "a", 2, 3, layout="rows")
    with pytest.raises(ValueError, match="d_model=9 is not divisible by n_head=2"):
        nn.MultiHeadAttention(2, nn.Linear.create(s, "o", 9, 9), qkv=nn.Linear.create(s, "qkv", 9, 27))
    with pytest.raises(ValueError, match="either qkv, or q with k and v"):
        nn.MultiHeadAttention(2, nn.Linear.create(s, "o2", 8, 8), q=nn.Linear.create(s, "q2", 8, 8))
    with pytest.raises(ValueError, match="activation must be one of"):
        nn.FeedForward(nn.Linear.create(s, "f1", 2, 4), nn.Linear.create(s, "f2", 4, 2), "swish")
    with pytest.raises(ValueError, match="unsupported activation 'swish'"):
        nn.from_hf("swish")
    assert nn.from_hf("gelu") == "gelu_erf" and nn.from_hf("gelu_new") == "gelu_tanh"


# ---------------------------------------------------------------------------- parameter store
def _store(dtype=np.float32, seed=0):
    s = ParamStore(dtype, seed)
    nn.Linear.create(s, "a", 3, 5)
    nn.LayerNorm.create(s, "ln", 5)
    nn.Embedding.create(s, "emb.weight", 7, 3)
    s.declare("scale", (2, 2), init=lambda rng, shape: np.full(shape, 0.5), decay=False)
    return s.allocate()


def test_store_layout_views_and_decay_groups():
    s = _store()
    P, G = s.parameters(), s.gradients()
    assert list(P) == ["a.weight", "a.bias", "ln.weight", "ln.bias", "emb.weight", "scale"]
    assert s.num_parameters() == 15 + 5 + 5 + 5 + 21 + 4
    for name in P:
        assert np.shares_memory(P[name], s.flat) and np.shares_memory(G[name], s.flat_grad)
        assert P[name].ctypes.data % 64 == 0 and G[name].ctypes.data % 64 == 0
        assert P[name].flags.c_contiguous
        decayed = s.offset(name) < s.n_decay
        assert decayed == (name in ("a.weight", "emb.weight")), name
    assert s.flat.dtype == np.float32 and s.flat.ndim == 1 and s.flat_grad.shape == s.flat.shape
    np.testing.assert_array_equal(P["ln.weight"], 1)
    np.testing.assert_array_equal(P["a.bias"], 0)
    np.testing.assert_array_equal(P["scale"], 0.5)
    assert abs(P["emb.weight"].std() - 0.02) < 0.01
    G["a.weight"][...] = 3
    s.zero_grad()
    assert not s.flat_grad.any()
    # the two AdamW groups cover every parameter exactly once
    covered = np.zeros(s.flat.size, bool)
    for name in P:
        o = s.offset(name)
        covered[o:o + P[name].size] = True
    assert not s.flat[~covered].any()


def test_store_init_deterministic_and_dtype_independent():
    a, b, c = _store(seed=1), _store(seed=1), _store(seed=2)
    np.testing.assert_array_equal(a.flat, b.flat)
    assert not np.array_equal(a.flat, c.flat)
    d = _store(np.float64, seed=1)
    for name, v in a.parameters().items():
        np.testing.assert_array_equal(v, d.parameters()[name].astype(np.float32))


def test_store_errors():
    s = ParamStore(np.float32)
    s.declare("w", (2, 3))
    with pytest.raises(ValueError, match="'w' declared twice"):
        s.declare("w", (2, 3))
    with pytest.raises(RuntimeError, match="call allocate"):
        s.parameters()
    s.allocate()
    with pytest.raises(RuntimeError, match="already allocated"):
        s.declare("x", (1,))
    with pytest.raises(ValueError, match=r"'w' has shape \(3, 2\), the model expects \(2, 3\)"):
        s.load_state_dict({"w": np.zeros((3, 2))})
    with pytest.raises(KeyError, match="missing \\['w'\\]"):
        s.load_state_dict({})
    with pytest.raises(TypeError, match="float32 or float64"):
        ParamStore(np.float16)
