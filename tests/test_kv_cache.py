"""KV-cache decoding (generation/kv_cache.py) gives the same logits as recomputing the full
sequence at every step, for GPT (batched, left padding) and the Seq2Seq decoder (batched)."""
import numpy as np
import pytest

import transformer_ext as tx

from transformer_ext.generation.kv_cache import GPTCache, Seq2SeqCache
from transformer_ext.models import GPT, GPTConfig, Seq2Seq, Seq2SeqConfig

# float32: logits are sums of O(d) products through 2 layers; the cached and full paths differ
# only in summation order inside the kernels → agreement to a few ulps of O(1) values.
TOL = dict(rtol=1e-4, atol=2e-5)


def gpt():
    m = GPT(GPTConfig(vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=4, seed=3))
    m.eval()
    return m


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_gpt_cache_matches_full_recompute(backend):
    if backend == "cpp" and tx._backend.core is None:
        pytest.skip("no C++ backend")
    with tx.use_backend(backend):
        _check_gpt_cache()


def _check_gpt_cache():
    m = gpt()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, (3, 5))
    cache = GPTCache(m, 3, 16)
    logits = cache.prefill(ids)
    np.testing.assert_allclose(logits, m(ids)[:, -1], **TOL)
    seq = ids
    for _ in range(8):
        nxt = rng.integers(0, 50, 3)
        seq = np.concatenate([seq, nxt[:, None]], 1)
        np.testing.assert_allclose(cache.step(nxt), m(seq)[:, -1], **TOL)
    assert cache.t == 13


def test_gpt_cache_left_padding_matches_unpadded_rows():
    m = gpt()
    rng = np.random.default_rng(1)
    rows = [rng.integers(0, 50, n) for n in (6, 3, 1)]
    T = 6
    ids = np.zeros((3, T), np.int64)
    am = np.zeros((3, T), np.int64)
    for i, r in enumerate(rows):
        ids[i, T - len(r):] = r
        am[i, T - len(r):] = 1
    cache = GPTCache(m, 3, 12)
    logits = [cache.prefill(ids, am)]
    steps = rng.integers(0, 50, (4, 3))
    for s in steps:
        logits.append(cache.step(s))
    for i, r in enumerate(rows):
        seq = r
        np.testing.assert_allclose(logits[0][i], m(seq)[-1], **TOL)
        for j, s in enumerate(steps):
            seq = np.append(seq, s[i])
            np.testing.assert_allclose(logits[j + 1][i], m(seq)[-1], **TOL)


def test_gpt_cache_reorder_and_overflow():
    m = gpt()
    ids = np.array([[1, 2], [3, 4]])
    cache = GPTCache(m, 2, 3)
    cache.prefill(ids)
    cache.reorder(np.array([1, 1]))
    np.testing.assert_allclose(cache.step(np.array([5, 5])), m(np.array([[3, 4, 5]] * 2))[:, -1], **TOL)
    with pytest.raises(ValueError, match="full"):
        cache.step(np.array([1, 1]))
    with pytest.raises(ValueError, match="n_positions"):
        GPTCache(m, 1, 33)


def test_seq2seq_cache_matches_full_decode():
    c = Seq2SeqConfig(src_vocab_size=40, tgt_vocab_size=30, d_model=32, n_head=4, num_encoder_layers=2,
                      num_decoder_layers=2, d_ff=48, max_len=20, seed=1)
    m = Seq2Seq(c)
    m.eval()
    rng = np.random.default_rng(2)
    src = rng.integers(3, 40, (3, 7))
    src[1, 5:] = c.pad_id  # padded source row
    memory = m.encode(src)
    smask = m.padding_mask(src)
    cache = Seq2SeqCache(m, 10)
    cache.start(src)
    tgt = np.full((3, 1), c.bos_id)
    for t in range(8):
        got = cache.step(tgt[:, -1])
        np.testing.assert_allclose(got, m.decode(memory, smask, tgt)[:, -1], **TOL)
        nxt = rng.integers(3, 30, 3)
        if t == 4:
            nxt[2] = c.pad_id  # a finished row's pad tokens are masked keys in both paths
        tgt = np.concatenate([tgt, nxt[:, None]], 1)
