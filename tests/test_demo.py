"""The `demo` and `train` commands (through their argparse entries, as the CLI runs them):
a ~20-second demo smoke run prints a validation loss and samples and writes a checkpoint;
`train` on a text file, then `--resume` to extend the run; clear errors."""
import argparse
import json

import numpy as np
import pytest

from transformer_ext.demo import DEMO_COMMAND, curve_summary
from transformer_ext.models import GPT
from transformer_ext.train_cli import TRAIN_COMMAND


def run_command(command, argv):
    short, description, add_arguments, run = command
    assert short and description
    p = argparse.ArgumentParser()
    add_arguments(p)
    return run(p.parse_args(argv))


@pytest.fixture
def one_thread(threads):
    threads(1)  # small kernels gain nothing from a second thread on a shared machine


def test_demo_smoke(tmp_path, capsys, one_thread):
    out = tmp_path / "demo"
    rc = run_command(DEMO_COMMAND, ["--minutes", "0.3", "--out", str(out), "--samples", "2",
                                    "--sample-tokens", "40", "--progress", "plain"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "val loss" in text and "validation loss (nats per byte) by step:" in text
    assert "--- sample 1" in text and "--- sample 2" in text and "Ham." in text
    hist = json.loads((out / "history.json").read_text())
    assert hist["val"] and hist["val"][-1]["loss"] < hist["train"][0]["loss"]
    model = GPT.load(out)  # the run's newest checkpoint
    assert model.config.n_layer == 4 and model.config.vocab_size == 256
    assert (out / "checkpoints" / "LATEST").exists()


def test_curve_summary():
    hist = {"val": [{"step": s, "loss": 5.0 - s / 100, "ppl": float(np.exp(5.0 - s / 100))} for s in range(0, 400, 20)]}
    text = curve_summary(hist)
    assert text.count("\n  step") == 12 and "from 5.000 (step 0) to 1.200 (step 380)" in text
    assert curve_summary({"val": []}) == "no validation evaluations"


def test_train_command_and_resume(tmp_path, capsys, one_thread):
    data = tmp_path / "a.txt"
    data.write_text("To be, or not to be, that is the question:\n" * 200, encoding="utf-8")
    common = ["--data", str(data), "--out", str(tmp_path / "run"), "--block-size", "32", "--batch-size", "4",
              "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--eval-interval", "2", "--progress", "plain"]
    assert run_command(TRAIN_COMMAND, common + ["--steps", "4"]) == 0
    first = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(first["train"]) == 4
    assert run_command(TRAIN_COMMAND, common + ["--steps", "6", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "step-000004" in out
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [e["step"] for e in hist["train"]] == [1, 2, 3, 4, 5, 6]
    assert hist["train"][:4] == first["train"]
    assert GPT.load(tmp_path / "run").config.n_embd == 32
    # --resume without --steps keeps the checkpoint's max_steps (6): nothing more to do
    assert run_command(TRAIN_COMMAND, common + ["--resume"]) == 0
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())["train"]) == 6


def test_train_command_matmul_precision(tmp_path, one_thread):
    """--matmul-precision sets tx's process-wide precision for the run (restored here)."""
    import transformer_ext as tx
    data = tmp_path / "a.txt"
    data.write_text("To be, or not to be, that is the question:\n" * 200, encoding="utf-8")
    argv = ["--data", str(data), "--out", str(tmp_path / "run"), "--block-size", "32", "--batch-size", "4",
            "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--progress", "none", "--steps", "2"]
    before = tx.get_matmul_precision()
    try:
        assert run_command(TRAIN_COMMAND, argv + ["--matmul-precision", "high"]) == 0
        assert tx.get_matmul_precision() == "high"
        assert len(json.loads((tmp_path / "run" / "history.json").read_text())["train"]) == 2
    finally:
        tx.set_matmul_precision(before)
    with pytest.raises(SystemExit):
        run_command(TRAIN_COMMAND, argv + ["--matmul-precision", "medium"])


def test_train_command_errors(tmp_path, capsys):
    rc = run_command(TRAIN_COMMAND, ["--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "no such data file" in capsys.readouterr().err
    (tmp_path / "short.txt").write_text("abc")
    rc = run_command(TRAIN_COMMAND, ["--data", str(tmp_path / "short.txt"), "--out", str(tmp_path / "o"), "--steps", "1"])
    assert rc == 2 and "fewer than block_size + 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_command(TRAIN_COMMAND, ["--data", "x", "--out", "y", "--steps", "0"])
    with pytest.raises(SystemExit):
        run_command(DEMO_COMMAND, ["--minutes", "-1"])


def test_commands_registered_in_cli():
    from transformer_ext import cli
    commands = cli._commands()
    assert commands["demo"] is DEMO_COMMAND and commands["train"] is TRAIN_COMMAND
    args = cli.build_parser().parse_args(["demo", "--minutes", "0.5", "--out", "x"])
    assert args.minutes == 0.5 and args.out == "x"
