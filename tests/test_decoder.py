"""Pre-packed inference weights (Model.pack_weights) and the fused C++ decoding step
(generation/fused.py → _core.GPTDecoder): the fused step must give the Python path's logits bit
for bit (same kernels, same order, same packed weights) — for fp32 and bf16 packing, batches
with left padding, beam reordering, every ISA variant and thread count; bf16 stays within a
stated tolerance of fp32; bad input raises instead of crashing."""
import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext.generation.kv_cache import GPTCache
from transformer_ext.models import GPT, GPTConfig

CFG = dict(vocab_size=97, n_positions=48, n_embd=32, n_layer=2, n_head=4)


def _model(seed=0, **kw):
    m = GPT(GPTConfig(**{**CFG, **kw}, seed=seed))
    m.eval()
    return m


def _core():
    core = tx._backend.core
    if core is None or not hasattr(core, "GPTDecoder"):
        pytest.skip("compiled core not available")
    return core


def _decode_both(m, ids, mask, steps, reorder=None):
    """Logits of `steps` greedy steps from the fused and the Python path, side by side."""
    fused, ref = GPTCache(m, ids.shape[0], ids.shape[1] + steps), GPTCache(m, ids.shape[0], ids.shape[1] + steps, fused=False)
    la, lb = fused.prefill(ids, mask), ref.prefill(ids, mask)
    out = [(la, lb)]
    for s in range(steps):
        if reorder is not None and s == steps // 2:
            fused.reorder(reorder)
            ref.reorder(reorder)
            la, lb = la[reorder], lb[reorder]
        tok = np.argmax(lb, -1)
        la, lb = fused.step(tok), ref.step(tok)
        out.append((la, lb))
    return out


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_fused_step_equals_python_path(isa, dtype):
    m = _model(activation_function="gelu_new").pack_weights(dtype)
    assert m.packed_dtype == dtype
    rng = np.random.default_rng(0)
    ids = rng.integers(0, CFG["vocab_size"], (3, 6))
    mask = np.ones((3, 6), bool)
    mask[0, :2] = False  # a left-padded row
    for a, b in _decode_both(m, ids, mask, 8, reorder=np.array([2, 2, 0])):
        assert a.dtype == np.float32 and a.shape == (3, CFG["vocab_size"])
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_fused_step_other_activations(act):
    _core()
    with tx.use_backend("cpp"):
        m = _model(activation_function=act).pack_weights("fp32")
        ids = np.array([[3, 1, 4, 1, 5]])
        for a, b in _decode_both(m, ids, None, 4):
            np.testing.assert_array_equal(a, b)


def test_fused_step_thread_count_invariant(threads):
    _core()
    # wide enough that the GEMVs and attention split across 2 threads
    m = _model(n_embd=256, n_head=4, vocab_size=4000).pack_weights("fp32")
    ids = np.arange(10)[None]
    logits = []
    with tx.use_backend("cpp"):
        for n in (1, 2):
            threads(n)
            c = GPTCache(m, 1, 16)
            c.prefill(ids)
            logits.append([c.step(np.array([t])) for t in (7, 8, 9)])
    for a, b in zip(*logits):
        np.testing.assert_array_equal(a, b)


def test_fused_step_matches_full_forward():
    """Against the plain (uncached, unpacked) model: the same logits within float32 rounding
    (the tied head multiplies by the packed Eᵀ in one path and by E read transposed in the other)."""
    _core()
    with tx.use_backend("cpp"):
        m = _model()
        ids = np.random.default_rng(1).integers(0, CFG["vocab_size"], (1, 12))
        full = m(ids)[0]
        c = GPTCache(m, 1, 12)  # packs the weights (fp32) at prefill
        c.prefill(ids[:, :6])
        assert m.packed_dtype == "fp32"
        steps = [c.step(ids[:, t])[0] for t in range(6, 12)]
    np.testing.assert_allclose(np.stack(steps), full[6:], rtol=1e-5, atol=1e-5)


def test_bf16_logits_close_to_fp32_and_same_greedy():
    """bf16 rounds each weight with relative error <= 2^-9 (8 significant bits, round to nearest);
    activations and sums stay float32. Through 2 layers and the head the logits move by a few
    times that relative to their spread: we hold them to 5% of the logits' standard deviation
    (measured 1.3%), and the greedy continuation of a short prompt must not change."""
    _core()
    with tx.use_backend("cpp"):
        m = _model(initializer_range=0.2)
        prompt = np.array([[5, 17, 33, 2, 8]])
        ref_logits = m(prompt)
        ref = m.generate(prompt, 12)
        m.pack_weights("bf16")
        got_logits = m(prompt)
        got = m.generate(prompt, 12)
    assert np.abs(got_logits - ref_logits).max() <= 0.05 * ref_logits.std()
    assert not np.array_equal(got_logits, ref_logits)  # the bf16 weights are really in use
    np.testing.assert_array_equal(got, ref)


def test_pack_weights_lifecycle():
    m = _model()
    ids = np.array([[1, 2, 3]])
    with tx.use_backend("cpp"):
        plain = m(ids)
        m.train()
        m.pack_weights("bf16")
        assert not m.training and m.packed_dtype == "bf16"
        assert all(lin.packed is not None for lin in m._linears())
        m.train()  # training would make the copies stale: they go
        assert m.packed_dtype is None and all(lin.packed is None for lin in m._linears())
        m.eval()
        np.testing.assert_array_equal(m(ids), plain)
        m.pack_weights("fp32")
        other = _model(seed=5)
        m.load_state_dict(other.state_dict())  # loading new weights refreshes the packed copies
        assert m.packed_dtype == "fp32"
        np.testing.assert_allclose(m(ids), other(ids), rtol=1e-5, atol=1e-6)
        m.unpack_weights()
        assert m.packed_dtype is None
    with pytest.raises(ValueError, match="dtype must be 'fp32' or 'bf16'"):
        m.pack_weights("int8")
    with pytest.raises(TypeError, match="float32 model"):
        GPT(GPTConfig(**CFG), dtype=np.float64).pack_weights()


def test_numpy_backend_never_uses_the_fused_step():
    m = _model()
    with tx.use_backend("numpy"):
        c = GPTCache(m, 1, 8)
        c.prefill(np.array([[1, 2]]))
        c.step(np.array([3]))
        assert m.packed_dtype is None  # nothing packed behind the user's back on NumPy


def test_decoder_binding_rejects_bad_input():
    core = _core()
    from transformer_ext.generation.fused import gpt_decoder
    with tx.use_backend("cpp"):
        m = _model().pack_weights("fp32")
        dec = gpt_decoder(m)
        assert dec is not None
        B, H, T, dk = 1, CFG["n_head"], 8, CFG["n_embd"] // CFG["n_head"]
        k = [np.zeros((B, H, T, dk), np.float32) for _ in range(CFG["n_layer"])]
        v = [np.zeros((B, H, T, dk), np.float32) for _ in range(CFG["n_layer"])]
        km = np.ones((B, T), bool)
        ok = dec.step(np.array([1]), np.array([0]), 0, k, v, km)
        assert ok.shape == (1, CFG["vocab_size"]) and np.isfinite(ok).all()
        with pytest.raises(ValueError, match="token id out of range"):
            dec.step(np.array([CFG["vocab_size"]]), np.array([0]), 0, k, v, km)
        with pytest.raises(ValueError, match="position out of range"):
            dec.step(np.array([1]), np.array([CFG["n_positions"]]), 0, k, v, km)
        with pytest.raises(ValueError, match="cache column out of range"):
            dec.step(np.array([1]), np.array([0]), T, k, v, km)
        with pytest.raises(ValueError, match="expected \\(B, n_head, T_max, d_k\\)"):
            dec.step(np.array([1]), np.array([0]), 0, [np.zeros((B, H, T, dk + 1), np.float32)] * 2, v, km)
        with pytest.raises(ValueError, match="one k and one v cache per layer"):
            dec.step(np.array([1]), np.array([0]), 0, k[:1], v, km)
        with pytest.raises(ValueError, match="key_mask"):
            dec.step(np.array([1]), np.array([0]), 0, k, v, km.astype(np.int8))
        g = m.ln_f.weight.value
        lin = m.h[0].attn.qkv
        good = (lin.packed.data, lin.packed.K, lin.packed.N, 0, None)
        with pytest.raises(TypeError, match="'ln_1.weight' must be float32"):
            core.GPTDecoder(CFG["n_head"], 1e-5, 2, m.wte.weight.value, m.wpe.weight.value,
                            [(None,) * 8], g, g, good)
        for bad, msg in [((lin.packed.data[:-1],) + good[1:], "wrong buffer size"),
                         (good[:1] + (lin.packed.K + 1,) + good[2:], "must be a \\(32, 96\\) packed weight")]:
            with pytest.raises(ValueError, match=msg):
                core.GPTDecoder(CFG["n_head"], 1e-5, 2, m.wte.weight.value, m.wpe.weight.value,
                                [(g, g, bad) + (None,) * 5], g, g, good)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_bert_and_seq2seq_eval_with_packed_weights(dtype):
    """Every Linear of any model packs: fp32 gives the unpacked outputs up to float32 rounding
    (the out_in layouts are summed in a different order), bf16 within the bf16 bound above."""
    from transformer_ext.models import Bert, BertConfig, Seq2Seq, Seq2SeqConfig
    _core()
    tol = 1e-5 if dtype == "fp32" else 0.05
    rng = np.random.default_rng(2)
    with tx.use_backend("cpp"):
        bert = Bert(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=16, add_mlm_head=True))
        bert.eval()
        ids = rng.integers(0, 50, (2, 9))
        ref = bert(ids)
        got = bert.pack_weights(dtype)(ids)
        for a, b in [(got.last_hidden_state, ref.last_hidden_state), (got.logits, ref.logits)]:
            assert np.abs(a - b).max() <= tol * b.std()
        s2s = Seq2Seq(Seq2SeqConfig(src_vocab_size=40, tgt_vocab_size=40, d_model=32, n_head=4, num_encoder_layers=1,
                                    num_decoder_layers=1, d_ff=64, max_len=16))
        s2s.eval()
        src, tgt = rng.integers(3, 40, (2, 7)), rng.integers(3, 40, (2, 5))
        ref = s2s(src, tgt)
        got = s2s.pack_weights(dtype)(src, tgt)
        assert np.abs(got - ref).max() <= tol * ref.std()
        assert s2s.generate(src, 4).shape[0] == 2  # the Python KV-cache path runs on packed weights
