"""Unigram (SentencePiece-style) tokenizer."""
import pathlib

import numpy as np

import pytest
from hypothesis import given, settings, strategies as st

from transformer_ext.tokenizers import UnigramTokenizer, from_pretrained

FIX = pathlib.Path(__file__).parent / "fixtures"
LINES = (FIX / "corpus_en.txt").read_text(encoding="utf-8")[:30000].splitlines()
HELD = " ".join((FIX / "heldout_en.txt").read_text(encoding="utf-8").split())


@pytest.fixture(scope="module")
def uni():
    return UnigramTokenizer().train(LINES, vocab_size=500, special_tokens=["<s>", "</s>"])


def test_train_size_and_pieces(uni):
    assert uni.vocab_size == 500
    assert uni.vocab["<unk>"] == 0 and uni.vocab["<s>"] == 1 and uni.vocab["</s>"] == 2
    assert all(p.startswith("\u2581") or "\u2581" not in p for p, _ in uni.pieces)  # ▁ only word-initial
    assert {"\u2581the", "\u2581and"} <= set(uni.vocab)


@settings(max_examples=100)
@given(st.text(st.sampled_from("abcdefghij ABC,.!\n\t"), max_size=60))
def test_decode_normalises_whitespace_only(uni, text):
    assert uni.decode(uni.encode(text)) == " ".join(text.split())


def test_unknown_chars_and_specials(uni):
    ids = uni.encode("hello 日本 <s>x</s>")
    assert uni.vocab["<unk>"] in ids and uni.vocab["<s>"] in ids and uni.vocab["</s>"] in ids
    with pytest.raises(TypeError, match="must be str"):
        uni.encode(None)


def test_save_load(uni, tmp_path):
    uni.save(tmp_path)
    for t in (UnigramTokenizer.load(tmp_path), from_pretrained(tmp_path)):
        assert t.encode(HELD[:3000]) == uni.encode(HELD[:3000])
    (tmp_path / "unigram.json").write_text('{"pieces": [["a", 1.0], ["b"]]}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"unigram\.json: pieces\[1\]"):
        UnigramTokenizer.load(tmp_path)


def test_compression_close_to_sentencepiece(uni, tmp_path):
    spm = pytest.importorskip("sentencepiece")
    (tmp_path / "c.txt").write_text("\n".join(LINES), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(tmp_path / "c.txt"), model_prefix=str(tmp_path / "m"), vocab_size=500,
                                   model_type="unigram", character_coverage=1.0, normalization_rule_name="identity",
                                   bos_id=-1, eos_id=-1, user_defined_symbols=["<s>", "</s>"], minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
    ours, theirs = len(uni.encode(HELD)), len(sp.encode(HELD))
    assert abs(ours - theirs) / theirs < 0.05, (ours, theirs)


@settings(max_examples=150)
@given(st.lists(st.sampled_from(["the", "and", "th", "e", "x", "Q", "日本", "😀", "\ud800", " ", "  ", "\n", "\x1c",
                                 "\u3000", "\u00a0", ",", "!!", "<s>", "é", "e\u0301", "1", "thethe"]),
                max_size=20).map("".join))
def test_core_viterbi_matches_reference(uni, text):
    assert uni.encode(text) == uni.encode_reference(text)


def test_core_matches_reference_on_fixture(uni):
    text = (FIX / "multilingual.txt").read_text(encoding="utf-8") + HELD[:5000]
    assert uni.encode(text) == uni.encode_reference(text)


def test_core_estep_matches_reference_trainer():
    lines = LINES[:150]
    a = UnigramTokenizer().train(lines, vocab_size=200)
    b = UnigramTokenizer().train(lines, vocab_size=200, use_reference=True)
    assert [p for p, _ in a.pieces] == [p for p, _ in b.pieces]
    for (_, x), (_, y) in zip(a.pieces, b.pieces):
        assert abs(x - y) < 1e-9


# ----------------------------------------------------------------------------- batch + threads

def test_encode_batch_threads_and_padding(uni, threads):
    docs = HELD.split(". ") * 6 + ["", "<s>", "x </s> y"]
    assert sum(map(len, docs)) > 40000
    single = [uni.encode(d) for d in docs]
    for n in (1, 2):
        threads(n)
        out = uni.encode_batch(docs)
        assert [x.tolist() for x in out["ids"]] == single
    a, b = uni.encode_flat(docs, n_threads=1), uni.encode_flat(docs, n_threads=2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    out = uni.encode_batch(docs[:5], padding="max_length", max_length=4, truncation=True, padding_side="left")
    for i, s in enumerate(single[:5]):
        s = s[:4]
        assert out.ids[i, 4 - len(s):].tolist() == s and out.attention_mask[i].sum() == len(s)
    with pytest.raises(TypeError, match=r"UnigramTokenizer.encode_batch: texts\[1\] must be str, got NoneType"):
        uni.encode_batch(["a", None])


# ----------------------------------------------------------------------------- Hugging Face tokenizer.json

MULTI = (FIX / "multilingual.txt").read_text(encoding="utf-8")


def _hf_unigram(tmp_path, normalizer=None, pre=None, lines=LINES):
    hf = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers
    tok = hf.Tokenizer(models.Unigram())
    if normalizer:
        tok.normalizer = getattr(normalizers, normalizer)()
    tok.pre_tokenizer = pre or pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=min(500, 40 * len(lines)),
                                      special_tokens=["<unk>", "<s>", "</s>"], unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(lines, trainer)
    tok.save(str(tmp_path / "tokenizer.json"))
    return tok


# Held-out text plus whitespace runs, tabs, newlines, specials, unknown characters.
HF_TEXTS = [HELD[:20000], MULTI, "  a  b\tc\n\nd <s> x</s>", "<s>hello", " hello ", "", "   ", "日本 😀 é e\u0301"]


@pytest.mark.parametrize("normalizer", [None, "NFKC"])
def test_hf_unigram_tokenizer_json_same_ids(tmp_path, normalizer):
    hf = _hf_unigram(tmp_path, normalizer)
    ours = from_pretrained(tmp_path)
    assert isinstance(ours, UnigramTokenizer) and ours.vocab_size == hf.get_vocab_size()
    assert ours.normalization == normalizer
    for text in HF_TEXTS:
        assert ours.encode(text) == hf.encode(text).ids
        assert ours.encode_reference(text) == hf.encode(text).ids
    out = ours.encode_batch(HF_TEXTS, padding="longest")
    for i, text in enumerate(HF_TEXTS):
        ids = hf.encode(text).ids
        assert out.ids[i, :len(ids)].tolist() == ids and out.attention_mask[i].sum() == len(ids)
    # save / load keeps the file's ids and pre-tokeniser
    ours.save(tmp_path / "ours")
    again = from_pretrained(tmp_path / "ours")
    assert again.vocab == ours.vocab and again.encode(HF_TEXTS[0]) == ours.encode(HF_TEXTS[0])
    assert again.encode(HF_TEXTS[2]) == hf.encode(HF_TEXTS[2]).ids


@settings(max_examples=150)
@given(st.lists(st.sampled_from(["the", "and", "th", "e", "x", "Q", "日本", "😀", " ", "  ", "\n", "\t", "\u3000",
                                 ",", "!!", "<s>", "</s>", "é", "e\u0301", "1", "\u2581", "\u2581the"]),
                max_size=20).map("".join))
def test_hf_unigram_parity_property(hf_unigram, text):
    hf, ours = hf_unigram
    assert ours.encode(text) == hf.encode(text).ids
    assert ours.encode_reference(text) == ours.encode(text)


@pytest.fixture(scope="module")
def hf_unigram(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf_unigram")
    return _hf_unigram(d), from_pretrained(d)


@pytest.mark.parametrize("variant", ["never", "first", "nosplit", "whitespace_split"])
def test_hf_unigram_pretokenizer_variants(tmp_path, variant):
    pytest.importorskip("tokenizers")
    from tokenizers import pre_tokenizers as pt
    pre = {"never": pt.Metaspace(prepend_scheme="never"), "first": pt.Metaspace(prepend_scheme="first"),
           "nosplit": pt.Metaspace(split=False),
           "whitespace_split": pt.Sequence([pt.WhitespaceSplit(), pt.Metaspace()])}[variant]
    hf = _hf_unigram(tmp_path, pre=pre, lines=LINES[:150])
    ours = from_pretrained(tmp_path)
    for text in HF_TEXTS[:2] + ["a b <s> c d", "<s> a", " x  y "]:
        assert ours.encode(text) == hf.encode(text).ids, (variant, text)


def test_hf_unigram_unsupported(tmp_path):
    import json
    spec = {"model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0], ["a", -1.0]], "byte_fallback": True},
            "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(ValueError, match="byte_fallback"):
        from_pretrained(tmp_path)
    spec["model"]["byte_fallback"] = False
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(ValueError, match="Metaspace"):
        from_pretrained(tmp_path)
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
    spec["model"]["vocab"][1] = ["a"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab\[1\] must be \[piece, score\]"):
        from_pretrained(tmp_path)


def test_training_same_for_any_thread_count(threads):
    # The C++ E-step sums words in a fixed number of chunks, combined in order.
    got = []
    for n in (1, 2):
        threads(n)
        got.append(UnigramTokenizer().train(LINES, vocab_size=300).pieces)
    assert got[0] == got[1]


def test_hf_unigram_decode_matches_hf(hf_unigram):
    hf, ours = hf_unigram
    for text in ("hello world", "  two  spaces", "the end "):
        ids = hf.encode(text).ids
        assert ours.decode(ids) == hf.decode(ids)
