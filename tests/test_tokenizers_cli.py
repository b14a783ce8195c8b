"""The `transformer-ext tokenize` command (TOKENIZE_COMMAND, registered by transformer_ext.cli)."""
import argparse
import io
import pathlib

from transformer_ext.tokenizers.cli import TOKENIZE_COMMAND

FIX = pathlib.Path(__file__).parent / "fixtures"


def run(argv, stdin="", monkeypatch=None, capsys=None):
    help_, desc, add_arguments, run_ = TOKENIZE_COMMAND
    p = argparse.ArgumentParser(prog="transformer-ext tokenize", description=desc)
    add_arguments(p)
    args = p.parse_args(argv)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    rc = run_(args)
    return rc, capsys.readouterr()


def test_train_encode_decode(tmp_path, monkeypatch, capsys):
    out = tmp_path / "tok"
    rc, cap = run(["train", "--vocab-size", "400", "--out", str(out), str(FIX / "corpus_en.txt")],
                  monkeypatch=monkeypatch, capsys=capsys)
    assert rc == 0 and (out / "vocab.json").exists() and "400 tokens" in cap.err
    text = "To be, or not to be: that is the question.\nnaïve 日本 😀\n"
    rc, cap = run(["encode", str(out)], text, monkeypatch, capsys)
    assert rc == 0 and len(cap.out.splitlines()) == 2
    rc, cap2 = run(["decode", str(out)], cap.out, monkeypatch, capsys)
    assert rc == 0 and cap2.out == text


def test_wordpiece_encode_and_errors(tmp_path, monkeypatch, capsys):
    d = tmp_path / "bert"
    d.mkdir()
    (d / "vocab.txt").write_bytes((FIX / "wordpiece_vocab.txt").read_bytes())
    rc, cap = run(["encode", "--json", str(d)], "hello world\n", monkeypatch, capsys)
    assert rc == 0 and cap.out.startswith("[2, ")  # [CLS] is id 2 in this vocab
    rc, cap = run(["encode", str(tmp_path / "nothing")], "x\n", monkeypatch, capsys)
    assert rc == 2 and "error" in cap.err


def test_train_unigram(tmp_path, monkeypatch, capsys):
    out = tmp_path / "uni"
    rc, cap = run(["train", "--type", "unigram", "--vocab-size", "300", "--special-tokens", "", "--out", str(out),
                   str(FIX / "heldout_en.txt")], monkeypatch=monkeypatch, capsys=capsys)
    assert rc == 0 and "UnigramTokenizer with 300 tokens" in cap.err
    rc, cap = run(["encode", str(out)], "To be, or not to be\n", monkeypatch, capsys)
    rc, cap2 = run(["decode", str(out)], cap.out, monkeypatch, capsys)
    assert rc == 0 and cap2.out == "To be, or not to be\n"
