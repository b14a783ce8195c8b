"""transformer_ext.training: schedule, clipping, AdamW groups, data pipeline, the Trainer
(loss falls, exact resume, Ctrl-C checkpoint, history), tx.gradcheck and tx.plot."""
import json
import math
import os
import signal

import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext import nn, ops
from transformer_ext.gradcheck import gradcheck
from transformer_ext.models import GPT, GPTConfig
from transformer_ext.models.params import ParamStore
from transformer_ext.training import (AdamW, ByteTokenizer, Constant, Trainer, TrainConfig, WarmupCosine,
                                      WindowSampler, bundled_corpus, clip_grad_norm, eval_windows, grad_norm,
                                      load_tokens, prepare_text, save_tokens, train_val_split)

BACKEND = "cpp" if tx._backend.core is not None else "numpy"


@pytest.fixture
def one_thread(threads):
    threads(1)  # tiny kernels gain nothing from a second thread on a shared machine


def tiny_gpt(dtype=np.float32, **kw):
    cfg = dict(vocab_size=256, n_positions=32, n_embd=32, n_layer=2, n_head=2, attn_pdrop=0.0,
               resid_pdrop=0.1, embd_pdrop=0.1, seed=0)
    return GPT(GPTConfig(**{**cfg, **kw}), dtype=dtype)


def corpus_ids(n=60_000):
    return ByteTokenizer().encode(bundled_corpus()[:n])


# ---------------------------------------------------------------------------- schedule
def test_warmup_cosine_values():
    s = WarmupCosine(1e-3, warmup_steps=10, total_steps=110, min_lr=1e-4)
    assert s(1) == pytest.approx(1e-4) and s(5) == pytest.approx(5e-4) and s(10) == pytest.approx(1e-3)
    assert s(60) == pytest.approx(1e-4 + 0.5 * 9e-4)  # half-way: cos(π/2) = 0
    assert s(110) == pytest.approx(1e-4) and s(500) == 1e-4
    lrs = [s(t) for t in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone decay
    unknown = WarmupCosine(1e-3, 10, None)
    assert unknown(5) == pytest.approx(5e-4) and unknown(1000) == 1e-3
    c = Constant(2e-3, warmup_steps=4)
    assert [c(t) for t in (1, 2, 4, 5, 100)] == pytest.approx([5e-4, 1e-3, 2e-3, 2e-3, 2e-3])
    assert WarmupCosine(1.0, 0, 10)(1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))


# ---------------------------------------------------------------------------- clipping
def test_clip_grad_norm():
    g = np.array([3.0, 4.0, 0.0], np.float32)
    assert clip_grad_norm(g, 10.0) == pytest.approx(5.0)
    np.testing.assert_array_equal(g, [3, 4, 0])  # below the threshold: unchanged
    n = clip_grad_norm(g, 1.0)
    assert n == pytest.approx(5.0)
    assert np.linalg.norm(g) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(g, [0.6, 0.8, 0], rtol=1e-5)
    big = np.random.default_rng(0).standard_normal(3_000_000).astype(np.float32)  # spans several chunks
    # float32 squares (rounding 6e-8 each, unbiased) summed in float64
    assert grad_norm(big) == pytest.approx(float(np.linalg.norm(big.astype(np.float64))), rel=1e-7)
    inf = np.array([np.inf, 1.0], np.float32)
    assert clip_grad_norm(inf, 1.0) == np.inf and inf[1] == 1.0
    g = np.array([3.0, 4.0])
    assert clip_grad_norm(g, 0) == 5.0 and g[0] == 3.0  # 0: no clipping


# ---------------------------------------------------------------------------- AdamW
def test_adamw_two_groups_match_manual():
    with tx.use_backend(BACKEND):
        m = tiny_gpt(resid_pdrop=0.0, embd_pdrop=0.0)
        s = m.store
        rng = np.random.default_rng(0)
        s.flat_grad[...] = rng.standard_normal(s.flat_grad.shape).astype(np.float32)
        before = s.flat.copy()
        opt = AdamW(m, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
        opt.step()
        opt.step(lr=5e-3)
        assert opt.step_count == 2
        # the same two steps by hand on the two slices
        p, mm, vv, nd = before.copy(), np.zeros_like(before), np.zeros_like(before), s.n_decay
        for t, lr in ((1, 1e-2), (2, 5e-3)):
            ops.adamw_step(p[:nd], s.flat_grad[:nd], mm[:nd], vv[:nd], t, lr, 0.9, 0.95, 1e-8, 0.1)
            ops.adamw_step(p[nd:], s.flat_grad[nd:], mm[nd:], vv[nd:], t, lr, 0.9, 0.95, 1e-8, 0.0)
        np.testing.assert_array_equal(s.flat, p)
        # decay applies to matrices only: with a zero gradient a bias does not move, a matrix shrinks
        s.flat_grad[...] = 0
        opt2 = AdamW(m, lr=0.1, weight_decay=0.5)
        P = m.parameters()
        w, b = P["transformer.h.0.attn.c_attn.weight"].copy(), P["transformer.h.0.attn.c_attn.bias"].copy()
        opt2.step()
        np.testing.assert_allclose(P["transformer.h.0.attn.c_attn.weight"], w * (1 - 0.1 * 0.5), rtol=1e-6)
        np.testing.assert_array_equal(P["transformer.h.0.attn.c_attn.bias"], b)
        tensors, scalars = opt.state_dict()
        opt3 = AdamW(m)
        opt3.load_state_dict(tensors, scalars)
        assert opt3.step_count == 2 and np.array_equal(opt3.v, opt.v)
    with pytest.raises(TypeError, match="expected a Model or an allocated ParamStore"):
        AdamW(object())


# ---------------------------------------------------------------------------- data
def test_byte_tokenizer_and_text_prep():
    tok = ByteTokenizer()
    text = "Héllo, wörld! ☃"
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.max() < 256 and len(ids) == len(text.encode())
    assert tok.decode(ids) == text
    with pytest.raises(ValueError, match=r"ids must be in \[0, 256\)"):
        tok.decode([300])
    assert prepare_text("e\u0301\r\nA\t b  \n\n\n\n\nx") == "\u00e9\nA b\n\n\nx"  # NFC, CRLF, spaces, blank runs
    assert prepare_text("Ça Va", lowercase=True, strip_accents=True) == "ca va"
    assert prepare_text("a\nb\na\n\nb\nc", dedup_lines=True) == "a\nb\n\nc"


def test_token_files_split_and_sampler(tmp_path):
    ids = corpus_ids(5000)
    save_tokens(tmp_path / "t.npy", ids)
    mm = load_tokens(tmp_path / "t.npy")
    assert isinstance(mm, np.memmap) and mm.dtype == np.uint8
    np.testing.assert_array_equal(mm, ids)
    tr, va = train_val_split(mm, 0.1)
    assert len(tr) == 4500 and len(va) == 500
    s1, s2 = WindowSampler(tr, 4, 16, seed=7), WindowSampler(tr, 4, 16, seed=7)
    x, y = s1.next()
    assert x.shape == y.shape == (4, 16) and x.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
    x2, _ = s2.next()
    np.testing.assert_array_equal(x, x2)  # deterministic under the seed
    state = s1.state()
    a = s1.next()[0]
    s1.set_state(state)
    np.testing.assert_array_equal(s1.next()[0], a)  # the saved state replays the same batches
    json.dumps(state)  # part of a JSON checkpoint
    ev = eval_windows(va, 2, 16, 3)
    assert len(ev) == 3 and all(np.array_equal(a[0], b[0]) for a, b in zip(ev, eval_windows(va, 2, 16, 3)))
    with pytest.raises(ValueError, match="fewer than block_size"):
        WindowSampler(ids[:10], 2, 16)
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(ids, 1.0)


# ---------------------------------------------------------------------------- trainer
def cfg(**kw):
    base = dict(batch_size=4, block_size=32, max_steps=6, lr=3e-3, warmup_steps=2, eval_interval=3,
                eval_batches=2, checkpoint_interval=0, log_interval=1, progress="plain")
    return TrainConfig(**{**base, **kw})


def test_loss_falls_on_tiny_config(one_thread, tmp_path):
    """Bytes of Shakespeare: from ln(256) ≈ 5.5 the validation loss must fall below 3.15 within
    150 steps — under the ~3.3 nats plateau of a model that only learned byte frequencies (it
    reaches ~3.0)."""
    ids = corpus_ids(100_000)
    tr, va = train_val_split(ids, 0.1)
    with tx.use_backend(BACKEND):
        m = tiny_gpt(resid_pdrop=0.0, embd_pdrop=0.0)
        t = Trainer(m, tr, va, cfg(max_steps=150, batch_size=8, eval_interval=75, lr=5e-3, warmup_steps=10,
                                   progress="none"), out_dir=tmp_path)
        hist = t.fit()
    assert hist["train"][0]["loss"] > 5.0
    assert hist["val"][-1]["loss"] < 3.15, hist["val"]
    assert hist["val"][-1]["ppl"] == pytest.approx(math.exp(hist["val"][-1]["loss"]))
    saved = json.loads((tmp_path / "history.json").read_text())
    assert [e["step"] for e in saved["val"]] == [75, 150] and len(saved["train"]) == 150
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= set(saved["train"][0])
    assert (tmp_path / "checkpoints" / "LATEST").read_text().strip() == "step-000150"


def test_resume_is_exact(one_thread, tmp_path):
    """6 steps straight vs 3 + checkpoint + a new process-like restart + 3: identical losses and
    parameters, bit for bit (dropout active, so its RNG state must be restored too)."""
    ids = corpus_ids(20_000)
    tr, va = train_val_split(ids, 0.1)
    with tx.use_backend(BACKEND):
        a = Trainer(tiny_gpt(), tr, va, cfg(), out_dir=tmp_path / "a")
        ha = a.fit()
        b = Trainer(tiny_gpt(), tr, va, cfg(), out_dir=tmp_path / "b")
        b.fit(steps=3)
        assert b.step == 3 and b.stop_reason == "steps"
        assert (tmp_path / "b" / "checkpoints" / "LATEST").read_text().strip() == "step-000003"
        # a fresh model with a different seed, and a fresh trainer: everything comes from the checkpoint
        model = GPT.load(tmp_path / "b")
        model.rng.seed(999)
        c = Trainer(model, tr, va, cfg(), out_dir=tmp_path / "b")
        assert c.resume() and c.step == 3
        hc = c.fit()
    assert [e["loss"] for e in hc["train"]] == [e["loss"] for e in ha["train"]]
    assert [e["lr"] for e in hc["train"]] == [e["lr"] for e in ha["train"]]
    assert [e["loss"] for e in hc["val"]] == [e["loss"] for e in ha["val"]]
    np.testing.assert_array_equal(c.model.store.flat, a.model.store.flat)
    np.testing.assert_array_equal(c.optimizer.m, a.optimizer.m)
    files = sorted(os.listdir(tmp_path / "b" / "checkpoints" / "step-000006"))
    assert files == ["config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json"]


def test_ctrl_c_stops_cleanly_with_checkpoint(one_thread, tmp_path, capsys):
    ids = corpus_ids(20_000)
    tr, va = train_val_split(ids, 0.1)

    def interrupt(trainer, event, info):
        if event == "step" and trainer.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # as a user's Ctrl-C

    with tx.use_backend(BACKEND):
        t = Trainer(tiny_gpt(), tr, va, cfg(max_steps=50), out_dir=tmp_path, callbacks=[interrupt])
        t.fit()
    assert t.stop_reason == "interrupted" and t.step == 2
    assert (tmp_path / "checkpoints" / "LATEST").read_text().strip() == "step-000002"
    out = capsys.readouterr()
    assert "interrupted at step 2: saving a checkpoint" in out.out
    assert "Ctrl-C" in out.err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    m = GPT.load(tmp_path)
    np.testing.assert_array_equal(m.store.flat[:100], t.model.store.flat[:100])


def test_time_budget_and_grad_accum(one_thread, tmp_path):
    ids = corpus_ids(20_000)
    tr, va = train_val_split(ids, 0.1)
    with tx.use_backend(BACKEND):
        t = Trainer(tiny_gpt(), tr, va, cfg(max_steps=None, max_minutes=0.04, grad_accum=2, warmup_steps=3,
                                            eval_interval=0, progress="none"), out_dir=tmp_path)
        t.fit()
    assert t.stop_reason in ("time", "max_steps") and t.step >= 3
    assert t.total_steps is not None and t.schedule.total_steps == t.total_steps
    state = json.loads((tmp_path / "checkpoints" / f"step-{t.step:06d}" / "trainer_state.json").read_text())
    assert state["total_steps"] == t.total_steps
    with pytest.raises(ValueError, match="give max_steps or max_minutes"):
        TrainConfig(max_steps=None)
    with pytest.raises(ValueError, match="block_size=64 exceeds the model's context n_positions=32"):
        Trainer(tiny_gpt(), tr, va, cfg(block_size=64))


def test_plain_progress_lines(one_thread, capsys):
    ids = corpus_ids(20_000)
    with tx.use_backend(BACKEND):
        Trainer(tiny_gpt(), ids, None, cfg(max_steps=2)).fit()
    out = capsys.readouterr().out
    assert "step 1/2 | loss " in out and " | lr " in out and " tok/s" in out


# ---------------------------------------------------------------------------- gradcheck
def test_gradcheck_gpt_prints_table(capsys):
    m = tiny_gpt(vocab_size=40, n_positions=8, n_embd=8, n_layer=1, n_head=2, resid_pdrop=0.1)
    ids = np.random.default_rng(0).integers(0, 40, (2, 6))
    report = gradcheck(m, ids, samples=3)  # float32 model: checked on a float64 copy
    out = capsys.readouterr().out
    assert "parameter" in out and "max rel err" in out and "transformer.h.0.attn.c_attn.weight" in out
    assert "0 failed" in out
    assert report.passed and set(report) == set(m.parameters())
    assert max(report.values()) < 1e-5


def test_gradcheck_layer_and_detects_broken_backward(monkeypatch, capsys):
    store = ParamStore(np.float64, seed=0)
    ln = nn.LayerNorm.create(store, "ln", 6)
    lin = nn.Linear.create(store, "proj", 6, 5)
    store.allocate()
    store.flat += np.random.default_rng(0).normal(0, 0.3, store.flat.shape)
    x = np.random.default_rng(1).standard_normal((3, 6))
    rep = gradcheck(lin, x, verbose=False)
    assert rep.passed and set(rep) == {"proj.weight", "proj.bias", "input[0]"}
    assert gradcheck(ln, x, verbose=False).passed

    real = nn.LayerNorm.backward

    def broken(self, dy):  # a bug: dgamma scaled by 1.1
        dx = real(self, dy)
        self.weight.grad[...] *= 1.1
        return dx

    monkeypatch.setattr(nn.LayerNorm, "backward", broken)
    rep = gradcheck(ln, x)
    out = capsys.readouterr().out
    assert not rep.passed and rep.failed == ["ln.weight"]
    assert rep["ln.weight"] > 0.05 and rep["ln.bias"] < 1e-6
    assert "FAIL" in out and "1 failed" in out
    store32 = ParamStore(np.float32)
    lin32 = nn.Linear.create(store32, "p", 2, 2)
    store32.allocate()
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lin32, np.zeros((1, 2)))


# ---------------------------------------------------------------------------- plot
def test_attention_plot_png(tmp_path):
    pytest.importorskip("matplotlib")
    from transformer_ext import plot
    m = tiny_gpt(resid_pdrop=0.0, embd_pdrop=0.0)
    m.eval()
    tok = ByteTokenizer()
    ids = tok.encode("To be, or")
    _, att = m(ids, return_attention=True)
    path = plot.attention(att, [tok.decode([i]) for i in ids], tmp_path / "att.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    plot.loss_curves({"train": [{"step": 1, "loss": 3.0}], "val": [{"step": 1, "loss": 2.9}]}, tmp_path / "l.png")
    assert (tmp_path / "l.png").exists()
    with pytest.raises(ValueError, match="query / .* key tokens"):
        plot.attention(att, ["a"], tmp_path / "x.png")


def test_plot_without_matplotlib_is_clear(monkeypatch, tmp_path):
    import builtins
    from transformer_ext import plot
    real_import = builtins.__import__

    def fake(name, *a, **kw):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match="needs matplotlib, an optional extra: pip install matplotlib"):
        plot.attention([np.ones((1, 2, 2))], ["a", "b"], tmp_path / "a.png")


def test_custom_objective_and_grad_accum_scale(one_thread):
    """The objective hook sees every micro-batch with scale 1/grad_accum (and backward=False in
    evaluation); the causal-LM default through the hook gives the usual loss."""
    from transformer_ext.training import causal_lm
    ids = corpus_ids(20_000)
    tr, va = train_val_split(ids, 0.1)
    calls = []

    def objective(model, x, y, scale, backward):
        calls.append((x.shape, scale, backward))
        return causal_lm(model, x, y, scale, backward)

    with tx.use_backend(BACKEND):
        t = Trainer(tiny_gpt(), tr, va, cfg(max_steps=2, grad_accum=3, eval_interval=0, eval_batches=2,
                                            progress="none"), objective=objective)
        t.fit()
    assert calls[:6] == [((4, 32), 1 / 3, True)] * 6
    assert calls[6:] == [((4, 32), 1.0, False)] * 2  # the final evaluation
