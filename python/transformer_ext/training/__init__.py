"""Training with hand-written gradients: AdamW over the flat parameter buffer, warm-up +
cosine schedule, global-norm clipping, byte-level data pipeline and the Trainer loop
(evaluation, checkpoints with exact resume, progress, loss history)."""
from .clip import clip_grad_norm, grad_norm
from .data import (BUNDLED_CORPUS, ByteTokenizer, WindowSampler, bundled_corpus, eval_windows, load_tokens,
                   prepare_text, save_tokens, train_val_split)
from .loop import Trainer, TrainConfig, causal_lm, train
from .optim import AdamW
from .schedule import Constant, WarmupCosine

__all__ = ["AdamW", "Constant", "WarmupCosine", "clip_grad_norm", "grad_norm", "ByteTokenizer", "WindowSampler",
           "bundled_corpus", "BUNDLED_CORPUS", "eval_windows", "load_tokens", "save_tokens", "prepare_text",
           "train_val_split", "Trainer", "TrainConfig", "causal_lm", "train"]
