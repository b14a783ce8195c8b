"""Model checkpoints: a directory holding

    model.safetensors   every parameter under its Hugging Face state-dict name (tied weights
                        once), metadata {"format": "pt", "architecture": NAME}
    config.json         the model's config fields (Hugging Face names) + "architecture" + "dtype"

`model.save(dir)` / `Model.load(dir)` (or `GPT.load(dir)`) go through `save_model` /
`load_model` here. The architecture name picks (ConfigClass, ModelClass) from a small
registry (`register_architecture`); GPT is built in, other models register themselves.
A training run's output directory (checkpoints/LATEST → checkpoints/step-N) is accepted
too: it loads the newest checkpoint. Every file is written atomically; no pickle anywhere.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from .atomic import write_text
from .safetensors import load_file, read_header, save_file

WEIGHTS, CONFIG = "model.safetensors", "config.json"
ARCHITECTURES: dict = {}  # name -> (ConfigClass, ModelClass)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded (names the file, the tensor and the shapes)."""


def register_architecture(name: str, config_cls, model_cls) -> None:
    """Make `Model.load` able to rebuild `model_cls(config_cls.from_dict(d), dtype=...)`."""
    ARCHITECTURES[name] = (config_cls, model_cls)


def _builtin() -> None:
    if "GPT" not in ARCHITECTURES:
        from ..models.gpt import GPT, GPTConfig
        register_architecture("GPT", GPTConfig, GPT)
    # models that may exist in this build register here under their class names
    for module, model, config in (("bert", "Bert", "BertConfig"), ("seq2seq", "Seq2Seq", "Seq2SeqConfig")):
        if model in ARCHITECTURES:
            continue
        try:
            mod = __import__(f"transformer_ext.models.{module}", fromlist=[model, config])
            register_architecture(model, getattr(mod, config), getattr(mod, model))
        except (ImportError, AttributeError):
            pass


def architecture_of(model) -> str:
    _builtin()
    for name, (_, cls) in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise CheckpointError(f"save: {type(model).__name__} is not a registered architecture "
                          f"(known: {sorted(ARCHITECTURES)}); call register_architecture first")


def _config_dict(config) -> dict:
    if hasattr(config, "to_dict"):
        return config.to_dict()
    return dataclasses.asdict(config)


def save_model(model, path, metadata: dict | None = None) -> str:
    """Write `model` to the directory `path` (created if needed); returns the path."""
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    arch = architecture_of(model)
    params = model.parameters()
    meta = {"format": "pt", "architecture": arch, **(metadata or {})}
    save_file(params, os.path.join(path, WEIGHTS), meta)
    config = {"architecture": arch, "dtype": str(model.dtype), **_config_dict(model.config)}
    write_text(os.path.join(path, CONFIG), json.dumps(config, indent=2, sort_keys=False) + "\n")
    return path


def latest_checkpoint(path) -> str | None:
    """The newest checkpoint directory of a training run's output directory, or None."""
    latest = os.path.join(os.fspath(path), "checkpoints", "LATEST")
    if not os.path.isfile(latest):
        return None
    with open(latest, encoding="utf-8") as f:
        name = f.read().strip()
    return os.path.join(os.fspath(path), "checkpoints", name)


def resolve(path) -> str:
    """A directory holding config.json + model.safetensors (following a run's LATEST)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such checkpoint directory: {path}")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, CONFIG)):
        newest = latest_checkpoint(path)
        if newest is not None:
            path = newest
    for f in (CONFIG, WEIGHTS):
        if not os.path.isfile(os.path.join(path, f)):
            raise FileNotFoundError(f"load: {path} has no {f} (expected a directory written by model.save)")
    return path


def load_model(path, expected=None, dtype=None):
    """Rebuild the model saved in `path`. `expected`: a class the result must be an instance of
    (`GPT.load` passes GPT); `dtype`: override the saved dtype (e.g. np.float64 for gradcheck)."""
    path = resolve(path)
    cfg_path = os.path.join(path, CONFIG)
    with open(cfg_path, encoding="utf-8") as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"load: {cfg_path} is not valid JSON ({exc})") from None
    _builtin()
    arch = raw.get("architecture")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"load: {cfg_path}: unknown architecture {arch!r} (known: {sorted(ARCHITECTURES)})")
    config_cls, model_cls = ARCHITECTURES[arch]
    if expected is not None and not issubclass(model_cls, expected):
        raise CheckpointError(f"load: {path} holds a {arch} ({model_cls.__name__}), not a {expected.__name__}")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    try:
        config = config_cls(**{k: v for k, v in raw.items() if k in fields})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"load: {cfg_path}: invalid {config_cls.__name__}: {exc}") from None
    model = model_cls(config, dtype=np.dtype(dtype or raw.get("dtype", "float32")))
    load_weights(model, os.path.join(path, WEIGHTS), cfg_path)
    return model


def load_weights(model, weights_path, cfg_path="the config") -> None:
    """Copy the tensors of `weights_path` into `model`, checking names and shapes first."""
    header, _, _ = read_header(weights_path)
    params = model.parameters()
    missing = [n for n in params if n not in header]
    unexpected = [n for n in header if n not in params]
    if missing or unexpected:
        raise CheckpointError(f"load: {weights_path} does not match {cfg_path}: missing tensors {missing[:5]}"
                              f"{'...' if len(missing) > 5 else ''}, unexpected tensors {unexpected[:5]}"
                              f"{'...' if len(unexpected) > 5 else ''}")
    for name, p in params.items():
        shape = tuple(header[name]["shape"])
        if shape != p.shape:
            raise CheckpointError(f"load: tensor {name!r} has shape {shape} in {weights_path}, but the model built "
                                  f"from {cfg_path} expects {p.shape}")
    for name, value in load_file(weights_path).items():
        params[name][...] = value
