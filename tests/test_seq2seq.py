"""Seq2Seq (encoder–decoder transformer, torch.nn.Transformer layout) with hand-written backward:
parameter names, whole-model gradients (finite differences in float64 on numpy with padding in
source and target; cpp vs numpy), parity with torch.nn.Transformer wrapped in the same
embeddings / positions / output projection (logits, gradients, 3 AdamW steps), learning a
synthetic translation task (numbers in digits → English words) to ≥ 95% exact match with greedy
decoding, attention weights, shared embeddings and input errors."""
import math
import time

import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext import ops
from transformer_ext.generation import greedy_translate
from transformer_ext.models import Seq2Seq, Seq2SeqConfig

from conftest import fd_check_params, needs_core

SV, TV = 20, 24
TINY = dict(src_vocab_size=SV, tgt_vocab_size=TV, d_model=16, n_head=2, num_encoder_layers=2, num_decoder_layers=2,
            d_ff=32, max_len=12, dropout=0.0)


def tiny(dtype=np.float64, **kw):
    return Seq2Seq(Seq2SeqConfig(**{**TINY, **kw}), dtype=dtype)


def batch(B=2, Ts=7, Tt=6, seed=0):
    """src (row 1 padded after 4 tokens), tgt_in (BOS first; row 0 padded after 4), labels (-100 at padding)."""
    rng = np.random.default_rng(seed)
    src = rng.integers(3, SV, (B, Ts))
    src[1, 4:] = 0
    tgt = rng.integers(3, TV, (B, Tt + 1))
    tgt[:, 0] = 1
    tgt[0, 5:] = 0
    tgt_in, labels = tgt[:, :-1], tgt[:, 1:].copy()
    labels[labels == 0] = -100
    return src, tgt_in, labels


def loss_and_grads(model, src, tgt_in, labels, reseed=None):
    model.zero_grad()
    if reseed is not None:
        model.seed_dropout(reseed)
    logits = model(src, tgt_in)
    loss, dlogits = ops.cross_entropy(logits, labels)
    model.backward(dlogits)
    return loss, logits


def perturbed(model, scale=0.05, seed=3):
    """Break the init's symmetries (zero biases, unit LayerNorm), per tensor (the flat layouts'
    padding differs between dtypes)."""
    rng = np.random.default_rng(seed)
    for value in model.parameters().values():
        value += rng.normal(0, scale, value.shape).astype(model.dtype)
    return model


def torch_names(n_enc, n_dec):
    names = []
    for i in range(n_enc):
        p = f"encoder.layers.{i}"
        names += [f"{p}.self_attn.in_proj_weight", f"{p}.self_attn.in_proj_bias", f"{p}.self_attn.out_proj.weight",
                  f"{p}.self_attn.out_proj.bias"]
        for sub in ("linear1", "linear2", "norm1", "norm2"):
            names += [f"{p}.{sub}.weight", f"{p}.{sub}.bias"]
    names += ["encoder.norm.weight", "encoder.norm.bias"]
    for i in range(n_dec):
        p = f"decoder.layers.{i}"
        for att in ("self_attn", "multihead_attn"):
            names += [f"{p}.{att}.in_proj_weight", f"{p}.{att}.in_proj_bias", f"{p}.{att}.out_proj.weight",
                      f"{p}.{att}.out_proj.bias"]
        for sub in ("linear1", "linear2", "norm1", "norm2", "norm3"):
            names += [f"{p}.{sub}.weight", f"{p}.{sub}.bias"]
    return names + ["decoder.norm.weight", "decoder.norm.bias"]


# ---------------------------------------------------------------------------- layout and init
def test_parameter_names_shapes_and_init():
    m = tiny(np.float32)
    P = m.parameters()
    assert list(P) == ["src_embed.weight", "tgt_embed.weight"] + torch_names(2, 2) + ["generator.weight", "generator.bias"]
    assert list(m.gradients()) == list(P)
    d = 16
    assert P["src_embed.weight"].shape == (SV, d) and P["tgt_embed.weight"].shape == (TV, d)
    assert P["encoder.layers.0.self_attn.in_proj_weight"].shape == (3 * d, d)
    assert P["decoder.layers.1.multihead_attn.in_proj_bias"].shape == (3 * d,)
    assert P["decoder.layers.1.linear1.weight"].shape == (32, d) and P["generator.weight"].shape == (TV, d)
    for name in P:
        assert np.shares_memory(P[name], m.store.flat), name
    # torch.nn.Transformer's init: xavier-uniform matrices, zero biases, LayerNorm (1, 0)
    w = P["decoder.layers.0.linear1.weight"]
    assert np.abs(w).max() <= math.sqrt(6 / (16 + 32)) and w.std() > 0.5 * math.sqrt(2 / (16 + 32))
    np.testing.assert_array_equal(P["encoder.layers.0.self_attn.in_proj_bias"], 0)
    np.testing.assert_array_equal(P["decoder.norm.weight"], 1)
    assert abs(P["tgt_embed.weight"].std() - d ** -0.5) < 0.05
    shared = tiny(np.float32, src_vocab_size=TV, share_embeddings=True)
    names = list(shared.parameters())
    assert names[0] == "shared.weight" and "src_embed.weight" not in names and "tgt_embed.weight" not in names
    assert shared.src_embed.weight is shared.tgt_embed.weight
    np.testing.assert_array_equal(tiny(np.float32).store.flat, m.store.flat)  # deterministic


# ---------------------------------------------------------------------------- gradients
def fd_check_model(model, args, samples=3, reseed=None):
    """Central differences of the mean cross-entropy for every tensor."""
    loss_and_grads(model, *args, reseed=reseed)

    def loss():
        if reseed is not None:
            model.seed_dropout(reseed)
        return ops.cross_entropy(model(args[0], args[1]), args[2])[0]

    return fd_check_params(model, loss, samples)


def test_whole_model_gradcheck_float64_with_padding():
    with tx.use_backend("numpy"):
        fd_check_model(perturbed(tiny()), batch())


def test_gradcheck_shared_embeddings_gelu_and_dropout():
    with tx.use_backend("numpy"):
        m = perturbed(tiny(src_vocab_size=TV, share_embeddings=True, activation="gelu", dropout=0.2,
                           num_encoder_layers=1, num_decoder_layers=1))
        fd_check_model(m, batch(Ts=5, Tt=5), samples=2, reseed=11)
        m.seed_dropout(1)
        a = m(*batch()[:2])
        m.seed_dropout(2)
        assert not np.allclose(a, m(*batch()[:2]))  # the masks really were active


@needs_core
def test_cpp_gradients_match_numpy():
    args = batch(B=3, Ts=9, Tt=8, seed=1)
    out = {}
    for backend, dtype in (("numpy", np.float64), ("cpp", np.float32)):
        with tx.use_backend(backend):
            m = perturbed(tiny(dtype))
            loss, logits = loss_and_grads(m, *args)
            out[backend] = (loss, logits, {n: g.copy() for n, g in m.gradients().items()})
    (l64, z64, g64), (l32, z32, g32) = out["numpy"], out["cpp"]
    assert l32 == pytest.approx(l64, rel=1e-5)
    np.testing.assert_allclose(z32, z64, rtol=0, atol=1e-4 * np.abs(z64).max())
    # float32 backward through 4 layers: ~1e-6 relative per op, a few dozen ops deep; relative to
    # each tensor's max, floored at 1e-3 of the largest gradient (exact-zero ones, e.g. key biases)
    top = max(np.abs(g).max() for g in g64.values())
    for name in g64:
        scale = max(np.abs(g64[name]).max(), 1e-3 * top)
        np.testing.assert_allclose(g32[name], g64[name], rtol=0, atol=1e-4 * scale, err_msg=name)


# ---------------------------------------------------------------------------- torch parity
def torch_twin(c: Seq2SeqConfig, torch_dtype):
    """torch.nn.Transformer (batch_first, post-LN, final norms) with our embeddings (√d-scaled),
    sinusoidal positions and output projection around it."""
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    class Twin(tnn.Module):
        def __init__(self):
            super().__init__()
            self.src_embed = tnn.Embedding(c.src_vocab_size, c.d_model)
            self.tgt_embed = tnn.Embedding(c.tgt_vocab_size, c.d_model)
            self.transformer = tnn.Transformer(c.d_model, c.n_head, c.num_encoder_layers, c.num_decoder_layers,
                                               c.d_ff, dropout=0.0, activation=c.activation, batch_first=True,
                                               norm_first=False)
            self.generator = tnn.Linear(c.d_model, c.tgt_vocab_size)

        def forward(self, src, tgt):
            pe = torch.from_numpy(ops.sinusoidal_positions(c.max_len, c.d_model, dtype=np.float64)).to(torch_dtype)
            s = math.sqrt(c.d_model)
            x = self.src_embed(src) * s + pe[:src.shape[1]]
            y = self.tgt_embed(tgt) * s + pe[:tgt.shape[1]]
            causal = torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool).triu(1)  # True = masked
            h = self.transformer(x, y, tgt_mask=causal, src_key_padding_mask=src == c.pad_id,
                                 tgt_key_padding_mask=tgt == c.pad_id, memory_key_padding_mask=src == c.pad_id)
            return self.generator(h)

    return Twin().to(torch_dtype)


def twin_name(name):
    return "transformer." + name if name.startswith(("encoder.", "decoder.")) else name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_transformer_twin_logits_gradients_and_adamw(dtype):
    torch = pytest.importorskip("torch")
    torch_dtype = torch.float32 if dtype == np.float32 else torch.float64
    backend = "cpp" if dtype == np.float32 and tx._backend.core is not None else "numpy"
    rtol, gtol, ptol = (1e-4, 1e-4, 1e-5) if dtype == np.float32 else (1e-10, 1e-9, 1e-9)
    with tx.use_backend(backend):
        m = perturbed(tiny(dtype))
        twin = torch_twin(m.config, torch_dtype)
        # our encoder/decoder names ARE torch.nn.Transformer's state-dict names
        assert list(twin.transformer.state_dict()) == torch_names(2, 2)
        assert [twin_name(n) for n in m.parameters()] == [n for n, _ in twin.named_parameters()]
        with torch.no_grad():
            for name, value in m.parameters().items():
                twin.get_parameter(twin_name(name)).copy_(torch.from_numpy(value.copy()))
        src, tgt_in, labels = batch(B=2, Ts=7, Tt=6)
        ts, tt, tl = (torch.from_numpy(a) for a in (src, tgt_in, labels))

        def tloss_fn():
            z = twin(ts, tt)
            return z, torch.nn.functional.cross_entropy(z.reshape(-1, TV), tl.reshape(-1))

        loss, logits = loss_and_grads(m, src, tgt_in, labels)
        tz, tloss = tloss_fn()
        tloss.backward()
        np.testing.assert_allclose(logits, tz.detach().numpy(), rtol=rtol, atol=rtol * 1e-2)
        assert loss == pytest.approx(tloss.item(), rel=rtol)
        G = m.gradients()
        top = max(p.grad.abs().max().item() for p in twin.parameters())
        for name, g in G.items():
            ref = twin.get_parameter(twin_name(name)).grad.numpy()
            scale = max(np.abs(ref).max(), 1e-3 * top)  # floor: exact-zero gradients (key biases)
            np.testing.assert_allclose(g, ref, rtol=0, atol=gtol * scale, err_msg=name)

        # 3 AdamW steps (decay on matrices only); float32: torch steps on our gradients (see test_gpt)
        lr, wd = 1e-2, 0.1
        named = {n: twin.get_parameter(twin_name(n)) for n in m.parameters()}
        opt = torch.optim.AdamW([{"params": [p for p in named.values() if p.ndim >= 2], "weight_decay": wd},
                                 {"params": [p for p in named.values() if p.ndim < 2], "weight_decay": 0.0}], lr=lr)
        s, nd = m.store, m.store.n_decay
        mom, vel = np.zeros_like(s.flat), np.zeros_like(s.flat)
        for step in range(1, 4):
            if step > 1:
                loss_and_grads(m, src, tgt_in, labels)
                opt.zero_grad()
                tloss_fn()[1].backward()
            if dtype == np.float32:
                for name, p in named.items():
                    p.grad = torch.from_numpy(G[name].copy())
            ops.adamw_step(s.flat[:nd], s.flat_grad[:nd], mom[:nd], vel[:nd], step, lr, weight_decay=wd)
            ops.adamw_step(s.flat[nd:], s.flat_grad[nd:], mom[nd:], vel[nd:], step, lr, weight_decay=0.0)
            opt.step()
        P = m.parameters()
        # atol 1e-9 in float64: the key biases' exact gradient is 0 and Adam's m/√v turns each
        # side's ~1e-17 rounding noise into its own (tiny, ~1e-11) steps
        atol = ptol * 1e-2 if dtype == np.float32 else 1e-9
        for name, p in named.items():
            np.testing.assert_allclose(P[name], p.detach().numpy(), rtol=ptol, atol=atol, err_msg=name)


# ---------------------------------------------------------------------------- learning a translation
ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
       "sixteen seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
WORDS = ["<pad>", "<bos>", "<eos>"] + ONES + TENS[2:] + ["hundred"]


def in_words(n):
    out = []
    if n >= 100:
        out += [ONES[n // 100], "hundred"]
        n %= 100
        if n == 0:
            return out
    if n < 20:
        return out + [ONES[n]]
    return out + [TENS[n // 10]] + ([ONES[n % 10]] if n % 10 else [])


def number_pairs(numbers):
    """src: digits right-aligned (token 3 + digit, left-padded with 0, so each place value keeps its
    position), tgt: <bos> words <eos> (right-padded with 0)."""
    src = np.zeros((len(numbers), 3), np.int64)
    tgt = np.zeros((len(numbers), 6), np.int64)  # the longest: <bos> seven hundred seventy seven <eos>
    for r, n in enumerate(numbers):
        digits = [3 + int(ch) for ch in str(n)]
        src[r, 3 - len(digits):] = digits
        words = [1] + [WORDS.index(w) for w in in_words(n)] + [2]
        tgt[r, :len(words)] = words
    return src, tgt


def test_learns_numbers_to_words(threads):
    """1000 numbers, 850 for training, 150 held out: greedy decoding must translate ≥ 95% of the
    held-out numbers exactly (it reaches ~99%: the misses are single digits, 1% of the data), and
    the training loss must fall from ≈ ln(32) to below 0.05 (it reaches ~0.01) — 500 AdamW steps
    of 64 pairs, ~6-10 s on one thread."""
    assert in_words(0) == ["zero"] and in_words(115) == ["one", "hundred", "fifteen"]
    assert in_words(340) == ["three", "hundred", "forty"] and in_words(777) == ["seven", "hundred", "seventy", "seven"]
    backend = "cpp" if tx._backend.core is not None else "numpy"
    if backend == "cpp":
        threads(1)
    perm = np.random.default_rng(0).permutation(1000)
    train, held = perm[:850], perm[850:]
    s_train, t_train = number_pairs(train)
    s_held, t_held = number_pairs(held)
    with tx.use_backend(backend):
        c = Seq2SeqConfig(src_vocab_size=13, tgt_vocab_size=len(WORDS), d_model=32, n_head=4, num_encoder_layers=1,
                          num_decoder_layers=1, d_ff=64, max_len=8, dropout=0.0, pad_id=0, bos_id=1, eos_id=2, seed=0)
        m = Seq2Seq(c, np.float32)
        s = m.store
        mom, vel = np.zeros_like(s.flat), np.zeros_like(s.flat)
        rng = np.random.default_rng(1)
        steps, lr_max, warmup = 500, 3e-3, 50
        losses = []
        t0 = time.perf_counter()
        for step in range(1, steps + 1):
            rows = rng.integers(0, len(train), 64)
            src, tgt = s_train[rows], t_train[rows]
            labels = tgt[:, 1:].copy()
            labels[labels == 0] = -100
            m.zero_grad()
            loss, dlogits = ops.cross_entropy(m(src, tgt[:, :-1]), labels)
            m.backward(dlogits)
            losses.append(loss)
            # linear warm-up, then cosine decay to 10%
            frac = (step - warmup) / (steps - warmup)
            lr = lr_max * step / warmup if step <= warmup else lr_max * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))
            ops.adamw_step(s.flat, s.flat_grad, mom, vel, step, lr, weight_decay=0.0)
        train_time = time.perf_counter() - t0
        out = greedy_translate(m, s_held, max_len=5)
    exact = [np.array_equal(o[:len(t)], t) and np.all(o[len(t):] == 0)
             for o, t in zip(out, (row[:np.count_nonzero(row)] for row in t_held))]
    acc = float(np.mean(exact))
    assert losses[0] > 3.0
    assert np.mean(losses[-20:]) < 0.05, (losses[0], losses[-20:], train_time)
    assert acc >= 0.95, (acc, train_time)


# ---------------------------------------------------------------------------- behaviour
def test_encode_decode_split_attention_and_padding():
    with tx.use_backend("numpy"):
        m = perturbed(tiny())
        m.eval()
        src, tgt_in, _ = batch()
        logits = m(src, tgt_in)
        memory = m.encode(src)
        assert memory.shape == (2, 7, 16)
        np.testing.assert_allclose(m.decode(memory, m.padding_mask(src), tgt_in), logits, rtol=1e-12)
        # padding: extra pad columns change nothing; the decoder is causal
        longer = np.concatenate([src, np.zeros((2, 3), np.int64)], axis=1)  # extra padding columns
        np.testing.assert_allclose(m(longer, tgt_in), logits, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(m(src, tgt_in[:, :3]), logits[:, :3], rtol=1e-10, atol=1e-12)
        logits2, att = m(src, tgt_in, return_attention=True)
        np.testing.assert_allclose(logits2, logits, rtol=1e-12)
        assert [len(att[k]) for k in ("encoder", "decoder_self", "cross")] == [2, 2, 2]
        assert att["encoder"][0].shape == (2, 2, 7, 7) and att["cross"][1].shape == (2, 2, 6, 7)
        assert np.all(att["cross"][0][1, :, :, 4:] == 0) and np.all(att["encoder"][1][1, :, :, 4:] == 0)
        assert np.all(np.triu(att["decoder_self"][0], k=1) == 0)
        assert np.all(att["decoder_self"][0][0, :, :, 5:] == 0)  # padded target keys
        one = m(src[0], tgt_in[0])
        assert one.shape == (6, TV)
        np.testing.assert_allclose(one, logits[0], rtol=1e-10, atol=1e-12)
        with pytest.raises(RuntimeError, match="Seq2Seq.backward: no forward to differentiate.*model.train"):
            m.backward(np.zeros_like(logits))
        m.train()
        m(src[0], tgt_in[0])
        m.backward(np.ones((6, TV)))


def test_greedy_translate_matches_manual_argmax():
    with tx.use_backend("numpy"):
        m = perturbed(tiny(), scale=0.5)
        src = batch()[0]
        out = m.generate(src, max_len=6)
        assert out.dtype == np.int64 and np.all(out[:, 0] == 1)
        assert m.training  # generation restores the mode
        m.eval()
        for r in range(2):
            seq = [1]
            for _ in range(6):
                nxt = int(np.argmax(m(src[r:r + 1], np.array([seq]))[0, -1]))
                seq.append(nxt)
                if nxt == 2:
                    break
            row = out[r][:len(seq)]
            np.testing.assert_array_equal(row, seq)
            assert np.all(out[r][len(seq):] == 0)  # padded after EOS
        np.testing.assert_array_equal(greedy_translate(m, src[0], max_len=6), out[0][:len(greedy_translate(m, src[0], 6))])
        with pytest.raises(ValueError, match="max_len must be > 0"):
            greedy_translate(m, src, 0)
        with pytest.raises(ValueError, match="exceed the model's max_len=12"):
            greedy_translate(m, src, 12)


def test_bad_inputs():
    with tx.use_backend("numpy"):
        m = tiny()
        src, tgt_in, _ = batch()
        with pytest.raises(ValueError, match=r"src_ids: token id 20 out of range \[0, src_vocab_size=20\)"):
            m(np.array([[1, 20]]), tgt_in[:1])
        with pytest.raises(ValueError, match=r"tgt_ids: token id 24 out of range \[0, tgt_vocab_size=24\)"):
            m(src, np.full((2, 3), 24))
        with pytest.raises(ValueError, match="src_ids length 13 exceeds max_len=12"):
            m(np.ones((1, 13), int), tgt_in[:1])
        with pytest.raises(ValueError, match="tgt_ids length 13 exceeds max_len=12"):
            m(src[:1], np.ones((1, 13), int))
        with pytest.raises(ValueError, match=r"empty batch: src_ids has shape \(0, 4\)"):
            m(np.zeros((0, 4), int), np.zeros((0, 4), int))
        with pytest.raises(ValueError, match="must have the same batch size"):
            m(src, tgt_in[:1])
        with pytest.raises(TypeError, match="tgt_ids must be an integer array"):
            m(src, np.zeros((2, 3)))
        with pytest.raises(ValueError, match=r"src_mask has shape \(2, 3\), memory has \(2, 7\)"):
            m.decode(m.encode(src), np.ones((2, 3), bool), tgt_in)
        logits = m(src, tgt_in)
        with pytest.raises(ValueError, match=r"dlogits has shape \(2, 5, 24\), the forward gave \(2, 6, 24\)"):
            m.backward(np.zeros((2, 5, TV)))
        assert logits.shape == (2, 6, TV)
    with pytest.raises(ValueError, match="d_model=10 is not divisible by n_head=4"):
        Seq2SeqConfig(d_model=10, n_head=4)
    with pytest.raises(ValueError, match="share_embeddings needs src_vocab_size == tgt_vocab_size"):
        Seq2SeqConfig(src_vocab_size=10, tgt_vocab_size=12, share_embeddings=True)
    with pytest.raises(ValueError, match="unsupported activation 'tanh'"):
        Seq2SeqConfig(activation="tanh")
    with pytest.raises(ValueError, match=r"eos_id=30 out of range \[0, tgt_vocab_size=24\)"):
        Seq2SeqConfig(**{**TINY, "eos_id": 30})


def test_checkpoint_round_trip(tmp_path):
    with tx.use_backend("numpy"):
        for kw in ({}, dict(src_vocab_size=TV, share_embeddings=True)):
            m = perturbed(tiny(np.float32, **kw))
            m.save(tmp_path / "s2s")
            back = Seq2Seq.load(tmp_path / "s2s")
            assert isinstance(back, Seq2Seq) and back.config == m.config
            assert list(back.parameters()) == list(m.parameters())
            src, tgt_in, _ = batch()
            np.testing.assert_array_equal(m.eval()(src, tgt_in), back.eval()(src, tgt_in))
