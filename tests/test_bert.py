"""Bert (BERT encoder + MLM head) with hand-written backward: Hugging Face parameter layout,
whole-model gradients (finite differences in float64 on numpy; cpp vs numpy), parity with a
torch twin written with BertForMaskedLM's names (outputs, gradients, 3 AdamW steps), MLM
training, the MLM corruption helper, dropout/eval, attention weights and input errors."""
import math

import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext import ops
from transformer_ext.models import Bert, BertConfig, BertOutput, mlm_mask_tokens

from conftest import fd_check_params, needs_core

V = 40
TINY = dict(vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=12, type_vocab_size=2)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny(dtype=np.float64, **kw):
    return Bert(BertConfig(**{**TINY, **NO_DROPOUT, **kw}), dtype=dtype)


def batch(B=2, T=8, seed=0):
    """ids, attention_mask (row 1 padded after 5 tokens), token types (segment B from t=4), MLM labels."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, V, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, 5:] = 0
    ids[1, 5:] = 0  # pad_token_id
    types = np.zeros((B, T), np.int64)
    types[:, 4:] = 1
    labels = np.full((B, T), -100)
    labels[0, [1, 3, 5]] = rng.integers(0, V, 3)
    labels[1, [0, 2, 4]] = rng.integers(0, V, 3)
    return ids, mask, types, labels


def hf_names(n_layer, head=True):
    e = "bert.embeddings"
    names = [f"{e}.word_embeddings.weight", f"{e}.position_embeddings.weight", f"{e}.token_type_embeddings.weight",
             f"{e}.LayerNorm.weight", f"{e}.LayerNorm.bias"]
    for i in range(n_layer):
        p = f"bert.encoder.layer.{i}"
        for sub in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                    "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"):
            names += [f"{p}.{sub}.weight", f"{p}.{sub}.bias"]
    if head:
        names += ["cls.predictions.bias", "cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
                  "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias"]
    return names


def hidden_weights(shape, dtype, seed=5):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def loss_and_grads(model, ids, mask, types, labels, reseed=None, with_hidden=True):
    """L = CE(logits, labels) + Σ hidden ⊙ G (G fixed): exercises both backward inputs."""
    model.zero_grad()
    if reseed is not None:
        model.seed_dropout(reseed)
    out = model(ids, attention_mask=mask, token_type_ids=types)
    loss, dlogits = ops.cross_entropy(out.logits, labels)
    G = hidden_weights(out.last_hidden_state.shape, model.dtype)
    if with_hidden:
        loss += float(np.sum(out.last_hidden_state * G))
        model.backward(dlogits, dhidden=G)
    else:
        model.backward(dlogits)
    return loss, out


# ---------------------------------------------------------------------------- layout and init
def test_parameter_names_shapes_and_tied_decoder():
    m = tiny(np.float32)
    P, G = m.parameters(), m.gradients()
    assert list(P) == hf_names(2) == list(G)
    d = 16
    shapes = {"bert.embeddings.word_embeddings.weight": (V, d), "bert.embeddings.position_embeddings.weight": (12, d),
              "bert.embeddings.token_type_embeddings.weight": (2, d),
              "bert.encoder.layer.1.attention.self.query.weight": (d, d),
              "bert.encoder.layer.1.intermediate.dense.weight": (32, d), "bert.encoder.layer.1.output.dense.weight": (d, 32),
              "cls.predictions.bias": (V,), "cls.predictions.transform.dense.weight": (d, d)}
    for name, shape in shapes.items():
        assert P[name].shape == shape and G[name].shape == shape, name
    for name in P:
        assert np.shares_memory(P[name], m.store.flat) and np.shares_memory(G[name], m.store.flat_grad), name
    assert m.head[-1].weight is m.word_embeddings.weight  # tied decoder: same Param
    per_layer = 4 * (d * d + d) + 2 * 2 * d + (d * 32 + 32) + (32 * d + d)
    assert m.num_parameters() == V * d + 12 * d + 2 * d + 2 * d + 2 * per_layer + V + d * d + d + 2 * d
    bare = tiny(np.float32, add_mlm_head=False)
    assert list(bare.parameters()) == hf_names(2, head=False)
    out = bare(np.array([[1, 2, 3]]))
    assert out.logits is None and out.last_hidden_state.shape == (1, 3, 16)


def test_initialisation_and_determinism():
    c = BertConfig(**{**TINY, "hidden_size": 64, "intermediate_size": 128, "vocab_size": 200})
    m = Bert(c, np.float64)
    P = m.parameters()
    assert abs(P["bert.encoder.layer.0.attention.self.query.weight"].std() - 0.02) < 0.002
    assert abs(P["bert.embeddings.word_embeddings.weight"][1:].std() - 0.02) < 0.002
    np.testing.assert_array_equal(P["bert.embeddings.word_embeddings.weight"][0], 0)  # pad row (HF)
    np.testing.assert_array_equal(P["bert.encoder.layer.1.output.LayerNorm.weight"], 1)
    np.testing.assert_array_equal(P["cls.predictions.bias"], 0)
    np.testing.assert_array_equal(Bert(c, np.float64).store.flat, m.store.flat)
    f32 = Bert(c, np.float32).parameters()
    for name, value in P.items():
        np.testing.assert_array_equal(f32[name], value.astype(np.float32), err_msg=name)
    assert m.config.layer_norm_eps == 1e-12 and m.config.hidden_act == "gelu"
    assert m.layer[0].ffn.activation == "gelu_erf"  # HF "gelu" is the erf form


# ---------------------------------------------------------------------------- gradients
def fd_check_model(model, args, samples=3, reseed=None):
    """Central differences of the loss (CE of the MLM logits + Σ hidden ⊙ G) for every tensor."""
    loss_and_grads(model, *args, reseed=reseed)

    def loss():
        if reseed is not None:
            model.seed_dropout(reseed)
        out = model(args[0], attention_mask=args[1], token_type_ids=args[2])
        return ops.cross_entropy(out.logits, args[3])[0] + float(
            np.sum(out.last_hidden_state * hidden_weights(out.last_hidden_state.shape, model.dtype)))

    # L ~ 10 here: FD error ~ 2e-9
    return fd_check_params(model, loss, samples, atol=2e-8)


def perturbed(model, scale=0.05, seed=3):
    """Break the init's symmetries (zero biases, unit LayerNorm) so every term is exercised."""
    rng = np.random.default_rng(seed)  # per tensor: the flat layouts' padding differs between dtypes
    for value in model.parameters().values():
        value += rng.normal(0, scale, value.shape).astype(model.dtype)
    return model


def test_whole_model_gradcheck_float64_padding_and_token_types():
    with tx.use_backend("numpy"):
        fd_check_model(perturbed(tiny()), batch())


def test_whole_model_gradcheck_with_fixed_dropout_masks():
    with tx.use_backend("numpy"):
        m = perturbed(tiny(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2, num_hidden_layers=1))
        fd_check_model(m, batch(T=6), samples=2, reseed=7)


@needs_core
def test_cpp_gradients_match_numpy():
    args = batch(B=3, T=10, seed=1)
    out = {}
    for backend, dtype in (("numpy", np.float64), ("cpp", np.float32)):
        with tx.use_backend(backend):
            m = perturbed(tiny(dtype))
            loss, o = loss_and_grads(m, *args)
            out[backend] = (loss, o, {n: g.copy() for n, g in m.gradients().items()})
    (l64, o64, g64), (l32, o32, g32) = out["numpy"], out["cpp"]
    assert l32 == pytest.approx(l64, rel=1e-5, abs=1e-4)
    # float32 forward, a few dozen ops deep: ~1e-6 relative per op
    for a, b in ((o32.logits, o64.logits), (o32.last_hidden_state, o64.last_hidden_state)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max() * 10)
    # gradients relative to each tensor's max, floored at 1e-3 of the largest gradient (the key
    # bias's exact gradient is 0: float32 leaves rounding noise there)
    top = max(np.abs(g).max() for g in g64.values())
    for name in g64:
        scale = max(np.abs(g64[name]).max(), 1e-3 * top)
        np.testing.assert_allclose(g32[name], g64[name], rtol=0, atol=1e-4 * scale, err_msg=name)


# ---------------------------------------------------------------------------- torch parity
def torch_bert(c: BertConfig, torch_dtype):
    """A minimal torch BertForMaskedLM with Hugging Face's parameter names (nn.Linear (out, in))."""
    torch = pytest.importorskip("torch")
    tnn, F = torch.nn, torch.nn.functional
    d, H = c.hidden_size, c.num_attention_heads
    LN = lambda: tnn.LayerNorm(d, eps=c.layer_norm_eps)  # noqa: E731

    class Module(tnn.Module):
        def __init__(this, **children):  # noqa: N805 (BERT has a child named "self")
            super().__init__()
            for k, v in children.items():
                setattr(this, k, v)

    class Layer(tnn.Module):
        def __init__(self):
            super().__init__()
            self.attention = Module(self=Module(query=tnn.Linear(d, d), key=tnn.Linear(d, d), value=tnn.Linear(d, d)),
                                    output=Module(dense=tnn.Linear(d, d), LayerNorm=LN()))
            self.intermediate = Module(dense=tnn.Linear(d, c.intermediate_size))
            self.output = Module(dense=tnn.Linear(c.intermediate_size, d), LayerNorm=LN())

        def forward(self, x, add_mask):
            B, T, _ = x.shape
            a = self.attention
            q, k, v = (lin(x).view(B, T, H, d // H).transpose(1, 2) for lin in (a.self.query, a.self.key, a.self.value))
            s = q @ k.transpose(-1, -2) / math.sqrt(d // H) + add_mask
            ctx = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, d)
            x = a.output.LayerNorm(x + a.output.dense(ctx))
            h = self.output.dense(F.gelu(self.intermediate.dense(x)))  # erf GELU
            return self.output.LayerNorm(x + h)

    class Predictions(tnn.Module):
        def __init__(self):
            super().__init__()
            self.bias = tnn.Parameter(torch.zeros(c.vocab_size))
            self.transform = Module(dense=tnn.Linear(d, d), LayerNorm=LN())

    class BertMLM(tnn.Module):
        def __init__(self):
            super().__init__()
            self.bert = Module(
                embeddings=Module(word_embeddings=tnn.Embedding(c.vocab_size, d),
                                  position_embeddings=tnn.Embedding(c.max_position_embeddings, d),
                                  token_type_embeddings=tnn.Embedding(c.type_vocab_size, d), LayerNorm=LN()),
                encoder=Module(layer=tnn.ModuleList(Layer() for _ in range(c.num_hidden_layers))))
            self.cls = Module(predictions=Predictions())

        def forward(self, ids, mask, types):
            e = self.bert.embeddings
            x = e.word_embeddings(ids) + e.position_embeddings(torch.arange(ids.shape[1])) + e.token_type_embeddings(types)
            x = e.LayerNorm(x)
            add_mask = torch.zeros(mask.shape, dtype=x.dtype).masked_fill(mask == 0, float("-inf"))[:, None, None, :]
            for layer in self.bert.encoder.layer:
                x = layer(x, add_mask)
            p = self.cls.predictions
            t = p.transform.LayerNorm(F.gelu(p.transform.dense(x)))
            return x, t @ e.word_embeddings.weight.T + p.bias  # decoder tied to the word embeddings

    return BertMLM().to(torch_dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_twin_outputs_gradients_and_adamw(dtype):
    torch = pytest.importorskip("torch")
    torch_dtype = torch.float32 if dtype == np.float32 else torch.float64
    backend = "cpp" if dtype == np.float32 and tx._backend.core is not None else "numpy"
    # float32: rtol 1e-4 on outputs; gradients relative to each tensor's max (float32 sums of
    # 10-100 terms, two layers deep); float64: ~1e-12 both ways.
    rtol, gtol, ptol = (1e-4, 1e-4, 1e-5) if dtype == np.float32 else (1e-10, 1e-9, 1e-9)
    with tx.use_backend(backend):
        m = perturbed(tiny(dtype))
        twin = torch_bert(m.config, torch_dtype)
        assert [n for n, _ in twin.named_parameters()] == list(m.parameters())
        with torch.no_grad():
            for name, p in twin.named_parameters():
                p.copy_(torch.from_numpy(m.parameters()[name].copy()))
        ids, mask, types, labels = batch(B=2, T=8)
        targs = [torch.from_numpy(a) for a in (ids, mask, types)]
        tlab = torch.from_numpy(labels)

        def tloss_fn():
            th, tl = twin(*targs)
            G = torch.from_numpy(hidden_weights(th.shape, dtype))
            return th, tl, F_ce(tl.reshape(-1, V), tlab.reshape(-1)) + (th * G).sum()

        F_ce = torch.nn.functional.cross_entropy
        loss, out = loss_and_grads(m, ids, mask, types, labels)
        th, tl, tloss = tloss_fn()
        tloss.backward()
        np.testing.assert_allclose(out.last_hidden_state, th.detach().numpy(), rtol=rtol, atol=rtol * 1e-2)
        np.testing.assert_allclose(out.logits, tl.detach().numpy(), rtol=rtol, atol=rtol * 1e-2)
        assert loss == pytest.approx(tloss.item(), rel=rtol)
        G = m.gradients()
        # relative to each tensor's max, floored at 1e-3 of the largest gradient (the key bias's
        # exact gradient is 0: both sides hold rounding noise there)
        top = max(p.grad.abs().max().item() for p in twin.parameters())
        for name, p in twin.named_parameters():
            ref = p.grad.numpy()
            scale = max(np.abs(ref).max(), 1e-3 * top)
            np.testing.assert_allclose(G[name], ref, rtol=0, atol=gtol * scale, err_msg=name)

        # 3 AdamW steps, decay on matrices only (our two flat slices vs torch's two groups).
        # torch steps on OUR gradients (compared above): Adam's m/(√v + eps) amplifies the
        # rounding noise of near-zero gradients such as the key bias's, whose exact value is 0
        # (float64: noise ~1e-17 moves that bias by ~lr·1e-17/eps = 1e-11 per step, the size of
        # atol, and the two libraries' summation orders differ by CPU: Zen 3 failed by 1.3e-11).
        lr, wd = 1e-2, 0.1
        named = dict(twin.named_parameters())
        opt = torch.optim.AdamW([{"params": [p for p in named.values() if p.ndim >= 2], "weight_decay": wd},
                                 {"params": [p for p in named.values() if p.ndim < 2], "weight_decay": 0.0}], lr=lr)
        s, nd = m.store, m.store.n_decay
        mom, vel = np.zeros_like(s.flat), np.zeros_like(s.flat)
        for step in range(1, 4):
            if step > 1:
                loss_and_grads(m, ids, mask, types, labels)
                opt.zero_grad()
                tloss_fn()[2].backward()
            for name, p in named.items():
                p.grad = torch.from_numpy(G[name].copy())
            ops.adamw_step(s.flat[:nd], s.flat_grad[:nd], mom[:nd], vel[:nd], step, lr, weight_decay=wd)
            ops.adamw_step(s.flat[nd:], s.flat_grad[nd:], mom[nd:], vel[nd:], step, lr, weight_decay=0.0)
            opt.step()
        P = m.parameters()
        for name, p in named.items():
            np.testing.assert_allclose(P[name], p.detach().numpy(), rtol=ptol, atol=ptol * 1e-2, err_msg=name)


# ---------------------------------------------------------------------------- MLM objective and training
def test_mlm_mask_tokens_statistics():
    ids = np.random.default_rng(0).integers(5, 100, (200, 100))
    ids[:, 0] = 1  # a special token ([CLS]) never selected
    am = np.ones_like(ids)
    am[:, 90:] = 0  # padding never selected
    inp, labels = mlm_mask_tokens(ids, 100, mask_token_id=4, rng=0, special_token_ids=[1], attention_mask=am)
    sel = labels != -100
    assert not sel[:, 0].any() and not sel[:, 90:].any()
    frac = sel.sum() / (200 * 89)
    assert abs(frac - 0.15) < 0.01
    np.testing.assert_array_equal(labels[sel], ids[sel])
    np.testing.assert_array_equal(inp[~sel], ids[~sel])  # unselected positions untouched
    masked = (inp[sel] == 4).mean()
    kept = (inp[sel] == ids[sel]).mean()
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1 - 0.01) < 0.02  # keep ≈ 10% (+ random hits ≈ 0.1%)
    again = mlm_mask_tokens(ids, 100, mask_token_id=4, rng=0, special_token_ids=[1], attention_mask=am)
    np.testing.assert_array_equal(again[0], inp)
    with pytest.raises(ValueError, match="mask_token_id=100 out of range"):
        mlm_mask_tokens(ids, 100, mask_token_id=100)
    with pytest.raises(ValueError, match="mlm_probability must be in"):
        mlm_mask_tokens(ids, 100, 4, mlm_probability=0.0)


def test_mlm_training_reduces_loss(threads):
    """Sequences are windows of a fixed 30-token cycle, so a masked token is determined by its
    neighbours: from ≈ ln(40) ≈ 3.7 the mean of the last 20 MLM losses must fall below 1.5
    within 450 AdamW steps (it reaches ~1.0; ~3 s)."""
    backend = "cpp" if tx._backend.core is not None else "numpy"
    if backend == "cpp":
        threads(1)
    with tx.use_backend(backend):
        c = BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        m = Bert(c, np.float32)
        cycle = np.random.default_rng(0).permutation(np.arange(5, V))[:30]
        rng = np.random.default_rng(1)
        s = m.store
        mom, vel = np.zeros_like(s.flat), np.zeros_like(s.flat)
        losses = []
        for step in range(1, 451):
            starts = rng.integers(0, 30, 16)
            ids = cycle[(starts[:, None] + np.arange(16)) % 30]
            inp, labels = mlm_mask_tokens(ids, V, mask_token_id=4, rng=rng, mlm_probability=0.2)
            m.zero_grad()
            loss, dlogits = ops.cross_entropy(m(inp).logits, labels)
            m.backward(dlogits)
            losses.append(loss)
            ops.adamw_step(s.flat, s.flat_grad, mom, vel, step, 3e-3, weight_decay=0.0)
    assert losses[0] > 3.0
    assert np.mean(losses[-20:]) < 1.5, (losses[0], losses[-20:])


# ---------------------------------------------------------------------------- behaviour
def test_padding_does_not_leak_and_eval_mode():
    with tx.use_backend("numpy"):
        m = perturbed(tiny(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))
        m.eval()
        ids = np.array([[3, 4, 5, 6, 0, 0]])
        am = np.array([[1, 1, 1, 1, 0, 0]])
        a = m(ids, attention_mask=am)
        other = ids.copy()
        other[0, 4:] = [7, 9]  # change only padded tokens
        b = m(other, attention_mask=am)
        np.testing.assert_allclose(a.last_hidden_state[:, :4], b.last_hidden_state[:, :4], rtol=1e-12)
        np.testing.assert_allclose(m(ids[:, :4]).logits, a.logits[:, :4], rtol=1e-10, atol=1e-12)
        with pytest.raises(RuntimeError, match="Bert.backward: no forward to differentiate.*model.train"):
            m.backward(np.zeros_like(a.logits))
        m.train()
        m.seed_dropout(0)
        x = m(ids).logits
        assert not np.allclose(x, m(ids).logits)  # fresh dropout masks
        m.seed_dropout(0)
        np.testing.assert_array_equal(m(ids).logits, x)


def test_return_attention_1d_ids_and_backward_variants():
    with tx.use_backend("numpy"):
        m = perturbed(tiny())
        ids, mask, types, labels = batch(B=2, T=6)
        mask[1, 4:] = 0
        out = m(ids, attention_mask=mask, token_type_ids=types)
        m.backward(np.ones_like(out.logits))
        g = m.store.flat_grad.copy()
        m.zero_grad()
        out2, att = m(ids, attention_mask=mask, token_type_ids=types, return_attention=True)
        assert isinstance(out2, BertOutput) and out2.attentions is att
        m.backward(np.ones_like(out2.logits))
        np.testing.assert_allclose(out2.logits, out.logits, rtol=1e-10)
        np.testing.assert_allclose(m.store.flat_grad, g, rtol=1e-8, atol=1e-13)
        assert len(att) == 2 and all(a.shape == (2, 2, 6, 6) for a in att)
        for a in att:
            np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-12)
            assert np.all(a[1, :, :, 4:] == 0)  # padded keys get no weight
        one = m(ids[0], token_type_ids=types[0])
        assert one.logits.shape == (6, V) and one.last_hidden_state.shape == (6, 16)
        np.testing.assert_allclose(one.logits, m(ids[:1], token_type_ids=types[:1]).logits[0], rtol=1e-12)
        # dhidden alone (the encoder without the head's gradient)
        m.zero_grad()
        out = m(ids)
        m.backward(dhidden=np.ones_like(out.last_hidden_state))
        assert np.all(m.gradients()["cls.predictions.bias"] == 0)
        assert np.any(m.gradients()["bert.encoder.layer.0.attention.self.query.weight"] != 0)
        bare = tiny(add_mlm_head=False)
        bare(ids)
        with pytest.raises(ValueError, match="no MLM head"):
            bare.backward(np.zeros((2, 6, V)))
        with pytest.raises(ValueError, match="give dlogits and/or dhidden"):
            bare.backward()


def test_bad_inputs():
    with tx.use_backend("numpy"):
        m = tiny()
        with pytest.raises(ValueError, match=r"token id 40 out of range \[0, vocab_size=40\)"):
            m(np.array([[1, 40]]))
        with pytest.raises(ValueError, match="token id -1 out of range"):
            m(np.array([-1, 2]))
        with pytest.raises(ValueError, match="sequence length 13 exceeds max_position_embeddings=12"):
            m(np.zeros((1, 13), int))
        with pytest.raises(ValueError, match=r"empty batch: ids has shape \(0, 4\)"):
            m(np.zeros((0, 4), int))
        with pytest.raises(TypeError, match="ids must be an integer array"):
            m(np.zeros((1, 4)))
        with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 3\), ids has shape \(2, 4\)"):
            m(np.zeros((2, 4), int), attention_mask=np.ones((2, 3), int))
        with pytest.raises(ValueError, match="attention_mask values must be 0 or 1"):
            m(np.zeros((1, 4), int), attention_mask=np.array([[1, 2, 1, 0]]))
        with pytest.raises(ValueError, match=r"token_type_ids has shape \(1, 3\), ids has shape \(1, 4\)"):
            m(np.zeros((1, 4), int), token_type_ids=np.zeros((1, 3), int))
        with pytest.raises(ValueError, match=r"token type id 2 out of range \[0, type_vocab_size=2\)"):
            m(np.zeros((1, 4), int), token_type_ids=np.array([[0, 1, 2, 0]]))
        out = m(np.zeros((2, 4), int))
        with pytest.raises(ValueError, match=r"dlogits has shape \(2, 3, 40\), the forward gave \(2, 4, 40\)"):
            m.backward(np.zeros((2, 3, 40)))
        with pytest.raises(TypeError, match="dlogits has dtype float32, the model computes in float64"):
            m.backward(np.zeros((2, 4, 40), np.float32))
        assert out.logits.shape == (2, 4, 40)
    with pytest.raises(ValueError, match="hidden_size=10 is not divisible by num_attention_heads=4"):
        BertConfig(hidden_size=10, num_attention_heads=4)
    with pytest.raises(ValueError, match="unsupported activation 'swish'"):
        BertConfig(hidden_act="swish")
    with pytest.raises(ValueError, match=r"hidden_dropout_prob must be in \[0, 1\)"):
        BertConfig(hidden_dropout_prob=1.0)
    with pytest.raises(TypeError, match="config must be a BertConfig"):
        Bert({"vocab_size": 10})
    assert BertConfig.from_dict({**TINY, "architectures": ["BertForMaskedLM"], "model_type": "bert"}) == BertConfig(**TINY)


def test_checkpoint_round_trip(tmp_path):
    with tx.use_backend("numpy"):
        m = perturbed(tiny(np.float32))
        m.save(tmp_path / "bert")
        back = Bert.load(tmp_path / "bert")
        assert isinstance(back, Bert) and back.config == m.config and list(back.parameters()) == list(m.parameters())
        ids, mask, types, _ = batch()
        m.eval()
        back.eval()
        a, b = m(ids, mask, types), back(ids, mask, types)
        np.testing.assert_array_equal(a.logits, b.logits)
        np.testing.assert_array_equal(a.last_hidden_state, b.last_hidden_state)
