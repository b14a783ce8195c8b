"""Transformer models with hand-written backward over `transformer_ext.nn` / `ops`.

Every model keeps all its parameters in one flat buffer (`model.store.flat`) and its
gradients in a twin buffer (`model.store.flat_grad`); `parameters()` / `gradients()` map
Hugging Face state-dict names to views into them.
"""
from .gpt import GPT, GPTConfig
from .params import Model, ParamSpec, ParamStore

__all__ = ["GPT", "GPTConfig", "Model", "ParamSpec", "ParamStore"]
from .bert import Bert, BertConfig, BertOutput, mlm_mask_tokens
from .seq2seq import Seq2Seq, Seq2SeqConfig

__all__ += ["Bert", "BertConfig", "BertOutput", "mlm_mask_tokens", "Seq2Seq", "Seq2SeqConfig"]
