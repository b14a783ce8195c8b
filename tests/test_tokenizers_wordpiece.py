"""WordPiece (BERT) tokenizer, Hugging Face tokenizer.json loading, from_pretrained."""
import json
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from transformer_ext.tokenizers import ByteLevelBPETokenizer, WordPieceTokenizer, basic_tokenize, from_pretrained

FIX = pathlib.Path(__file__).parent / "fixtures"
VOCAB = FIX / "wordpiece_vocab.txt"
HELD = (FIX / "heldout_en.txt").read_text(encoding="utf-8")
MULTI = (FIX / "multilingual.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def wp():
    return WordPieceTokenizer.from_file(VOCAB)


def test_basic_tokenizer_rules():
    assert basic_tokenize("Hello, World!") == ["hello", ",", "world", "!"]
    assert basic_tokenize("Héllo Wörld", lowercase=False) == ["Héllo", "Wörld"]
    assert basic_tokenize("Héllo", lowercase=False, strip_accents=True) == ["Hello"]
    assert basic_tokenize("北京欢迎你") == ["北", "京", "欢", "迎", "你"]
    assert basic_tokenize("a\x00b\ufffdc\x07d\u200be") == ["abcde"]  # NUL, U+FFFD, Cc, Cf dropped
    assert basic_tokenize("a\tb\u3000c\u00a0d") == ["a", "b", "c", "d"]
    assert basic_tokenize("x^y$z`") == ["x", "^", "y", "$", "z", "`"]  # ASCII symbols split like punctuation


def test_wordpiece_greedy_longest_match():
    vocab = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "un", "##aff", "##able", "aff", "##a", "##ff", "runn", "##ing", ","]
    tok = WordPieceTokenizer(vocab)
    assert tok.tokenize("unaffable running,") == ["un", "##aff", "##able", "runn", "##ing", ","]
    assert tok.tokenize("unaffablex") == ["[UNK]"]  # no split for the tail: the whole word is unknown
    assert tok.tokenize("un" * 51) == ["[UNK]"]  # 102 characters > 100
    assert tok.encode("un") == [1, 4, 2]
    assert tok.encode("un", add_special_tokens=False) == [4]
    ids, types = tok.encode_with_types("un", "running")
    assert ids == [1, 4, 2, 10, 11, 2] and types == [0, 0, 0, 1, 1, 1]


def test_special_tokens_in_text_kept_whole(wp):
    ids = wp.encode("hello [MASK] world", add_special_tokens=False)
    assert wp.vocab["[MASK]"] in ids


def test_decode_lossy_rules(wp):
    assert wp.decode(wp.encode("Hello,   WORLD! It's  fine.")) == "hello, world! it's fine."
    assert wp.decode(wp.encode("héllo"), skip_special_tokens=False).startswith("[CLS] hello")
    with pytest.raises(ValueError, match="out of range"):
        wp.decode([10 ** 7])


@settings(max_examples=100)
@given(st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd", "Zs", "Po")), max_size=40))
def test_decode_is_basic_tokenized_text(wp, text):
    # Lossy rule: decoding gives the basic-tokenised words (lower-cased, accents stripped, single
    # spaces, unknown words dropped), never anything else.
    out = wp.decode(wp.encode(text), clean_up_tokenization_spaces=False)
    words = basic_tokenize(text)
    known = [w for w in words if wp.vocab["[UNK]"] not in wp.wordpiece(w)]
    assert out == " ".join(known)


def test_batch_with_pairs_and_truncation(wp):
    texts = ["first sentence here", "short", "a much longer sentence with many many words in it"]
    pairs = ["second", "b", "c d e"]
    out = wp.encode_batch(texts, pairs, padding="longest")
    L = out["ids"].shape[1]
    for i, (a, b) in enumerate(zip(texts, pairs)):
        ids, types = wp.encode_with_types(a, b)
        assert list(out.ids[i, :len(ids)]) == ids and list(out.token_type_ids[i, :len(ids)]) == types
        assert (out.ids[i, len(ids):] == wp.vocab["[PAD]"]).all() and out.attention_mask[i].sum() == len(ids)
    assert out.ids.shape == (3, L)
    out = wp.encode_batch(texts, pairs, padding="max_length", max_length=8, truncation=True, padding_side="left")
    assert out.ids.shape == (3, 8)
    sep = wp.vocab["[SEP]"]
    for row, mask in zip(out.ids, out.attention_mask):
        assert row[-1] == sep and (row == sep).sum() == 2 and row[8 - mask.sum()] == wp.vocab["[CLS]"]


@pytest.mark.parametrize("pairs", [False, True])
@pytest.mark.parametrize("add_special", [True, False])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("padding", [False, "longest", "max_length"])
def test_batch_vectorised_assembly_matches_per_row(wp, pairs, add_special, side, padding):
    # encode_batch builds ids / attention_mask / token_type_ids with NumPy from one flat buffer
    # (closed-form 'longest_first' truncation); encode_with_types does it row by row.
    words = "the quick brown fox jumps over lazy dogs and cats running far away".split()
    rnd = np.random.default_rng(0)
    texts = [" ".join(rnd.choice(words, int(k))) for k in rnd.integers(0, 12, 40)]
    other = [" ".join(rnd.choice(words, int(k))) for k in rnd.integers(0, 12, 40)] if pairs else None
    for max_length in (3, 4, 7, 12, 30):
        if not add_special and max_length < 3:
            continue
        out = wp.encode_batch(texts, other, padding=padding, max_length=max_length, truncation=True,
                              padding_side=side, add_special_tokens=add_special)
        rows = [wp.encode_with_types(t, other[i] if pairs else None, add_special, max_length, True)
                for i, t in enumerate(texts)]
        if not padding:
            assert [x.tolist() for x in out["ids"]] == [r[0] for r in rows]
            assert [x.tolist() for x in out["token_type_ids"]] == [r[1] for r in rows]
            continue
        for i, (ids, types) in enumerate(rows):
            n = len(ids)
            sl = slice(0, n) if side == "right" else slice(out.ids.shape[1] - n, None)
            assert out.ids[i, sl].tolist() == ids and out.token_type_ids[i, sl].tolist() == types
            assert out.attention_mask[i].sum() == n and out.attention_mask[i, sl].all()
    with pytest.raises(TypeError, match=r"pairs\[1\] must be str, got int"):
        wp.encode_batch(["a", "b"], ["c", 5])
    with pytest.raises(TypeError, match=r"texts\[0\] must be str, got bytes"):
        wp.encode_batch([b"a", "b"])


def test_bad_input(wp, tmp_path):
    with pytest.raises(TypeError, match="must be str"):
        wp.encode(b"x")
    bad = tmp_path / "vocab.txt"
    bad.write_text("[UNK]\nfoo\n\nbar\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab\.txt:3: empty token"):
        WordPieceTokenizer.from_file(bad)
    bad.write_text("[UNK]\nfoo\nfoo\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab\.txt:3: duplicate token 'foo'"):
        WordPieceTokenizer.from_file(bad)
    bad.write_text("foo\nbar\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"unknown special token '\[UNK\]'"):
        WordPieceTokenizer.from_file(bad)
    tok = WordPieceTokenizer(["[UNK]", "a"])
    with pytest.raises(ValueError, match=r"unknown special token '\[CLS\]'"):
        tok.encode("a")
    assert tok.encode("a", add_special_tokens=False) == [1]


def test_save_load_from_pretrained(wp, tmp_path):
    cased = WordPieceTokenizer.from_file(VOCAB, lowercase=False)
    cased.save(tmp_path / "ours")
    for t in (WordPieceTokenizer.load(tmp_path / "ours"), from_pretrained(tmp_path / "ours")):
        assert not t.lowercase and t.encode(HELD[:2000]) == cased.encode(HELD[:2000])
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "vocab.txt").write_bytes(VOCAB.read_bytes())
    t = from_pretrained(tmp_path / "plain")
    assert isinstance(t, WordPieceTokenizer) and t.encode(HELD[:2000]) == wp.encode(HELD[:2000])


# ----------------------------------------------------------------------------- Hugging Face parity

@pytest.mark.parametrize("lowercase", [True, False])
def test_hf_bert_wordpiece_parity(lowercase):
    hf = pytest.importorskip("tokenizers")
    h = hf.BertWordPieceTokenizer(str(VOCAB), lowercase=lowercase)
    ours = WordPieceTokenizer.from_file(VOCAB, lowercase=lowercase)
    for text in (HELD, MULTI, "a" * 150 + " [MASK] x[SEP]y", "Don't stop; 3.14 ½ é\u0301 北京"):
        assert ours.encode(text) == h.encode(text).ids
    e = h.encode("Hello there, friend.", "And the second one!")
    assert ours.encode_with_types("Hello there, friend.", "And the second one!") == (e.ids, e.type_ids)


def test_hf_bert_tokenizer_parity_transformers():
    transformers = pytest.importorskip("transformers")
    h = transformers.BertTokenizer(str(VOCAB), do_lower_case=True)
    ours = WordPieceTokenizer.from_file(VOCAB)
    for text in (HELD[:5000], MULTI):
        assert ours.encode(text) == h.encode(text)


def test_hf_tokenizer_json(tmp_path):
    hf = pytest.importorskip("tokenizers")
    h = hf.BertWordPieceTokenizer(str(VOCAB), lowercase=True)
    (tmp_path / "wp").mkdir()
    h.save(str(tmp_path / "wp" / "tokenizer.json"))
    t = from_pretrained(tmp_path / "wp")
    assert isinstance(t, WordPieceTokenizer) and t.encode(HELD[:3000]) == h.encode(HELD[:3000]).ids
    b = hf.ByteLevelBPETokenizer(add_prefix_space=False)
    b.train([str(FIX / "corpus_en.txt")], vocab_size=600, special_tokens=["<|endoftext|>"], show_progress=False)
    (tmp_path / "bpe").mkdir()
    b.save(str(tmp_path / "bpe" / "tokenizer.json"))
    t = from_pretrained(tmp_path / "bpe")
    text = HELD[:3000] + "<|endoftext|>" + MULTI
    assert isinstance(t, ByteLevelBPETokenizer) and t.encode(text) == b.encode(text).ids
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text('{"model": {"type": "Nope"}}', encoding="utf-8")
    with pytest.raises(ValueError, match="unsupported tokenizer.json model type 'Nope'"):
        from_pretrained(tmp_path / "bad")


# ----------------------------------------------------------------------------- C++ vs reference

from transformer_ext.tokenizers import _base  # noqa: E402

needs_core = pytest.mark.skipif(_base.core() is None, reason="compiled core unavailable")
tricky = st.lists(st.sampled_from(
    ["a", "Z", "É", "e\u0301", "ß", "İ", "ΣΑΣ", "σ", "ǅ", "ﬁ", "한국어", "日本", "北京", "😀", "שלום", "مرحبا", "\x00", "\x07",
     "\ufffd", "\u200b", " ", "\t", "\n", "\u00a0", "\u3000", "\u2028", "'s", ",", "!?", "^$`", "1", "١٢", "½",
     "[MASK]", "[CLS]x", "un", "##", "ing", "Ǆ", "\U0001d400", "x" * 101]), max_size=20).map("".join)


@needs_core
@settings(max_examples=200)
@given(tricky, st.booleans())
def test_core_matches_reference(text, lowercase):
    tok = WordPieceTokenizer.from_file(VOCAB, lowercase=lowercase)
    assert tok.tokenize_ids(text) == tok.tokenize_ids_reference(text)
    words = [w.decode("utf-8") for w in tok._core.basic_tokenize(text.replace("[MASK]", "").replace("[CLS]", "")
                                                                 .encode("utf-8"))]
    assert words == basic_tokenize(text.replace("[MASK]", "").replace("[CLS]", ""), lowercase)


@needs_core
def test_core_matches_reference_on_fixtures(wp):
    for text in (HELD, MULTI):
        assert wp.tokenize_ids(text) == wp.tokenize_ids_reference(text)
    docs = HELD.split("\n\n")
    out = wp.encode_batch(docs)
    assert [list(x) for x in out["ids"]] == [wp.encode(d) for d in docs]
    docs = docs * 6
    a, b = wp.encode_flat(docs, n_threads=1), wp.encode_flat(docs, n_threads=2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
