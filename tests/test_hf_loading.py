"""io/hf.py: GPT.from_pretrained / Bert.from_pretrained on folders written by Hugging Face
transformers' save_pretrained (small random models built in the test; skipped without
transformers + torch): same logits / hidden states, same greedy continuation and beam search
as transformers' generate; bad folders give clear errors; Bert.encode mean pooling."""
import json

import numpy as np
import pytest

from transformer_ext.io.hf import HFLoadError
from transformer_ext.io.safetensors import load_file, save_file
from transformer_ext.models import GPT, Bert, GPTConfig

V = 64


def _hf():
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    tr = _hf()
    import torch
    torch.manual_seed(0)
    cfg = tr.GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=V - 1,
                        eos_token_id=V - 1, pad_token_id=V - 1, initializer_range=0.3)
    m = tr.GPT2LMHeadModel(cfg).eval()
    d = tmp_path_factory.mktemp("gpt2")
    m.save_pretrained(d)
    return d, m


@pytest.fixture(scope="module")
def ours(gpt2_dir):
    return GPT.from_pretrained(gpt2_dir[0])


def test_gpt2_logits_match(gpt2_dir, ours):
    import torch
    _, hf = gpt2_dir
    ids = np.random.default_rng(0).integers(0, V - 1, (2, 20))
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids)).logits.numpy()
    got = ours(ids)
    assert got.dtype == np.float32
    assert np.abs(got - ref).max() <= 1e-4


def _top2_gaps(model, seq):
    """The top-1 − top-2 logit gap at every position of seq (our fp32 logits)."""
    z = np.sort(model(seq)[..., :], axis=-1)
    return z[..., -1] - z[..., -2]


def test_gpt2_greedy_30_tokens_matches_hf(gpt2_dir, ours):
    import torch
    _, hf = gpt2_dir
    prompt = np.array([[5, 17, 33, 2]])
    with torch.no_grad():
        ref = hf.generate(torch.from_numpy(prompt), max_new_tokens=30, do_sample=False).numpy()
    got = ours.generate(prompt, 30)  # EOS / pad defaults from the folder, as HF
    assert ours.generation_defaults == {"eos_token_id": V - 1, "pad_token_id": V - 1}
    assert got.shape == (1, 34)
    assert _top2_gaps(ours, got[0, :-1])[3:].min() > 1e-3  # no near-ties: fp32 noise cannot flip argmax
    np.testing.assert_array_equal(got, ref)


def test_gpt2_left_padded_batch_matches_hf_and_rows(gpt2_dir, ours):
    import torch
    _, hf = gpt2_dir
    ids = np.array([[V - 1, V - 1, 5, 9], [3, 4, 8, 1]])
    am = np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    with torch.no_grad():
        ref = hf.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(am), max_new_tokens=12,
                          do_sample=False).numpy()
    got = ours.generate(ids, 12, attention_mask=am)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got[0, 4:], ours.generate(np.array([5, 9]), 12)[2:])


@pytest.mark.parametrize("early_stopping,length_penalty", [(False, 1.0), (True, 0.6), ("never", 1.5)])
def test_gpt2_beam_search_matches_hf(gpt2_dir, ours, early_stopping, length_penalty):
    import torch
    _, hf = gpt2_dir
    prompt = np.array([[7, 21, 3], [40, 2, 11]])
    kw = dict(max_new_tokens=12, num_beams=3, length_penalty=length_penalty, early_stopping=early_stopping)
    # an EOS id the model actually emits, so hypotheses close at different lengths
    greedy = ours.generate(prompt[0], 12)
    eos = int(greedy[5])
    with torch.no_grad():
        ref = hf.generate(torch.from_numpy(prompt), do_sample=False, eos_token_id=eos, pad_token_id=1, **kw).numpy()
    # pad_token_id=1: transformers 5's beam search pads with `pad_token_id or eos` (so a pad id of 0
    # becomes the EOS id); we always pad with pad_token_id
    got = ours.generate(prompt, eos_token_id=eos, pad_token_id=1, **kw)
    np.testing.assert_array_equal(got, ref)
    with torch.no_grad():  # the best and second-best hypotheses are well apart (no near-tie decided it)
        top2 = hf.generate(torch.from_numpy(prompt), do_sample=False, eos_token_id=eos, pad_token_id=1,
                           num_return_sequences=2, output_scores=True, return_dict_in_generate=True, **kw)
    s = top2.sequences_scores.numpy().reshape(2, 2)
    assert np.all(s[:, 0] - s[:, 1] > 1e-4)


def test_gpt2_from_pytorch_bin_and_without_prefix(tmp_path, gpt2_dir, ours):
    import shutil

    import torch
    d, hf = gpt2_dir
    (tmp_path / "bin").mkdir()  # the legacy format (transformers 5 only writes safetensors)
    shutil.copy(d / "config.json", tmp_path / "bin" / "config.json")
    torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")  # includes the tied lm_head.weight
    m = GPT.from_pretrained(tmp_path / "bin")
    ids = np.array([[1, 2, 3]])
    ref = GPT.from_pretrained(d)(ids)  # (`ours` may hold packed weights from a generate test)
    np.testing.assert_array_equal(m(ids), ref)
    hf.transformer.save_pretrained(tmp_path / "base")  # GPT2Model: keys without "transformer."
    cfg = json.loads((tmp_path / "base" / "config.json").read_text())
    assert cfg["architectures"] == ["GPT2Model"]
    np.testing.assert_array_equal(GPT.from_pretrained(tmp_path / "base")(ids), ref)


def test_gpt2_bf16_close_to_hf_and_same_greedy(gpt2_dir):
    """dtype="bf16": Linear weights rounded to bfloat16 (relative error <= 2^-9 each), activations
    and sums in float32. Logits within 5% of the fp32 logits' spread (measured ~1%), and the same
    greedy continuation as transformers' fp32 model on a short prompt."""
    import torch
    d, hf = gpt2_dir
    m = GPT.from_pretrained(d, dtype="bf16")
    assert m.packed_dtype == "bf16" and m.dtype == np.float32
    ids = np.random.default_rng(0).integers(0, V - 1, (2, 20))
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids)).logits.numpy()
    got = m(ids)
    assert np.abs(got - ref).max() <= 0.05 * ref.std()
    assert np.abs(got - ref).max() > 1e-4  # really the bf16 weights, not the fp32 ones
    prompt = np.array([[5, 17, 33, 2]])
    with torch.no_grad():
        want = hf.generate(torch.from_numpy(prompt), max_new_tokens=10, do_sample=False,
                           pad_token_id=V - 1).numpy()
    np.testing.assert_array_equal(m.generate(prompt, 10), want)


# ---------------------------------------------------------------------------------- BERT
@pytest.fixture(scope="module")
def bert_dirs(tmp_path_factory):
    tr = _hf()
    import torch
    torch.manual_seed(1)
    cfg = tr.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=40)
    mlm = tr.BertForMaskedLM(cfg).eval()
    base = tr.BertModel(cfg).eval()
    d1, d2 = tmp_path_factory.mktemp("bert_mlm"), tmp_path_factory.mktemp("bert_base")
    mlm.save_pretrained(d1)
    base.save_pretrained(d2)
    return (d1, mlm), (d2, base)


def test_bert_mlm_and_base_match(bert_dirs):
    import torch
    (d1, mlm), (d2, base) = bert_dirs
    rng = np.random.default_rng(2)
    ids = rng.integers(1, V, (2, 9))
    am = np.ones((2, 9), np.int64)
    am[1, 6:] = 0
    tt = np.zeros((2, 9), np.int64)
    tt[:, 5:] = 1
    t = {k: torch.from_numpy(v) for k, v in dict(input_ids=ids, attention_mask=am, token_type_ids=tt).items()}
    ours = Bert.from_pretrained(d1)
    out = ours(ids, attention_mask=am, token_type_ids=tt)
    with torch.no_grad():
        ref = mlm(**t, output_hidden_states=True)
    assert np.abs(out.logits - ref.logits.numpy()).max() <= 1e-4
    assert np.abs(out.last_hidden_state - ref.hidden_states[-1].numpy()).max() <= 1e-4
    ob = Bert.from_pretrained(d2)
    assert ob.config.add_mlm_head is False
    assert any("pooler" in k for k in ob.hf_ignored)
    with torch.no_grad():
        rb = base(**t).last_hidden_state.numpy()
    assert np.abs(ob(ids, attention_mask=am, token_type_ids=tt).last_hidden_state - rb).max() <= 1e-4


class StubBatchTokenizer:
    def encode_batch(self, texts, padding="longest"):
        seqs = [[1 + (ord(c) % (V - 2)) for c in t] for t in texts]
        T = max(len(s) for s in seqs)
        ids = np.zeros((len(seqs), T), np.int64)
        am = np.zeros((len(seqs), T), np.int64)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = s
            am[i, :len(s)] = 1
        return {"ids": ids, "attention_mask": am}


def test_bert_encode_mean_pooled(bert_dirs):
    import torch
    (d1, _), (d2, base) = bert_dirs
    m = Bert.from_pretrained(d2)
    texts = ["hello world", "hi", "a longer sentence here", "x"]
    e = m.encode(texts, StubBatchTokenizer(), batch_size=3)
    assert e.shape == (4, 32) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    for i, t in enumerate(texts):  # one at a time (no padding) = the padded batch
        enc = StubBatchTokenizer().encode_batch([t])
        with torch.no_grad():
            h = base(input_ids=torch.from_numpy(enc["ids"])).last_hidden_state.numpy()[0]
        ref = h.mean(0) / np.linalg.norm(h.mean(0))
        np.testing.assert_allclose(e[i], ref, atol=2e-5)


# ---------------------------------------------------------------------------------- bad folders (no transformers needed)
def _write_gpt_folder(d, drop=None, extra=None, model_type="gpt2", arch="GPT2LMHeadModel"):
    d.mkdir(parents=True, exist_ok=True)
    m = GPT(GPTConfig(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2))
    cfg = dict(m.config.to_dict(), model_type=model_type, architectures=[arch])
    (d / "config.json").write_text(json.dumps(cfg))
    sd = m.state_dict()
    if drop:
        del sd[drop]
    sd.update(extra or {})
    save_file(sd, d / "model.safetensors")
    return m


def test_gpt_roundtrip_from_our_own_hf_style_folder(tmp_path):
    m = _write_gpt_folder(tmp_path / "ok", extra={"transformer.h.0.attn.bias": np.ones((1, 1, 8, 8), np.float32)})
    ids = np.array([[1, 2, 3]])
    m.eval()
    np.testing.assert_array_equal(GPT.from_pretrained(tmp_path / "ok")(ids), m(ids))


def test_bad_folders(tmp_path):
    with pytest.raises(HFLoadError, match="not a directory"):
        GPT.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HFLoadError, match="no config.json"):
        GPT.from_pretrained(tmp_path / "empty")
    _write_gpt_folder(tmp_path / "noweights")
    (tmp_path / "noweights" / "model.safetensors").unlink()
    with pytest.raises(HFLoadError, match="no weights file"):
        GPT.from_pretrained(tmp_path / "noweights")
    _write_gpt_folder(tmp_path / "llama", model_type="llama", arch="LlamaForCausalLM")
    with pytest.raises(HFLoadError, match="unsupported architecture.*llama"):
        GPT.from_pretrained(tmp_path / "llama")
    with pytest.raises(HFLoadError, match="unsupported architecture"):
        Bert.from_pretrained(tmp_path / "llama")
    _write_gpt_folder(tmp_path / "gpt2cls", arch="GPT2ForSequenceClassification")
    with pytest.raises(HFLoadError, match="GPT2ForSequenceClassification"):
        GPT.from_pretrained(tmp_path / "gpt2cls")
    _write_gpt_folder(tmp_path / "missing", drop="transformer.h.0.mlp.c_fc.bias")
    with pytest.raises(HFLoadError, match=r"missing keys \['transformer.h.0.mlp.c_fc.bias'\]"):
        GPT.from_pretrained(tmp_path / "missing")
    _write_gpt_folder(tmp_path / "extra", extra={"transformer.h.0.foo.weight": np.zeros(2, np.float32)})
    with pytest.raises(HFLoadError, match=r"unexpected keys \['transformer.h.0.foo.weight'\]"):
        GPT.from_pretrained(tmp_path / "extra")
    _write_gpt_folder(tmp_path / "shape")
    sd = load_file(tmp_path / "shape" / "model.safetensors")
    sd["transformer.ln_f.bias"] = np.zeros(3, np.float32)
    save_file(sd, tmp_path / "shape" / "model.safetensors")
    with pytest.raises(HFLoadError, match="transformer.ln_f.bias.*shape"):
        GPT.from_pretrained(tmp_path / "shape")
