"""`transformer-ext generate`: loads a folder, streams text without splitting UTF-8
characters, and reports tokens per second."""
import io
import types

import numpy as np
import pytest

from transformer_ext import cli, generate_cli
from transformer_ext.models import GPT, GPTConfig


class Recorder(io.StringIO):
    """Keeps every write separately, to check no write holds half a character."""

    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, s):
        self.writes.append(s)
        return super().write(s)


def args(**kw):
    base = dict(model=None, prompt="Hi", max_new_tokens=8, temperature=0.0, top_k=None, top_p=None, beams=1,
                dtype="fp32", seed=0)
    base.update(kw)
    return types.SimpleNamespace(**base)


def test_streams_multibyte_characters_whole(monkeypatch):
    text = "héllo 😀 ok"
    from transformer_ext.training import ByteTokenizer

    class FakeModel:
        def generate_stream(self, ids, n, **kw):
            yield from text.encode("utf-8")  # one byte per token: characters arrive in pieces

    monkeypatch.setattr(generate_cli, "load_model_and_tokenizer", lambda path, dtype: (FakeModel(), ByteTokenizer()))
    out = Recorder()
    assert generate_cli.run_generate(args(model="x", prompt=">"), out=out) == 0
    assert out.getvalue().startswith(">" + text + "\n")
    assert all("\ufffd" not in w for w in out.writes)
    assert "decode" in out.getvalue().splitlines()[-1] and "tok/s" in out.getvalue().splitlines()[-1]


def test_generate_from_a_saved_checkpoint(tmp_path, capsys):
    model = GPT(GPTConfig(vocab_size=256, n_positions=32, n_embd=16, n_layer=1, n_head=2, seed=3))
    model.save(tmp_path / "m")
    rc = cli.main(["generate", "--model", str(tmp_path / "m"), "--prompt", "ab", "--max-new-tokens", "5",
                   "--temperature", "0"])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("ab")
    # greedy output equals model.generate's
    want = model.generate(np.frombuffer(b"ab", np.uint8).astype(np.int64), 5)
    assert out.splitlines()[0] == bytes(want.tolist()).decode("utf-8", "replace").splitlines()[0]
    assert "decode 4 tokens" in out


def test_beam_search_and_errors(tmp_path, capsys):
    model = GPT(GPTConfig(vocab_size=256, n_positions=32, n_embd=16, n_layer=1, n_head=2, seed=3))
    model.save(tmp_path / "m")
    assert cli.main(["generate", "--model", str(tmp_path / "m"), "--prompt", "ab", "--max-new-tokens", "3",
                     "--beams", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ab") and "beam search (2 beams)" in out
    assert cli.main(["generate", "--model", str(tmp_path / "missing"), "--prompt", "x"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["generate", "--model", str(tmp_path / "m"), "--prompt", "x", "--max-new-tokens", "0"])
    with pytest.raises(SystemExit):
        cli.main(["generate", "--model", str(tmp_path / "m"), "--prompt", "x", "--top-p", "1.5"])


def test_generate_bf16_weights(tmp_path, capsys):
    model = GPT(GPTConfig(vocab_size=256, n_positions=32, n_embd=32, n_layer=1, n_head=2, seed=3))
    model.save(tmp_path / "m")
    loaded, _ = generate_cli.load_model_and_tokenizer(str(tmp_path / "m"), "bf16")
    assert loaded.packed_dtype == "bf16"
    assert cli.main(["generate", "--model", str(tmp_path / "m"), "--prompt", "ab", "--max-new-tokens", "4",
                     "--temperature", "0", "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ab") and "decode 3 tokens" in out
    want = loaded.generate(np.frombuffer(b"ab", np.uint8).astype(np.int64), 4)  # the same bf16 model's greedy ids
    assert out.splitlines()[0] == bytes(want.tolist()).decode("utf-8", "replace").splitlines()[0]
