"""transformer_ext.generation: greedy decoding equals argmax stepping by hand, sampling is
reproducible under a seed, top-k / top-p never emit a token outside the allowed set (and follow
the renormalised distribution), EOS handling, context windowing, mode restoration, errors."""
import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext.generation import filter_logits, generate, sample_next
from transformer_ext.models import GPT, GPTConfig


def tiny_gpt(**kw):
    c = GPTConfig(**{**dict(vocab_size=30, n_positions=10, n_embd=16, n_layer=1, n_head=2, seed=0), **kw})
    m = GPT(c, np.float64)
    rng = np.random.default_rng(1)
    for v in m.parameters().values():  # sharper, non-trivial next-token distributions
        v += rng.normal(0, 0.3, v.shape)
    return m


@pytest.fixture
def numpy_backend():
    with tx.use_backend("numpy"):
        yield


def test_greedy_equals_manual_argmax(numpy_backend):
    m = tiny_gpt()
    prompt = np.array([[3, 7, 1], [4, 4, 9]])
    out = generate(m, prompt, max_new_tokens=5)
    assert out.dtype == np.int64 and out.shape == (2, 8)
    np.testing.assert_array_equal(out[:, :3], prompt)
    m.eval()
    seq = prompt.copy()
    for _ in range(5):
        nxt = np.argmax(m(seq)[:, -1], axis=-1)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
    np.testing.assert_array_equal(out, seq)
    one = generate(m, prompt[1], max_new_tokens=5)  # 1-D in → 1-D out
    assert one.shape == (8,)
    np.testing.assert_array_equal(one, out[1])


def test_context_window_slides_past_n_positions(numpy_backend):
    m = tiny_gpt()
    out = generate(m, np.arange(8), max_new_tokens=6)  # 8 + 6 > n_positions = 10
    assert out.shape == (14,)
    m.eval()
    # the last token was chosen from the last 10 tokens of the sequence before it
    np.testing.assert_array_equal(out[-1], np.argmax(m(out[-11:-1])[-1]))


def test_mode_is_restored_and_no_activations_kept(numpy_backend):
    m = tiny_gpt(resid_pdrop=0.5)
    assert m.training
    a = generate(m, np.array([1, 2]), 4)
    b = generate(m, np.array([1, 2]), 4)
    np.testing.assert_array_equal(a, b)  # eval mode inside: no dropout
    assert m.training and m._pending is None
    m.eval()
    generate(m, np.array([1, 2]), 2)
    assert not m.training


def test_sampling_reproducible_under_seed(numpy_backend):
    m = tiny_gpt()
    prompt = np.array([[1, 2, 3], [5, 6, 7]])
    a = generate(m, prompt, 7, do_sample=True, seed=123)
    b = generate(m, prompt, 7, do_sample=True, seed=123)
    np.testing.assert_array_equal(a, b)
    c = generate(m, prompt, 7, do_sample=True, seed=124)
    assert not np.array_equal(a, c)
    g = np.random.default_rng(5)  # a Generator is accepted (and advanced)
    d1 = generate(m, prompt, 7, do_sample=True, seed=g)
    d2 = generate(m, prompt, 7, do_sample=True, seed=np.random.default_rng(5))
    np.testing.assert_array_equal(d1, d2)
    # temperature → 0 approaches greedy
    np.testing.assert_array_equal(generate(m, prompt, 5, do_sample=True, temperature=1e-6, seed=0),
                                  generate(m, prompt, 5))


def test_top_k_and_top_p_stay_in_allowed_set():
    rng = np.random.default_rng(0)
    p = np.array([0.30, 0.25, 0.15, 0.10, 0.08, 0.05, 0.04, 0.02, 0.01])
    logits = np.log(p)[None].repeat(20000, axis=0)
    perm = rng.permutation(len(p))  # allowed sets are not just a prefix of the vocabulary
    logits = logits[:, perm]
    pp = p[perm]

    def counts(**kw):
        tok = sample_next(logits, np.random.default_rng(1), **kw)
        return np.bincount(tok, minlength=len(p)) / len(tok)

    top3 = np.argsort(-pp)[:3]
    freq = counts(top_k=3)
    assert set(np.flatnonzero(freq)) == set(top3)
    np.testing.assert_allclose(freq[top3], pp[top3] / pp[top3].sum(), atol=0.015)  # renormalised
    # top_p = 0.6: 0.30 + 0.25 = 0.55 < 0.6, so the nucleus is {0.30, 0.25, 0.15}
    freq = counts(top_p=0.6)
    assert set(np.flatnonzero(freq)) == set(top3)
    # top_p = 0.5: the mass before 0.25 is 0.30 < 0.5 (kept), before 0.15 it is 0.55 (dropped)
    assert set(np.flatnonzero(counts(top_p=0.5))) == set(top3[:2])
    assert set(np.flatnonzero(counts(top_p=1e-9))) == {top3[0]}  # the top token is always kept
    # top-k first, then top-p on the renormalised survivors: 0.30/0.88 + 0.25/0.88 = 0.625 ≥ 0.6
    both = counts(top_k=5, top_p=0.6)
    assert set(np.flatnonzero(both)) == set(top3[:2])
    allowed5 = set(np.argsort(-pp)[:5])
    assert set(np.flatnonzero(counts(top_k=5, temperature=3.0))) <= allowed5
    freq = counts()  # unfiltered: every token appears, at its probability
    np.testing.assert_allclose(freq, pp, atol=0.012)
    z = filter_logits(logits[:2], top_k=2)
    assert np.isfinite(z).sum() == 4 and z.dtype == np.float64


def test_top_k_top_p_in_generate_only_emit_allowed_tokens(numpy_backend):
    m = tiny_gpt()
    prompt = np.zeros((64, 1), np.int64)
    m.eval()
    logits = m(prompt[:1])[0, -1]
    top2 = set(np.argsort(-logits)[:2])
    out = generate(m, prompt, 1, do_sample=True, top_k=2, seed=0)
    assert set(out[:, 1]) <= top2 and len(set(out[:, 1])) == 2


def test_eos_stops_and_fills(numpy_backend):
    m = tiny_gpt()
    prompt = np.array([[3, 7, 1], [4, 4, 9]])
    greedy = generate(m, prompt, 6)
    eos = int(greedy[0, 4])  # the 2nd generated token of row 0
    out = generate(m, prompt, 6, eos_token_id=eos)
    first = [np.flatnonzero(row[3:] == eos) for row in greedy]
    stop = max(f[0] if f.size else 6 for f in first) + 1
    assert out.shape[1] == 3 + min(stop, 6)
    for r in range(2):
        gen = out[r, 3:]
        hit = np.flatnonzero(gen == eos)
        if hit.size:
            k = hit[0]
            np.testing.assert_array_equal(gen[:k + 1], greedy[r, 3:3 + k + 1])
            assert np.all(gen[k:] == eos)  # finished rows are filled with EOS
    single = generate(m, prompt[0], 6, eos_token_id=eos)
    assert single[-1] == eos and single.shape == (3 + first[0][0] + 1,)


def test_errors(numpy_backend):
    m = tiny_gpt()
    with pytest.raises(ValueError, match="max_new_tokens must be > 0, got 0"):
        generate(m, np.array([1]), 0)
    with pytest.raises(ValueError, match="max_new_tokens must be > 0, got -3"):
        generate(m, np.array([1]), -3)
    with pytest.raises(TypeError, match="max_new_tokens must be an int"):
        generate(m, np.array([1]), 2.5)
    with pytest.raises(ValueError, match=r"empty prompt: ids has shape \(0,\)"):
        generate(m, np.array([], np.int64), 3)
    with pytest.raises(ValueError, match=r"empty prompt: ids has shape \(2, 0\)"):
        generate(m, np.zeros((2, 0), np.int64), 3)
    with pytest.raises(ValueError, match="prompt length 11 exceeds the context length n_positions=10"):
        generate(m, np.zeros(11, np.int64), 3)
    with pytest.raises(TypeError, match="ids must be an integer array"):
        generate(m, np.zeros(3), 3)
    with pytest.raises(ValueError, match="token id 30 out of range"):
        generate(m, np.array([30]), 3)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        generate(m, np.array([1]), 3, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        generate(m, np.array([1]), 3, do_sample=True, top_k=0)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        generate(m, np.array([1]), 3, do_sample=True, top_p=1.5)
    with pytest.raises(ValueError, match="eos_token_id=99 out of range"):
        generate(m, np.array([1]), 3, eos_token_id=99)
    assert m.training  # restored even after an error inside the loop


def test_translate_sampling_reproducible_and_top_k_1_is_greedy(numpy_backend):
    from transformer_ext.generation import greedy_translate, translate
    from transformer_ext.models import Seq2Seq, Seq2SeqConfig

    m = Seq2Seq(Seq2SeqConfig(src_vocab_size=15, tgt_vocab_size=15, d_model=16, n_head=2, num_encoder_layers=1,
                              num_decoder_layers=1, d_ff=32, max_len=10, dropout=0.1), np.float64)
    rng = np.random.default_rng(2)
    for v in m.parameters().values():
        v += rng.normal(0, 0.3, v.shape)
    src = np.array([[3, 4, 5, 0], [6, 7, 8, 9]])
    a = translate(m, src, max_len=6, do_sample=True, seed=7)
    np.testing.assert_array_equal(a, translate(m, src, max_len=6, do_sample=True, seed=7))
    assert a.dtype == np.int64 and np.all(a[:, 0] == m.config.bos_id) and a.shape[1] <= 7
    np.testing.assert_array_equal(translate(m, src, max_len=6, do_sample=True, top_k=1, seed=3),
                                  greedy_translate(m, src, max_len=6))
    assert greedy_translate(m, src).shape[1] <= m.config.max_len  # default: up to max_len - 1 new tokens
    with pytest.raises(ValueError, match="src_ids: token id 15 out of range"):
        translate(m, np.array([[15]]), max_len=3)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        translate(m, src, max_len=3, do_sample=True, temperature=-1.0)
