"""GPT (GPT-2 architecture) with hand-written backward: parameter layout, gradients (finite
differences in float64 on numpy; cpp vs numpy), parity with a torch twin of GPT-2 (logits,
gradients, 3 AdamW steps), training, dropout, determinism and input errors."""
import math
import time

import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext import ops
from transformer_ext.models import GPT, GPTConfig

from conftest import fd_check_params, needs_core

TINY = dict(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2)
NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def tiny(dtype=np.float64, **kw):
    return GPT(GPTConfig(**{**TINY, **NO_DROPOUT, **kw}), dtype=dtype)


def batch(B=2, T=8, V=50, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


def loss_and_grads(model, ids, targets, reseed=None):
    """Cross-entropy loss, with the gradients left in model.gradients()."""
    model.zero_grad()
    if reseed is not None:
        model.seed_dropout(reseed)
    logits = model(ids)
    loss, dlogits = ops.cross_entropy(logits, targets)
    model.backward(dlogits)
    return loss, logits


def hf_names(n_layer, tied=True):
    names = ["transformer.wte.weight", "transformer.wpe.weight"]
    for i in range(n_layer):
        for sub in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            names += [f"transformer.h.{i}.{sub}.weight", f"transformer.h.{i}.{sub}.bias"]
    names += ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    return names if tied else names + ["lm_head.weight"]


# ---------------------------------------------------------------------------- layout and init
def test_parameter_names_shapes_and_views():
    m = tiny(np.float32)
    P, G = m.parameters(), m.gradients()
    assert list(P) == hf_names(2) == list(G)
    d, V = 16, 50
    shapes = {"transformer.wte.weight": (V, d), "transformer.wpe.weight": (16, d),
              "transformer.h.1.attn.c_attn.weight": (d, 3 * d), "transformer.h.1.attn.c_attn.bias": (3 * d,),
              "transformer.h.1.attn.c_proj.weight": (d, d), "transformer.h.1.mlp.c_fc.weight": (d, 4 * d),
              "transformer.h.1.mlp.c_proj.weight": (4 * d, d), "transformer.ln_f.weight": (d,)}
    for name, shape in shapes.items():
        assert P[name].shape == shape and G[name].shape == shape, name
    per_layer = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    assert m.num_parameters() == V * d + 16 * d + 2 * per_layer + 2 * d
    for name in P:  # views into ONE buffer each
        assert np.shares_memory(P[name], m.store.flat) and np.shares_memory(G[name], m.store.flat_grad), name
        assert P[name].dtype == np.float32
    assert m.lm_head.weight is m.wte.weight  # tied head: the same Param, no copy
    untied = tiny(np.float32, tie_word_embeddings=False)
    assert list(untied.parameters()) == hf_names(2, tied=False)
    assert untied.parameters()["lm_head.weight"].shape == (V, d)


def test_gpt2_initialisation_and_determinism():
    c = GPTConfig(**{**TINY, "n_embd": 64, "n_layer": 8, "n_head": 4})
    m = GPT(c, np.float64)
    P = m.parameters()
    assert abs(P["transformer.wte.weight"].std() - 0.02) < 0.002
    assert abs(P["transformer.h.3.mlp.c_fc.weight"].std() - 0.02) < 0.002
    for name in ("attn.c_proj", "mlp.c_proj"):  # residual projections: 0.02 / √(2·n_layer)
        assert abs(P[f"transformer.h.3.{name}.weight"].std() - 0.02 / math.sqrt(16)) < 0.0006
    np.testing.assert_array_equal(P["transformer.h.0.ln_1.weight"], 1)
    for name in ("transformer.h.0.ln_1.bias", "transformer.h.0.attn.c_attn.bias", "transformer.ln_f.bias"):
        np.testing.assert_array_equal(P[name], 0)
    same = GPT(c, np.float64)
    np.testing.assert_array_equal(same.store.flat, m.store.flat)
    other = GPT(GPTConfig(**{**TINY, "n_embd": 64, "n_layer": 8, "n_head": 4, "seed": 1}), np.float64)
    assert not np.array_equal(other.store.flat, m.store.flat)
    f32 = GPT(c, np.float32)
    np.testing.assert_array_equal(f32.store.flat, m.store.flat.astype(np.float32))


# ---------------------------------------------------------------------------- gradients
def fd_check_model(model, ids, targets, samples=3, reseed=None):
    """Central differences of the mean cross-entropy for `samples` entries of every tensor."""
    loss_and_grads(model, ids, targets, reseed)

    def loss():
        if reseed is not None:
            model.seed_dropout(reseed)
        return ops.cross_entropy(model(ids), targets)[0]

    return fd_check_params(model, loss, samples)


def test_whole_model_gradcheck_float64():
    with tx.use_backend("numpy"):
        m = tiny()
        # break the init's symmetries (zero biases, unit LayerNorm) so every term is exercised
        m.store.flat += np.random.default_rng(3).normal(0, 0.05, m.store.flat.shape)
        ids, targets = batch()
        fd_check_model(m, ids, targets)


def test_whole_model_gradcheck_with_fixed_dropout_masks():
    with tx.use_backend("numpy"):
        m = tiny(resid_pdrop=0.2, embd_pdrop=0.1, attn_pdrop=0.2)
        ids, targets = batch()
        fd_check_model(m, ids, targets, reseed=123)
        # the masks really were active
        m.seed_dropout(1)
        a = m(ids)
        m.seed_dropout(2)
        assert not np.allclose(a, m(ids))


def test_untied_head_gradcheck():
    with tx.use_backend("numpy"):
        m = tiny(tie_word_embeddings=False, n_layer=1, activation_function="gelu")
        ids, targets = batch(T=5)
        fd_check_model(m, ids, targets, samples=2)


@needs_core
def test_cpp_gradients_match_numpy():
    ids, targets = batch(B=3, T=12)
    out = {}
    for backend, dtype in (("numpy", np.float64), ("cpp", np.float32)):
        with tx.use_backend(backend):
            m = tiny(dtype)
            m.store.flat[...] += np.random.default_rng(3).normal(0, 0.05, m.store.flat.shape).astype(dtype)
            loss, logits = loss_and_grads(m, ids, targets)
            out[backend] = (loss, logits, {n: g.copy() for n, g in m.gradients().items()})
    (l64, z64, g64), (l32, z32, g32) = out["numpy"], out["cpp"]
    assert l32 == pytest.approx(l64, rel=1e-5)
    np.testing.assert_allclose(z32, z64, rtol=0, atol=1e-5 * np.abs(z64).max() * 10)
    for name in g64:
        # float32 backward through 2 blocks: ~1e-6 relative per op, a few dozen ops deep
        np.testing.assert_allclose(g32[name], g64[name], rtol=0, atol=1e-4 * np.abs(g64[name]).max(), err_msg=name)


# ---------------------------------------------------------------------------- torch parity
def torch_gpt2(c: GPTConfig, torch_dtype):
    """A minimal torch GPT-2 with Hugging Face's parameter names and Conv1D (in, out) layout."""
    torch = pytest.importorskip("torch")
    tnn, F = torch.nn, torch.nn.functional
    d, H = c.n_embd, c.n_head

    class Conv1D(tnn.Module):
        def __init__(self, n_in, n_out):
            super().__init__()
            self.weight = tnn.Parameter(torch.empty(n_in, n_out))
            self.bias = tnn.Parameter(torch.empty(n_out))

        def forward(self, x):
            return x @ self.weight + self.bias

    class Attention(tnn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn, self.c_proj = Conv1D(d, 3 * d), Conv1D(d, d)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = (t.view(B, T, H, d // H).transpose(1, 2) for t in self.c_attn(x).split(d, dim=2))
            s = (q @ k.transpose(-1, -2)) / math.sqrt(d // H)
            s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
            return self.c_proj((s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, d))

    class MLP(tnn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc, self.c_proj = Conv1D(d, c.d_ff), Conv1D(c.d_ff, d)

        def forward(self, x):
            return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))

    class Block(tnn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn = tnn.LayerNorm(d, eps=c.layer_norm_epsilon), Attention()
            self.ln_2, self.mlp = tnn.LayerNorm(d, eps=c.layer_norm_epsilon), MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT2(tnn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = tnn.ModuleDict(dict(
                wte=tnn.Embedding(c.vocab_size, d), wpe=tnn.Embedding(c.n_positions, d),
                h=tnn.ModuleList(Block() for _ in range(c.n_layer)), ln_f=tnn.LayerNorm(d, eps=c.layer_norm_epsilon)))

        def forward(self, ids):
            t = self.transformer
            x = t.wte(ids) + t.wpe(torch.arange(ids.shape[1]))
            for block in t.h:
                x = block(x)
            return t.ln_f(x) @ t.wte.weight.T  # tied LM head

    return GPT2().to(torch_dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_twin_logits_gradients_and_adamw(dtype):
    torch = pytest.importorskip("torch")
    torch_dtype = torch.float32 if dtype == np.float32 else torch.float64
    backend = "cpp" if dtype == np.float32 and tx._backend.core is not None else "numpy"
    # float32: rtol 1e-4 on logits (asked for); gradients compared relative to each tensor's max
    # (float32 sums of 10-100 terms, two blocks deep); float64: ~1e-12 both ways.
    rtol_logits, gtol, ptol = (1e-4, 1e-4, 1e-5) if dtype == np.float32 else (1e-10, 1e-9, 1e-9)
    with tx.use_backend(backend):
        m = tiny(dtype)
        m.store.flat += np.random.default_rng(3).normal(0, 0.05, m.store.flat.shape).astype(dtype)
        twin = torch_gpt2(m.config, torch_dtype)
        assert [n for n, _ in twin.named_parameters()] == list(m.parameters())
        with torch.no_grad():
            for name, p in twin.named_parameters():
                p.copy_(torch.from_numpy(m.parameters()[name].copy()))
        ids, targets = batch(B=2, T=8)
        tid, ttg = torch.from_numpy(ids), torch.from_numpy(targets)

        loss, logits = loss_and_grads(m, ids, targets)
        tlogits = twin(tid)
        tloss = torch.nn.functional.cross_entropy(tlogits.reshape(-1, 50), ttg.reshape(-1))
        tloss.backward()
        np.testing.assert_allclose(logits, tlogits.detach().numpy(), rtol=rtol_logits, atol=rtol_logits * 1e-2)
        assert loss == pytest.approx(tloss.item(), rel=rtol_logits)
        G = m.gradients()
        for name, p in twin.named_parameters():
            ref = p.grad.numpy()
            np.testing.assert_allclose(G[name], ref, rtol=0, atol=gtol * np.abs(ref).max(), err_msg=name)

        # 3 AdamW steps; weight decay on matrices only: our two slices of the flat buffer vs
        # torch's two param groups. float64: each side steps on its own gradients. float32: torch
        # steps on OUR gradients — Adam divides by √v, which turns float32 rounding noise in a
        # near-zero gradient (e.g. the key bias, whose exact gradient is 0: q·b_k shifts a whole
        # softmax row) into steps of ±lr, so independent float32 trajectories need not agree.
        lr, wd = 1e-2, 0.1
        named = dict(twin.named_parameters())
        decay = [p for p in named.values() if p.ndim >= 2]
        no_decay = [p for p in named.values() if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
        s = m.store
        mom, vel = np.zeros_like(s.flat), np.zeros_like(s.flat)
        nd = s.n_decay
        for step in range(1, 4):
            if step > 1:
                loss_and_grads(m, ids, targets)
                opt.zero_grad()
                torch.nn.functional.cross_entropy(twin(tid).reshape(-1, 50), ttg.reshape(-1)).backward()
            if dtype == np.float32:
                for name, p in named.items():
                    p.grad = torch.from_numpy(G[name].copy())
            ops.adamw_step(s.flat[:nd], s.flat_grad[:nd], mom[:nd], vel[:nd], step, lr, weight_decay=wd)
            ops.adamw_step(s.flat[nd:], s.flat_grad[nd:], mom[nd:], vel[nd:], step, lr, weight_decay=0.0)
            opt.step()
        P = m.parameters()
        for name, p in named.items():
            # parameters are O(0.1), steps O(lr): float32 rounding of the update ~1e-7·lr
            np.testing.assert_allclose(P[name], p.detach().numpy(), rtol=ptol, atol=ptol * 1e-2, err_msg=name)


# ---------------------------------------------------------------------------- behaviour
def test_training_reduces_loss(threads):
    """A tiny model memorises a repeated 20-token cycle (the next token is a function of the
    current one): from ln(50) ≈ 3.9 the mean of the last 5 losses must fall below 0.1 within
    60 AdamW steps (it reaches ~0.03)."""
    backend = "cpp" if tx._backend.core is not None else "numpy"
    if backend == "cpp":
        threads(1)  # kernels this small gain nothing from a second thread on a shared machine
    with tx.use_backend(backend):
        m = GPT(GPTConfig(vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=2, seed=0), np.float32)
        cycle = np.random.default_rng(0).permutation(50)[:20]
        stream = np.tile(cycle, 20)
        rng = np.random.default_rng(1)
        s = m.store
        mom, vel = np.zeros_like(s.flat), np.zeros_like(s.flat)
        losses = []
        t0 = time.perf_counter()
        for step in range(1, 61):
            starts = rng.integers(0, len(stream) - 17, 8)
            x = np.stack([stream[i:i + 16] for i in starts])
            y = np.stack([stream[i + 1:i + 17] for i in starts])
            loss, _ = loss_and_grads(m, x, y)
            losses.append(loss)
            ops.adamw_step(s.flat, s.flat_grad, mom, vel, step, 1e-2, weight_decay=0.0)
        elapsed = time.perf_counter() - t0
    assert losses[0] > 3.5
    assert np.mean(losses[-5:]) < 0.1, (losses[0], losses[-5:], elapsed)


def test_train_eval_dropout_behaviour():
    ids, _ = batch()
    with tx.use_backend("numpy"):
        m = GPT(GPTConfig(**TINY), np.float64)  # default dropout 0.1
        assert m.training
        m.seed_dropout(0)
        a = m(ids)
        b = m(ids)
        assert not np.allclose(a, b)  # fresh masks each forward
        m.seed_dropout(0)
        np.testing.assert_array_equal(m(ids), a)  # reseeding reproduces them
        m.eval()
        e1, e2 = m(ids), m(ids)
        np.testing.assert_array_equal(e1, e2)
        ref = tiny()  # same seed, no dropout: the same function as eval mode
        np.testing.assert_allclose(e1, ref(ids), rtol=1e-12)
        assert all(not mod.training for mod in m.modules())
        with pytest.raises(RuntimeError, match="GPT.backward: no forward to differentiate.*model.train"):
            m.backward(np.zeros_like(e1))
        m.train()
        m(ids)
        m.backward(np.zeros_like(e1))


def test_return_attention_and_1d_ids():
    with tx.use_backend("numpy"):
        m = tiny()
        ids, targets = batch(B=2, T=6)
        logits = m(ids)
        m.backward(np.ones_like(logits))
        g = m.store.flat_grad.copy()
        m.zero_grad()
        logits2, att = m(ids, return_attention=True)
        m.backward(np.ones_like(logits2))
        np.testing.assert_allclose(logits2, logits, rtol=1e-10)
        np.testing.assert_allclose(m.store.flat_grad, g, rtol=1e-8, atol=1e-14)
        assert len(att) == 2 and all(a.shape == (2, 2, 6, 6) for a in att)
        for a in att:
            np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-12)
            assert np.all(np.triu(a, k=1) == 0)  # causal
        one = m(ids[1])
        assert one.shape == (6, 50)
        np.testing.assert_allclose(one, logits[1], rtol=1e-12)
        m.backward(np.ones_like(one))
        _, att1 = m(ids[0], return_attention=True)
        assert att1[0].shape == (2, 6, 6)


def test_bad_inputs():
    with tx.use_backend("numpy"):
        m = tiny()
        with pytest.raises(ValueError, match=r"token id 50 out of range \[0, vocab_size=50\)"):
            m(np.array([[1, 50]]))
        with pytest.raises(ValueError, match="token id -1 out of range"):
            m(np.array([-1, 2]))
        with pytest.raises(ValueError, match="sequence length 17 exceeds the context length n_positions=16"):
            m(np.zeros((1, 17), int))
        with pytest.raises(ValueError, match=r"empty batch: ids has shape \(0, 4\)"):
            m(np.zeros((0, 4), int))
        with pytest.raises(ValueError, match="empty batch"):
            m(np.zeros((2, 0), int))
        with pytest.raises(TypeError, match="ids must be an integer array, got dtype float64"):
            m(np.zeros((1, 4)))
        with pytest.raises(ValueError, match=r"ids must have shape \(B, T\) or \(T,\)"):
            m(np.zeros((1, 2, 3), int))
        logits = m(np.zeros((2, 4), int))
        with pytest.raises(ValueError, match=r"dlogits has shape \(2, 3, 50\), the forward gave \(2, 4, 50\)"):
            m.backward(np.zeros((2, 3, 50)))
    with pytest.raises(ValueError, match="n_embd=10 is not divisible by n_head=4"):
        GPTConfig(n_embd=10, n_head=4)
    with pytest.raises(ValueError, match="unsupported activation 'swish'"):
        GPTConfig(activation_function="swish")
    with pytest.raises(ValueError, match="n_layer must be a positive int"):
        GPTConfig(n_layer=0)
    with pytest.raises(ValueError, match=r"attn_pdrop must be in \[0, 1\)"):
        GPTConfig(attn_pdrop=1.0)
    assert GPTConfig.from_dict({**TINY, "architectures": ["GPT2LMHeadModel"]}) == GPTConfig(**TINY)
    assert logits.shape == (2, 4, 50)


@needs_core
def test_cpp_refuses_float64_model():
    with tx.use_backend("cpp"):
        m = tiny(np.float64)
        with pytest.raises(TypeError, match="float32"):
            m(np.zeros((1, 4), int))
