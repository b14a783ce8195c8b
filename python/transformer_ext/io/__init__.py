"""Saving and loading: safetensors (own reader/writer, no pickle), model checkpoints
(`Model.save` / `Model.load`: safetensors weights + JSON config) and atomic writes."""
from .atomic import atomic_write, write_text
from .checkpoint import (ARCHITECTURES, CheckpointError, latest_checkpoint, load_model, register_architecture,
                         save_model)
from .safetensors import SafetensorsError, load_file, read_header, read_metadata, save_file

__all__ = ["atomic_write", "write_text", "save_file", "load_file", "read_header", "read_metadata",
           "SafetensorsError", "save_model", "load_model", "register_architecture", "ARCHITECTURES",
           "CheckpointError", "latest_checkpoint"]
