"""Loading Hugging Face transformers checkpoints (GPT-2, BERT) from a local folder.

A folder saved by `save_pretrained` holds `config.json` and `model.safetensors` (read with our
own reader, io/safetensors.py) or `pytorch_model.bin` (read only when torch is importable, with
`torch.load(weights_only=True)`). Nothing is ever downloaded.

Name mapping (our parameter names are HF's, so the work is in the differences):
- GPT-2: GPT2LMHeadModel keys start with `transformer.`, GPT2Model's do not (we add it); Conv1D
  weights are (in, out), our layout already; `lm_head.weight` is the tied wte → skipped (unless
  the config unties it); the buffers `attn.bias` / `attn.masked_bias` (older files) → skipped.
- BERT: BertForMaskedLM keys start with `bert.`, BertModel's do not (we add it); the MLM head
  (`cls.predictions.*`) is loaded when present; `cls.predictions.decoder.weight` is the tied word
  embedding and `cls.predictions.decoder.bias` the same tensor as `cls.predictions.bias` →
  skipped; the pooler (`pooler.dense.*`, BertModel) is not part of our Bert → ignored, listed
  in `model.hf_ignored`; old `LayerNorm.gamma/beta` names → `weight/bias`;
  `embeddings.position_ids` buffer → skipped.
Any other missing or unexpected key raises HFLoadError naming them.
"""
from __future__ import annotations

import json
import os

import numpy as np

from .safetensors import load_file


class HFLoadError(ValueError):
    pass


_SAFE = "model.safetensors"
_BIN = "pytorch_model.bin"


def _read_config(local_dir) -> dict:
    d = os.fspath(local_dir)
    if not os.path.isdir(d):
        raise HFLoadError(f"from_pretrained: {d!r} is not a directory (nothing is downloaded; give a local folder)")
    path = os.path.join(d, "config.json")
    if not os.path.isfile(path):
        raise HFLoadError(f"from_pretrained: {d!r} has no config.json")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise HFLoadError(f"from_pretrained: {path}: invalid JSON ({e})") from None


def _read_weights(local_dir) -> dict:
    d = os.fspath(local_dir)
    safe, binf = os.path.join(d, _SAFE), os.path.join(d, _BIN)
    if os.path.isfile(safe):
        return load_file(safe)
    if os.path.isfile(os.path.join(d, _SAFE + ".index.json")):
        with open(os.path.join(d, _SAFE + ".index.json"), encoding="utf-8") as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        out = {}
        for name in files:
            out.update(load_file(os.path.join(d, name)))
        return out
    if os.path.isfile(binf):
        try:
            import torch
        except ImportError:
            raise HFLoadError(f"from_pretrained: {d!r} has only {_BIN}, which needs torch (not installed); "
                              f"convert it to {_SAFE}") from None
        sd = torch.load(binf, map_location="cpu", weights_only=True)
        return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}
    raise HFLoadError(f"from_pretrained: {d!r} has no weights file ({_SAFE} or {_BIN})")


def _arch(cfg: dict, model_type: str, known: tuple, where: str):
    mt = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if mt != model_type:
        raise HFLoadError(f"{where}: unsupported architecture: config.json has model_type={mt!r} "
                          f"(architectures={archs}); this loader reads model_type={model_type!r}")
    bad = [a for a in archs if a not in known]
    if bad:
        raise HFLoadError(f"{where}: unsupported architecture {bad[0]!r}; supported: {', '.join(known)}")


def _finish(model, state: dict, where: str) -> None:
    params = model.parameters()
    missing = [n for n in params if n not in state]
    unexpected = [n for n in state if n not in params]
    if missing or unexpected:
        raise HFLoadError(f"{where}: the checkpoint does not fit the model: missing keys {missing}, "
                          f"unexpected keys {unexpected}")
    for n, v in state.items():
        if v.shape != params[n].shape:
            raise HFLoadError(f"{where}: {n!r} has shape {tuple(v.shape)}, the model expects {params[n].shape}")
    model.load_state_dict(state)


# ---------------------------------------------------------------------------------- GPT-2
def gpt_config_from_hf(cfg: dict):
    from ..models.gpt import GPTConfig
    where = "GPT.from_pretrained"
    _arch(cfg, "gpt2", ("GPT2LMHeadModel", "GPT2Model"), where)
    for key in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if cfg.get(key):
            raise HFLoadError(f"{where}: config.json sets {key}=true, which this GPT does not implement")
    if cfg.get("scale_attn_weights") is False:
        raise HFLoadError(f"{where}: config.json sets scale_attn_weights=false, which this GPT does not implement")
    d = {k: v for k, v in cfg.items() if k != "seed"}
    d.setdefault("tie_word_embeddings", True)
    try:
        return GPTConfig.from_dict(d)
    except (ValueError, TypeError) as e:
        raise HFLoadError(f"{where}: config.json: {e}") from None


def _weight_dtype(dtype, where: str):
    """from_pretrained's dtype → (parameter dtype, packing): "bf16"/"bfloat16" loads float32
    parameters and packs the Linear weights in bf16 (Model.pack_weights); "fp32"/"float32" or a
    NumPy float dtype gives parameters of that dtype, unpacked."""
    if isinstance(dtype, str) and dtype.lower() in ("bf16", "bfloat16"):
        return np.dtype(np.float32), "bf16"
    if isinstance(dtype, str) and dtype.lower() == "fp32":
        return np.dtype(np.float32), None
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"{where}: dtype must be 'fp32', 'bf16' or np.float32 / np.float64, got {dtype!r}")
    return dt, None


def load_gpt(local_dir, dtype=np.float32):
    from ..models.gpt import GPT
    where = "GPT.from_pretrained"
    dtype, pack = _weight_dtype(dtype, where)
    cfg = gpt_config_from_hf(_read_config(local_dir))
    raw = _read_weights(local_dir)
    state = {}
    for k, v in raw.items():
        if k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"):
            continue  # causal-mask buffers
        name = k if k.startswith("transformer.") or k.startswith("lm_head.") else "transformer." + k
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # tied to transformer.wte.weight
        state[name] = v
    model = GPT(cfg, dtype=dtype)
    _finish(model, state, where)
    model.generation_defaults = _generation_defaults(local_dir)
    model.eval()
    if pack:
        model.pack_weights(pack)
    return model


def _generation_defaults(local_dir) -> dict:
    """eos_token_id / pad_token_id that HF's generate would default to (generation_config.json,
    else config.json); GPT.generate uses them when the caller gives none."""
    d = os.fspath(local_dir)
    src = {}
    for name in ("config.json", "generation_config.json"):  # the latter wins, as in HF
        path = os.path.join(d, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                try:
                    src.update({k: v for k, v in json.load(f).items() if k in ("eos_token_id", "pad_token_id")})
                except json.JSONDecodeError:
                    pass
    return {k: v for k, v in src.items() if v is not None}


# ---------------------------------------------------------------------------------- BERT
def bert_config_from_hf(cfg: dict, has_head: bool):
    from ..models.bert import BertConfig
    where = "Bert.from_pretrained"
    _arch(cfg, "bert", ("BertForMaskedLM", "BertModel", "BertForPreTraining"), where)
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise HFLoadError(f"{where}: position_embedding_type={cfg['position_embedding_type']!r} is not supported "
                          "(only 'absolute')")
    d = {k: v for k, v in cfg.items() if k != "seed"}
    d["add_mlm_head"] = has_head
    try:
        return BertConfig.from_dict(d)
    except (ValueError, TypeError) as e:
        raise HFLoadError(f"{where}: config.json: {e}") from None


def load_bert(local_dir, dtype=np.float32):
    from ..models.bert import Bert
    where = "Bert.from_pretrained"
    dtype, pack = _weight_dtype(dtype, where)
    raw_cfg = _read_config(local_dir)
    raw = _read_weights(local_dir)
    state, ignored = {}, []
    for k, v in raw.items():
        name = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if not (name.startswith("bert.") or name.startswith("cls.")):
            name = "bert." + name
        if name.endswith("embeddings.position_ids"):
            continue  # buffer
        if name in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
            continue  # tied to the word embeddings / cls.predictions.bias
        if name.startswith("bert.pooler.") or name.startswith("cls.seq_relationship."):
            ignored.append(k)  # the pooler / NSP head are not part of this Bert
            continue
        state[name] = v
    has_head = any(n.startswith("cls.predictions.") for n in state)
    model = Bert(bert_config_from_hf(raw_cfg, has_head), dtype=dtype)
    _finish(model, state, where)
    model.hf_ignored = ignored
    model.eval()
    if pack:
        model.pack_weights(pack)
    return model


# ---------------------------------------------------------------------------------- sentence embeddings
def mean_pooled_embeddings(model, texts, tokenizer, batch_size: int = 32) -> np.ndarray:
    """Sentence embeddings as sentence-transformers' mean pooling: the mean of last_hidden_state
    over the real tokens (attention_mask = 1; padding excluded), then L2-normalised. (N, H) float32."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"Bert.encode: batch_size must be a positive int, got {batch_size!r}")
    if not texts:
        return np.zeros((0, model.config.hidden_size), np.float32)
    out = []
    was = model.training
    model.eval()
    try:
        for i in range(0, len(texts), batch_size):
            enc = tokenizer.encode_batch(texts[i:i + batch_size], padding="longest")
            get = (lambda k: enc[k]) if isinstance(enc, dict) else (lambda k: getattr(enc, k))
            ids = np.asarray(get("ids"), np.int64)
            am = np.asarray(get("attention_mask"))
            tt = None
            try:
                tt = get("token_type_ids")
            except (KeyError, AttributeError):
                pass
            h = model(ids, attention_mask=am, token_type_ids=None if tt is None else np.asarray(tt, np.int64))
            h = np.asarray(h.last_hidden_state, np.float64)
            w = am.astype(np.float64)[..., None]
            e = (h * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-9)
            e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
            out.append(e.astype(np.float32))
    finally:
        model.train(was)
    return np.concatenate(out)
