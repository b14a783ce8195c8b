"""Unigram (SentencePiece-style) tokenizer."""
import pathlib

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
