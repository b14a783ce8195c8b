"""The training loop: causal-LM training of a model with hand-written backward.

One step: (for each micro-batch) forward → cross-entropy (`ops.cross_entropy`) → backward;
global-norm clipping of the flat gradient; lr from the schedule; one AdamW update of the flat
buffer. Every `eval_interval` steps the validation loss and perplexity (exp of the loss) on a
fixed set of validation windows; every `checkpoint_interval` steps a checkpoint.

Exact resume: a checkpoint holds the model (safetensors + config), AdamW's m, v and step,
the window sampler's RNG state, the model's dropout RNG state, the step, the decided total
number of steps and the history — so a resumed run computes the same losses, bit for bit, as
an uninterrupted one (on one thread; the kernels are also bit-identical across thread counts).

Output directory layout:
    checkpoints/step-000500/{model.safetensors, config.json, optimizer.safetensors, trainer_state.json}
    checkpoints/LATEST            name of the newest complete checkpoint (written last, atomically)
    history.json                  per-step loss / lr / grad-norm / tokens/s and the evaluations
    loss.png                      train and validation loss curves (if matplotlib is installed)

Ctrl-C: the first SIGINT finishes the current step, then saves a checkpoint and returns
(a second one interrupts at once).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from .. import ops
from ..io.atomic import write_text
from ..io.checkpoint import latest_checkpoint, load_weights, save_model
from ..io.safetensors import load_file, read_metadata, save_file
from .clip import clip_grad_norm
from .data import WindowSampler, eval_windows
from .optim import AdamW
from .schedule import Constant, WarmupCosine


@dataclass
class TrainConfig:
    batch_size: int = 16
    block_size: int = 128
    max_steps: int | None = 1000     # None: sized from max_minutes and the measured speed
    max_minutes: float | None = None  # wall-clock budget (whichever of the two ends first)
    lr: float = 1e-3
    min_lr: float | None = None      # end of the cosine; None → lr / 10
    warmup_steps: int = 50
    schedule: str = "cosine"         # "cosine" (warm-up + cosine decay) or "constant" (warm-up + constant)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0           # 0 / None: no clipping
    grad_accum: int = 1
    eval_interval: int = 100         # 0: only at the end
    eval_batches: int = 8
    checkpoint_interval: int = 500   # 0: only at the end
    keep_checkpoints: int = 2
    log_interval: int = 10
    seed: int = 0                    # window sampling
    progress: str = "auto"           # "auto" (tqdm if installed), "tqdm", "plain", "none"

    def __post_init__(self):
        for name in ("batch_size", "block_size", "grad_accum", "eval_batches", "log_interval", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig: {name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_steps is None and self.max_minutes is None:
            raise ValueError("TrainConfig: give max_steps or max_minutes (or both)")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"TrainConfig: max_steps must be >= 0, got {self.max_steps}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"TrainConfig: max_minutes must be > 0, got {self.max_minutes}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"TrainConfig: schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.progress not in ("auto", "tqdm", "plain", "none"):
            raise ValueError(f"TrainConfig: progress must be auto/tqdm/plain/none, got {self.progress!r}")


class _Progress:
    """tqdm if importable (and asked for), else one printed line per log interval."""

    def __init__(self, mode: str, total, initial: int, log):
        self.bar, self.log = None, log
        self.plain = mode == "plain" or mode == "auto"
        if mode in ("auto", "tqdm"):
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=True)
                self.plain = False
            except ImportError:
                if mode == "tqdm":
                    raise ImportError("progress='tqdm' needs tqdm: pip install tqdm") from None
        if mode == "none":
            self.plain = False

    def set_total(self, total):
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def update(self, step, total, loss, lr, tok_s, elapsed):
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.4f} | lr {lr:.2e} | {tok_s:,.0f} tok/s", refresh=False)
            self.bar.update(step - self.bar.n)
        elif self.plain:
            tot = f"/{total}" if total else ""
            self.log(f"step {step}{tot} | loss {loss:.4f} | lr {lr:.2e} | {tok_s:,.0f} tok/s | {_fmt_time(elapsed)}")

    def write(self, msg):
        if self.bar is not None:
            self.bar.write(msg)
        else:
            self.log(msg)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _fmt_time(s: float) -> str:
    m, s = divmod(int(s), 60)
    return f"{m}m{s:02d}s"


def causal_lm(model, x, y, scale: float = 1.0, backward: bool = True) -> float:
    """The causal-LM objective: mean cross-entropy of the next token, logits = model(x); with
    backward, dL/dlogits · scale is back-propagated (scale = 1/grad_accum)."""
    logits = model(x)
    # dlogits overwrite the logits (no longer needed): one 100 MB array less per GPT-2 step
    loss, dlogits = ops.cross_entropy(logits, y, out=logits if logits.flags.c_contiguous else None)
    if backward:
        if scale != 1.0:
            dlogits *= dlogits.dtype.type(scale)
        model.backward(dlogits)
    return loss


class Trainer:
    """`Trainer(model, train_ids, val_ids, TrainConfig(...), out_dir=...).fit()`.

    model: a GPT-like Model (ids (B, T) → logits (B, T, V); backward(dlogits)). train_ids /
    val_ids: 1-D integer token streams (arrays or memmaps). `objective(model, x, y, scale,
    backward)` → loss (default `causal_lm`) runs forward, loss and, when asked, backward for one
    window batch (x, y) — other objectives (masked LM, ...) plug in here. `resume()` loads the
    newest checkpoint of out_dir (or `path`) into this trainer."""

    def __init__(self, model, train_ids, val_ids=None, config: TrainConfig | None = None, out_dir=None,
                 log=None, callbacks=(), objective=None):
        self.model = model
        self.config = c = config or TrainConfig()
        if hasattr(model, "config") and hasattr(model.config, "n_positions") and c.block_size > model.config.n_positions:
            raise ValueError(f"Trainer: block_size={c.block_size} exceeds the model's context "
                             f"n_positions={model.config.n_positions}")
        self.out_dir = None if out_dir is None else os.fspath(out_dir)
        self.log = log or (lambda msg: print(msg, flush=True))
        self.callbacks = list(callbacks)
        self.objective = objective or causal_lm
        self.optimizer = AdamW(model, c.lr, (c.beta1, c.beta2), c.eps, c.weight_decay)
        min_lr = c.lr / 10 if c.min_lr is None else c.min_lr
        self.schedule = (WarmupCosine(c.lr, c.warmup_steps, c.max_steps, min_lr) if c.schedule == "cosine"
                         else Constant(c.lr, c.warmup_steps))
        self.sampler = WindowSampler(train_ids, c.batch_size, c.block_size, c.seed)
        self.val_batches = eval_windows(val_ids, c.batch_size, c.block_size, c.eval_batches) if val_ids is not None else []
        self.step = 0
        self.total_steps = c.max_steps
        self.history = {"train": [], "val": []}
        self.stop_reason = None
        self.checkpoint_dir = None
        self._interrupted = False

    # ------------------------------------------------------------------ one step
    def train_step(self) -> tuple[float, float, float]:
        """One optimiser step; returns (mean loss over the micro-batches, lr, grad norm)."""
        c, m = self.config, self.model
        m.train()
        m.zero_grad()
        total = 0.0
        for _ in range(c.grad_accum):  # the gradient of the mean over all micro-batches
            x, y = self.sampler.next()
            total += self.objective(m, x, y, 1.0 / c.grad_accum, True)
        norm = clip_grad_norm(m.store.flat_grad, c.grad_clip)
        self.step += 1
        lr = self.schedule(self.step)
        self.optimizer.step(lr)
        return total / c.grad_accum, lr, norm

    def evaluate(self) -> float | None:
        """Mean cross-entropy over the fixed validation windows (eval mode: no dropout)."""
        if not self.val_batches:
            return None
        self.model.eval()
        try:
            losses = [self.objective(self.model, x, y, 1.0, False) for x, y in self.val_batches]
        finally:
            self.model.train()
        return float(np.mean(losses))

    def _run_eval(self, progress) -> None:
        loss = self.evaluate()
        if loss is None:
            return
        ppl = math.exp(min(loss, 700.0))
        self.history["val"].append({"step": self.step, "loss": loss, "ppl": ppl})
        progress.write(f"step {self.step}: val loss {loss:.4f} | val ppl {ppl:.2f}")
        self._emit("eval", {"loss": loss, "ppl": ppl})

    def _emit(self, event, info):
        for cb in self.callbacks:
            cb(self, event, info)

    # ------------------------------------------------------------------ the loop
    def fit(self, steps: int | None = None) -> dict:
        """Train until max_steps / max_minutes (or `steps` more steps), Ctrl-C, then evaluate,
        checkpoint, and write the history. Returns the history."""
        c = self.config
        start = time.perf_counter()
        deadline = None if c.max_minutes is None else start + 60.0 * c.max_minutes
        stop_at = None if steps is None else self.step + int(steps)
        progress = _Progress(c.progress, self.total_steps, self.step, self.log)
        old_handler = self._install_sigint()
        self._interrupted, self.stop_reason = False, None
        timing_from, timed_steps, step_time, tokens = None, 0, 0.0, 0
        tokens_per_step = c.batch_size * c.block_size * c.grad_accum
        try:
            while True:
                if self._interrupted:
                    self.stop_reason = "interrupted"
                    break
                if self.total_steps is not None and self.step >= self.total_steps:
                    self.stop_reason = "max_steps"
                    break
                if stop_at is not None and self.step >= stop_at:
                    self.stop_reason = "steps"
                    break
                if deadline is not None and time.perf_counter() >= deadline:
                    self.stop_reason = "time"
                    break
                t0 = time.perf_counter()
                loss, lr, norm = self.train_step()
                dt = time.perf_counter() - t0
                step_time += dt
                tokens += tokens_per_step
                self.history["train"].append({"step": self.step, "loss": loss, "lr": lr, "grad_norm": norm,
                                              "tokens_per_s": tokens_per_step / dt})
                if not math.isfinite(loss):
                    progress.write(f"step {self.step}: loss is {loss}; stopping")
                    self.stop_reason = "diverged"
                    break
                if c.max_steps is None and deadline is not None:
                    timing_from, timed_steps = self._maybe_decide_total(start, deadline, timing_from, timed_steps, progress)
                if self.step % c.log_interval == 0 or self.step == 1:
                    progress.update(self.step, self.total_steps, loss, lr, tokens / max(step_time, 1e-9),
                                    time.perf_counter() - start)
                    step_time, tokens = 0.0, 0
                self._emit("step", {"loss": loss, "lr": lr, "grad_norm": norm})
                if c.eval_interval and self.step % c.eval_interval == 0:
                    self._run_eval(progress)
                if c.checkpoint_interval and self.step % c.checkpoint_interval == 0 and self.out_dir:
                    self.save_checkpoint()
        except KeyboardInterrupt:  # a second Ctrl-C, or no handler (not the main thread)
            self.stop_reason = "interrupted"
            progress.write("interrupted inside a step: the checkpoint holds a partially applied step")
        finally:
            self._restore_sigint(old_handler)
        progress.close()
        if self.stop_reason == "interrupted":
            self.log(f"interrupted at step {self.step}: saving a checkpoint")
        if not self.history["val"] or self.history["val"][-1]["step"] != self.step:
            self._run_eval(progress)
        if self.out_dir:
            if getattr(self, "_saved_step", None) != self.step:
                self.save_checkpoint()
            self.save_history()
        return self.history

    def _maybe_decide_total(self, start, deadline, timing_from, timed_steps, progress):
        """With only a time budget, size the cosine (total_steps) from the measured speed: first
        after a few steps (inside the warm-up, so no lr used so far depended on it), then again
        every log interval as the speed estimate firms up (evaluation time included, since the
        average runs over wall-clock time). The loop stops at the deadline or at total_steps."""
        now = time.perf_counter()
        if timing_from is None:  # step 1 includes one-off costs: time from its end
            return (now, self.step), 0
        t_from, s_from = timing_from
        done = self.step - s_from
        first = self.schedule.total_steps is None
        if done < 3 or (not first and self.step % self.config.log_interval):
            return timing_from, done
        per_step = (now - t_from) / done
        self.total_steps = self.step + max(1, int((deadline - now) / per_step))
        self.schedule.total_steps = self.total_steps
        progress.set_total(self.total_steps)
        return timing_from, done

    # ------------------------------------------------------------------ Ctrl-C
    def _install_sigint(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._interrupted:  # second Ctrl-C: stop now
                raise KeyboardInterrupt
            self._interrupted = True
            print("\nCtrl-C: finishing this step, then saving a checkpoint (Ctrl-C again to abort now)",
                  file=sys.stderr, flush=True)

        try:
            return signal.signal(signal.SIGINT, handler)
        except ValueError:
            return None

    @staticmethod
    def _restore_sigint(old):
        if old is not None:
            signal.signal(signal.SIGINT, old)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> str:
        """Write checkpoints/step-N (via a temporary directory renamed into place), then
        LATEST; keep the newest `keep_checkpoints`. Returns the checkpoint directory."""
        if not self.out_dir:
            raise ValueError("Trainer.save_checkpoint: no out_dir")
        root = os.path.join(self.out_dir, "checkpoints")
        os.makedirs(root, exist_ok=True)
        name = f"step-{self.step:06d}"
        final = os.path.join(root, name)
        tmp = os.path.join(root, f".{name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        save_model(self.model, tmp, metadata={"step": str(self.step)})
        tensors, scalars = self.optimizer.state_dict()
        save_file(tensors, os.path.join(tmp, "optimizer.safetensors"), {"state": json.dumps(scalars)})
        state = {
            "step": self.step,
            "total_steps": self.total_steps,
            "stop_reason": self.stop_reason,
            "sampler_state": self.sampler.state(),
            "dropout_rng_state": self.model.rng.generator.bit_generator.state,
            "train_config": dataclasses.asdict(self.config),
            "history": self.history,
        }
        write_text(os.path.join(tmp, "trainer_state.json"), json.dumps(state) + "\n")
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_text(os.path.join(root, "LATEST"), name + "\n")
        done = sorted(d for d in os.listdir(root) if d.startswith("step-"))
        for old in done[:-self.config.keep_checkpoints]:
            if old != name:
                shutil.rmtree(os.path.join(root, old), ignore_errors=True)
        self.checkpoint_dir, self._saved_step = final, self.step
        return final

    def resume(self, path=None) -> bool:
        """Load the newest checkpoint of out_dir (or the checkpoint directory `path`) into this
        trainer and its model. Returns False if there is none."""
        path = os.fspath(path) if path is not None else (latest_checkpoint(self.out_dir) if self.out_dir else None)
        if path is None or not os.path.isdir(path):
            return False
        load_weights(self.model, os.path.join(path, "model.safetensors"), os.path.join(path, "config.json"))
        scalars = json.loads(read_metadata(os.path.join(path, "optimizer.safetensors"))["state"])
        self.optimizer.load_state_dict(load_file(os.path.join(path, "optimizer.safetensors")), scalars)
        with open(os.path.join(path, "trainer_state.json"), encoding="utf-8") as f:
            state = json.load(f)
        self.step = int(state["step"])
        self.total_steps = state["total_steps"] if self.config.max_steps is None else self.config.max_steps
        self.schedule.total_steps = self.total_steps if isinstance(self.schedule, WarmupCosine) else None
        self.sampler.set_state(state["sampler_state"])
        self.model.rng.generator.bit_generator.state = state["dropout_rng_state"]
        self.history = state["history"]
        return True

    # ------------------------------------------------------------------ history
    def save_history(self) -> None:
        write_text(os.path.join(self.out_dir, "history.json"), json.dumps(self.history) + "\n")
        try:
            from ..plot import loss_curves
            loss_curves(self.history, os.path.join(self.out_dir, "loss.png"))
        except ImportError:
            pass


def train(model, train_ids, val_ids=None, out_dir=None, resume: bool = False, **config) -> Trainer:
    """Functional form: build a Trainer with TrainConfig(**config), optionally resume, fit."""
    trainer = Trainer(model, train_ids, val_ids, TrainConfig(**config), out_dir)
    if resume:
        trainer.resume()
    trainer.fit()
    return trainer
