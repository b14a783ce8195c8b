"""model.generate / generate_stream (generation/decoding.py, on the KV cache): agreement with the
no-cache reference loop, left padding, seeds, top-k/top-p allowed sets, repetition penalty, stop
tokens and strings, beam search, Seq2Seq, streaming, bad input."""
import numpy as np
import pytest

from transformer_ext.generation import generate as reference_generate, translate
from transformer_ext.generation.decoding import _BeamHypotheses
from transformer_ext.models import GPT, GPTConfig, Seq2Seq, Seq2SeqConfig


def tiny_gpt(**kw):
    m = GPT(GPTConfig(**{**dict(vocab_size=40, n_positions=32, n_embd=32, n_layer=2, n_head=4, seed=0), **kw}))
    rng = np.random.default_rng(1)
    for v in m.parameters().values():  # sharper next-token distributions: argmax gaps >> fp32 noise
        v += rng.normal(0, 0.3, v.shape).astype(v.dtype)
    return m


def tiny_s2s():
    c = Seq2SeqConfig(src_vocab_size=30, tgt_vocab_size=25, d_model=32, n_head=4, num_encoder_layers=1,
                      num_decoder_layers=2, d_ff=48, max_len=16, seed=2)
    m = Seq2Seq(c)
    rng = np.random.default_rng(3)
    for v in m.parameters().values():
        v += rng.normal(0, 0.2, v.shape).astype(v.dtype)
    return m


class StubTokenizer:
    """decode(ids) → one letter per id ('a' + id % 26)."""

    def decode(self, ids):
        return "".join(chr(ord("a") + i % 26) for i in ids)


@pytest.fixture(scope="module")
def gpt():
    return tiny_gpt()


def test_greedy_matches_reference_loop(gpt):
    prompt = np.array([[3, 7, 1], [4, 4, 9]])
    out = gpt.generate(prompt, 12)
    assert out.dtype == np.int64 and out.shape == (2, 15)
    np.testing.assert_array_equal(out, reference_generate(gpt, prompt, 12))
    one = gpt.generate(prompt[1], 12)  # 1-D in → 1-D out
    np.testing.assert_array_equal(one, out[1])
    assert gpt.training  # mode restored


def test_eos_pads_finished_rows(gpt):
    prompt = np.array([[4, 4, 9], [3, 7, 1]])  # row 1 repeats one token: never emits row 0's EOS
    greedy = gpt.generate(prompt, 10)
    new0 = greedy[0, 3:].tolist()
    k = next(i for i in range(1, 10) if new0[i] not in new0[:i])  # a token first emitted at new index k
    eos = new0[k]
    out = gpt.generate(prompt, 10, eos_token_id=eos, pad_token_id=0)
    np.testing.assert_array_equal(out[0, :4 + k], greedy[0, :4 + k])
    assert np.all(out[0, 4 + k:] == 0)
    row1 = greedy[1, 3:]
    if eos in row1:  # the loop stops once every row is finished
        assert out.shape[1] == max(4 + k, 3 + int(np.flatnonzero(row1 == eos)[0]) + 1)
    # HF: pad defaults to the EOS id
    assert np.all(gpt.generate(prompt, 10, eos_token_id=eos)[0, 4 + k:] == eos)


def test_left_padded_batch_equals_unpadded_rows(gpt):
    rows = [np.array([5, 6, 7, 8, 9]), np.array([11, 2]), np.array([30])]
    T = 5
    ids = np.zeros((3, T), np.int64)
    am = np.zeros((3, T), np.int64)
    for i, r in enumerate(rows):
        ids[i, T - len(r):] = r
        am[i, T - len(r):] = 1
    out = gpt.generate(ids, 10, attention_mask=am)
    for i, r in enumerate(rows):
        np.testing.assert_array_equal(out[i, T:], gpt.generate(r, 10)[len(r):])


def test_sampling_reproducible_and_temperature_limit(gpt):
    p = np.array([[1, 2, 3]])
    a = gpt.generate(p, 10, do_sample=True, seed=5)
    np.testing.assert_array_equal(a, gpt.generate(p, 10, do_sample=True, seed=5))
    outs = {tuple(gpt.generate(p, 10, do_sample=True, seed=s)[0]) for s in range(6)}
    assert len(outs) > 1
    np.testing.assert_array_equal(gpt.generate(p, 6, do_sample=True, temperature=1e-5, seed=0), gpt.generate(p, 6))


def test_top_k_top_p_emit_only_allowed_tokens(gpt):
    gpt.eval()
    prompt = np.array([4, 8, 15])
    z = gpt(prompt)[-1].astype(np.float64)
    order = np.argsort(-z)
    p = np.exp(z - z.max())
    p /= p.sum()
    top_p = float(p[order[:3]].sum()) - 1e-6  # nucleus = exactly the top 3
    gpt.train()
    counts = {}
    for s in range(200):
        k = int(gpt.generate(prompt, 1, do_sample=True, top_k=4, seed=s)[-1])
        counts[k] = counts.get(k, 0) + 1
        assert k in order[:4]
        assert int(gpt.generate(prompt, 1, do_sample=True, top_p=top_p, seed=s)[-1]) in order[:3]
    assert len(counts) >= 2


def test_repetition_penalty_matches_manual_loop(gpt):
    prompt = np.array([[3, 3, 7]])
    out = gpt.generate(prompt, 8, repetition_penalty=1.8)
    gpt.eval()
    seq = prompt
    for _ in range(8):
        z = gpt(seq)[0, -1].astype(np.float64)
        for t in set(seq[0].tolist()):  # HF: positive logits / penalty, negative · penalty
            z[t] = z[t] / 1.8 if z[t] > 0 else z[t] * 1.8
        seq = np.concatenate([seq, [[int(np.argmax(z))]]], axis=1)
    gpt.train()
    np.testing.assert_array_equal(out, seq)
    assert len(set(out[0, 3:].tolist())) >= len(set(gpt.generate(prompt, 8)[0, 3:].tolist()))


def test_stop_strings_with_stub_tokenizer(gpt):
    tok = StubTokenizer()
    prompt = np.array([[1, 2, 3]])
    full = gpt.generate(prompt, 10)
    text = tok.decode(full[0, 3:])
    stop = text[3:5]  # stops once the 5th new token completes it
    first = text.index(stop) + len(stop)
    out = gpt.generate(prompt, 10, stop_strings=stop, tokenizer=tok)
    assert out.shape == (1, 3 + first)
    np.testing.assert_array_equal(out[0], full[0, :3 + first])
    with pytest.raises(ValueError, match="tokenizer"):
        gpt.generate(prompt, 3, stop_strings="x")
    with pytest.raises(ValueError, match="need pad_token_id"):
        gpt.generate(np.array([[1, 2], [3, 4]]), 3, stop_strings="x", tokenizer=tok)
    both = gpt.generate(np.concatenate([prompt, [[4, 4, 9]]]), 10, stop_strings=stop, tokenizer=tok, pad_token_id=0)
    np.testing.assert_array_equal(both[0, :3 + first], out[0])
    assert np.all(both[0, 3 + first:] == 0)


def test_stream_yields_the_generated_tokens(gpt):
    prompt = np.array([2, 9, 4])
    toks = list(gpt.generate_stream(prompt, 7))
    assert all(isinstance(t, int) for t in toks)
    np.testing.assert_array_equal(toks, gpt.generate(prompt, 7)[3:])
    s = list(gpt.generate_stream(prompt, 7, do_sample=True, top_k=5, seed=3))
    np.testing.assert_array_equal(s, gpt.generate(prompt, 7, do_sample=True, top_k=5, seed=3)[3:])
    eos = toks[2]
    assert list(gpt.generate_stream(prompt, 7, eos_token_id=eos)) == toks[:toks.index(eos) + 1]


def _brute_force_best(gpt, prompt, n_new, lp):
    """Exhaustive search over every continuation (tiny vocab): argmax Σ log p / n_new**lp."""
    gpt.eval()
    V = gpt.config.vocab_size
    seqs, scores = prompt[None], np.zeros(1)
    for _ in range(n_new):
        z = gpt(seqs)[:, -1].astype(np.float64)
        lp_ = z - z.max(1, keepdims=True)
        lp_ -= np.log(np.exp(lp_).sum(1, keepdims=True))
        scores = (scores[:, None] + lp_).reshape(-1)
        seqs = np.concatenate([np.repeat(seqs, V, 0), np.tile(np.arange(V), len(seqs))[:, None]], 1)
    gpt.train()
    return seqs[int(np.argmax(scores))]


def test_beam_search_finds_the_best_sequence_on_a_tiny_vocab():
    m = tiny_gpt(vocab_size=6, n_layer=1)
    prompt = np.array([1, 2])
    best = _brute_force_best(m, prompt, 3, 1.0)
    # 6 beams of a 6-token vocab over 3 steps keep every 2-token prefix's best → exact
    np.testing.assert_array_equal(m.generate(prompt, 3, num_beams=36, early_stopping="never"), best)
    np.testing.assert_array_equal(m.generate(prompt, 5, num_beams=1), m.generate(prompt, 5))


def test_beam_hypotheses_hf_semantics():
    h = _BeamHypotheses(2, 1.0, False, 10)
    h.add(np.array([1]), -2.0, 2)   # score -1
    h.add(np.array([2]), -6.0, 3)   # score -2
    h.add(np.array([3]), -1.0, 4)   # score -0.25: replaces the worst
    assert sorted(s for s, _ in h.beams) == [-1.0, -0.25] and h.worst == -1.0
    assert h.is_done(-5.0, 4, 0)           # best reachable -5/4 = -1.25 ≤ worst -1: cannot improve
    assert not h.is_done(-1.0, 4, 0)       # -0.25 > -1: may improve
    assert _BeamHypotheses(2, 1.0, True, 10).is_done(0.0, 1, 0) is False
    hn = _BeamHypotheses(1, 2.0, "never", 10)
    hn.add(np.array([1]), -1.0, 1)
    assert not hn.is_done(-20.0, 3, 0)     # "never", lp > 0: best reachable -20/10² > -1


def test_beam_search_batched_with_eos_and_left_padding(gpt):
    a = np.array([5, 6, 7])
    b = np.array([9, 1])
    ids = np.array([[5, 6, 7], [0, 9, 1]])
    am = np.array([[1, 1, 1], [0, 1, 1]])
    g = gpt.generate(a, 8)
    eos = int(g[5])
    out = gpt.generate(ids, 8, attention_mask=am, num_beams=3, eos_token_id=eos, pad_token_id=0)
    ra = gpt.generate(a, 8, num_beams=3, eos_token_id=eos, pad_token_id=0)
    rb = gpt.generate(b, 8, num_beams=3, eos_token_id=eos, pad_token_id=0)
    np.testing.assert_array_equal(out[0, :len(ra)], ra)
    assert np.all(out[0, len(ra):] == 0)
    np.testing.assert_array_equal(out[1, 1:1 + len(rb)], rb)
    for early in (True, False, "never"):
        r = gpt.generate(a, 6, num_beams=2, eos_token_id=eos, early_stopping=early, length_penalty=0.5)
        assert r.dtype == np.int64 and 3 < len(r) <= 9


def test_seq2seq_generate_matches_translate_and_beams():
    m = tiny_s2s()
    src = np.array([[5, 6, 7, 8], [9, 10, 0, 0]])
    out = m.generate(src, 8)
    np.testing.assert_array_equal(out, translate(m, src, max_len=8))
    assert np.all(out[:, 0] == m.config.bos_id)
    assert m.generate(src, max_len=8).shape == out.shape  # older keyword
    r = m.generate(src, 6, num_beams=3)
    assert r.dtype == np.int64 and np.all(r[:, 0] == m.config.bos_id) and r.shape[1] <= 7
    np.testing.assert_array_equal(m.generate(src[0], 8, num_beams=1), out[0, :len(m.generate(src[0], 8))])
    s = list(m.generate_stream(src[0], 8))
    np.testing.assert_array_equal(s, m.generate(src[0], 8)[1:])
    a = m.generate(src, 8, do_sample=True, seed=1)
    np.testing.assert_array_equal(a, m.generate(src, 8, do_sample=True, seed=1))


def test_bad_input(gpt):
    p = np.array([1, 2])
    for n in (0, -1):
        with pytest.raises(ValueError, match="max_new_tokens must be > 0"):
            gpt.generate(p, n)
    with pytest.raises(TypeError, match="max_new_tokens must be an int"):
        gpt.generate(p, 2.0)
    with pytest.raises(ValueError, match="empty prompt"):
        gpt.generate(np.array([], np.int64), 3)
    with pytest.raises(ValueError, match="exceeds the context length n_positions=32"):
        gpt.generate(np.zeros(33, np.int64), 1)
    with pytest.raises(ValueError, match=r"prompt length 30 \+ max_new_tokens 5 exceeds"):
        gpt.generate(np.zeros(30, np.int64), 5)
    with pytest.raises(ValueError, match="num_beams"):
        gpt.generate(p, 3, num_beams=0)
    with pytest.raises(ValueError, match="early_stopping"):
        gpt.generate(p, 3, num_beams=2, early_stopping="sometimes")
    with pytest.raises(ValueError, match="top_p"):
        gpt.generate(p, 3, do_sample=True, top_p=0.0)
    with pytest.raises(ValueError, match="out of range"):
        gpt.generate(p, 3, eos_token_id=40)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        gpt.generate(p, 3, attention_mask=np.ones(3))
    with pytest.raises(ValueError, match="streams one sequence"):
        list(gpt.generate_stream(np.zeros((2, 2), np.int64), 3))


def test_seq2seq_beam_search_is_exact_on_a_tiny_vocab():
    c = Seq2SeqConfig(src_vocab_size=10, tgt_vocab_size=5, d_model=16, n_head=2, num_encoder_layers=1,
                      num_decoder_layers=1, d_ff=16, max_len=8, seed=4)
    m = Seq2Seq(c)
    rng = np.random.default_rng(5)
    for v in m.parameters().values():
        v += rng.normal(0, 0.5, v.shape).astype(v.dtype)
    src = np.array([3, 4, 5])
    m.eval()
    seqs, scores = np.array([[c.bos_id]]), np.zeros(1)
    for _ in range(3):  # exhaustive: every decoder continuation of 3 tokens
        z = m(np.repeat(src[None], len(seqs), 0), seqs)[:, -1].astype(np.float64)
        z = z - z.max(1, keepdims=True)
        z -= np.log(np.exp(z).sum(1, keepdims=True))
        scores = (scores[:, None] + z).reshape(-1)
        seqs = np.concatenate([np.repeat(seqs, 5, 0), np.tile(np.arange(5), len(seqs))[:, None]], 1)
    best = seqs[int(np.argmax(scores))]
    out = m.generate(src, 3, num_beams=25, eos_token_id=None, pad_token_id=None, early_stopping="never")
    np.testing.assert_array_equal(out, best)
