"""The parameter store: every parameter of a model in ONE flat buffer, every gradient in a
twin flat buffer with the same layout; each named tensor is a view into each.

Why one buffer: the fused optimiser (`ops.adamw_step`) updates the whole model in one call,
gradient clipping is one norm, zeroing the gradients is one memset, and a checkpoint is
one contiguous write.

Layout: tensors with weight decay (matrices and embeddings: ndim >= 2, unless declared
otherwise) come first, then the rest (biases, LayerNorm), so `flat[:n_decay]` and
`flat[n_decay:]` are the two AdamW groups. Each tensor starts on a 64-byte boundary; the few
padding elements between tensors are zero and stay zero (zero gradient, zero AdamW update).
`parameters()` lists names in declaration order (Hugging Face's state-dict order).

Initialisation is deterministic: each tensor draws from its own generator seeded by
(seed, crc32(name)), in float64, then rounds to the store's dtype — so a float32 and a
float64 model with the same seed hold the same weights (up to rounding), and adding a
parameter does not change the others.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from ..nn.dropout import DropoutRNG
from ..ops import _checks
from ..nn.module import Module, Param

_ALIGN_BYTES = 64
_INITS = ("normal", "zeros", "ones")


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter: `init` is "normal" (mean 0, `std`), "zeros", "ones", or a
    callable (rng: np.random.Generator, shape) -> float64 array. `decay`: AdamW weight decay."""

    name: str
    shape: tuple
    init: object = "normal"
    std: float = 0.02
    decay: bool = True


class ParamStore:
    """Declare parameters, then `allocate()` once: one flat buffer, views, initialisation."""

    def __init__(self, dtype=np.float32, seed: int = 0):
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"ParamStore: dtype must be float32 or float64, got {dtype}")
        self.dtype = dtype
        self.seed = int(seed)
        self.specs: dict[str, ParamSpec] = {}
        self._params: dict[str, Param] = {}
        self._offsets: dict[str, int] = {}
        self.flat = None       # all parameters, 1-D
        self.flat_grad = None  # all gradients, same layout
        self.n_decay = 0       # flat[:n_decay] holds exactly the decayed tensors (+ padding)

    # ------------------------------------------------------------------ declaration
    def declare(self, name: str, shape, init="normal", std: float = 0.02, decay: bool | None = None) -> Param:
        """Declare a parameter and return its Param (views filled in by `allocate`)."""
        if self.flat is not None:
            raise RuntimeError(f"ParamStore.declare({name!r}): the store is already allocated")
        if name in self.specs:
            raise ValueError(f"ParamStore.declare: parameter {name!r} declared twice")
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ValueError(f"ParamStore.declare({name!r}): negative dimension in shape {shape}")
        if not callable(init) and init not in _INITS:
            raise ValueError(f"ParamStore.declare({name!r}): init must be one of {_INITS} or a callable, got {init!r}")
        if decay is None:
            decay = len(shape) >= 2
        self.specs[name] = ParamSpec(name, shape, init, float(std), bool(decay))
        p = Param(name, shape)
        self._params[name] = p
        return p

    # ------------------------------------------------------------------ allocation
    def allocate(self) -> "ParamStore":
        if self.flat is not None:
            raise RuntimeError("ParamStore.allocate: already allocated")
        align = max(1, _ALIGN_BYTES // self.dtype.itemsize)
        offset = 0
        for decay in (True, False):  # decayed tensors first: flat[:n_decay] is AdamW's decay group
            for name, spec in self.specs.items():
                if spec.decay == decay:
                    self._offsets[name] = offset
                    offset += _round_up(math.prod(spec.shape), align)
            if decay:
                self.n_decay = offset
        self.flat = _aligned_zeros(offset, self.dtype)
        self.flat_grad = _aligned_zeros(offset, self.dtype)
        for name, p in self._params.items():
            n = math.prod(p.shape)
            o = self._offsets[name]
            p.value = self.flat[o:o + n].reshape(p.shape)
            p.grad = self.flat_grad[o:o + n].reshape(p.shape)
        self.reset_parameters()
        return self

    def reset_parameters(self, seed: int | None = None) -> None:
        """(Re)initialise every parameter deterministically from `seed` (default: the store's)."""
        self._need_allocated("reset_parameters")
        seed = self.seed if seed is None else int(seed)
        for name, spec in self.specs.items():
            p = self._params[name]
            if spec.init == "zeros":
                p.value[...] = 0
            elif spec.init == "ones":
                p.value[...] = 1
            else:
                rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
                if spec.init == "normal":
                    p.value[...] = rng.standard_normal(spec.shape) * spec.std
                else:
                    p.value[...] = np.asarray(spec.init(rng, spec.shape), dtype=np.float64)

    # ------------------------------------------------------------------ access
    def _need_allocated(self, what: str) -> None:
        if self.flat is None:
            raise RuntimeError(f"ParamStore.{what}: call allocate() first")

    def __getitem__(self, name: str) -> Param:
        try:
            return self._params[name]
        except KeyError:
            raise KeyError(f"no parameter named {name!r}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._params

    def names(self) -> list[str]:
        return list(self._params)

    def parameters(self) -> dict[str, np.ndarray]:
        """name → value view (declaration order)."""
        self._need_allocated("parameters")
        return {n: p.value for n, p in self._params.items()}

    def gradients(self) -> dict[str, np.ndarray]:
        """name → gradient view (same names as parameters())."""
        self._need_allocated("gradients")
        return {n: p.grad for n, p in self._params.items()}

    def zero_grad(self) -> None:
        self._need_allocated("zero_grad")
        g = self.flat_grad
        if g.dtype == np.float32 and _checks.backend() == "cpp":
            _checks.core().fill_zero(g)  # all threads, streaming stores: 2x / 4x NumPy's fill on 1 / 2 threads
        else:
            g.fill(0)

    def num_parameters(self) -> int:
        """Number of scalar parameters (padding not counted)."""
        return sum(math.prod(s.shape) for s in self.specs.values())

    def offset(self, name: str) -> int:
        """Where `name` starts in the flat buffers."""
        self._need_allocated("offset")
        return self._offsets[name]

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays into the parameters (cast to the store's dtype). strict: the names must
        match exactly; shapes must always match."""
        self._need_allocated("load_state_dict")
        if strict:
            missing = [n for n in self._params if n not in state]
            unexpected = [n for n in state if n not in self._params]
            if missing or unexpected:
                raise KeyError(f"load_state_dict: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                               f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        for name, value in state.items():
            if name not in self._params:
                continue
            p = self._params[name]
            value = np.asarray(value)
            if value.shape != p.shape:
                raise ValueError(f"load_state_dict: {name!r} has shape {value.shape}, the model expects {p.shape}")
            p.value[...] = value

    def state_dict(self) -> dict[str, np.ndarray]:
        """name → copy of the value."""
        return {n: v.copy() for n, v in self.parameters().items()}


def _round_up(n: int, k: int) -> int:
    return (n + k - 1) // k * k


def _aligned_zeros(n: int, dtype: np.dtype) -> np.ndarray:
    """Zeros of length n whose data starts on a 64-byte boundary."""
    extra = _ALIGN_BYTES // dtype.itemsize
    raw = np.zeros(n + extra, dtype)
    shift = (-raw.ctypes.data % _ALIGN_BYTES) // dtype.itemsize
    return raw[shift:shift + n]


class Model(Module):
    """Base of the models: owns a ParamStore (`self.store`) and the shared DropoutRNG
    (`self.rng`), and exposes the store's API. Subclasses declare their parameters in
    `self.store`, build their layers, then call `self.store.allocate()`."""

    def _init_store(self, dtype, seed: int) -> ParamStore:
        self.store = ParamStore(dtype, seed)
        # dropout masks come from their own stream, distinct from the init streams
        self.rng = DropoutRNG([int(seed), 0x64726F70])
        return self.store

    @property
    def dtype(self) -> np.dtype:
        return self.store.dtype

    # ------------------------------------------------------------------ backward bookkeeping
    def _pending_record(self):
        """What the last train-mode forward left for `backward` (its output shapes)."""
        if getattr(self, "_pending", None) is None:
            raise RuntimeError(f"{type(self).__name__}.backward: no forward to differentiate; call the model in "
                               "train mode (model.train()) first — eval mode keeps no activations")
        return self._pending

    def _check_grad(self, name: str, g, shape: tuple, squeeze: bool) -> np.ndarray:
        """An upstream gradient `g` as an array of the forward output's shape and the model's dtype
        (`squeeze`: the forward took one unbatched sequence and dropped the batch axis)."""
        g = np.asarray(g)
        if squeeze:
            g = g[None]
        if g.shape != shape:
            got = g.shape[1:] if squeeze else g.shape
            raise ValueError(f"{type(self).__name__}.backward: {name} has shape {got}, the forward gave "
                             f"{shape[1:] if squeeze else shape}")
        if g.dtype != self.dtype:
            raise TypeError(f"{type(self).__name__}.backward: {name} has dtype {g.dtype}, the model computes in "
                            f"{self.dtype}")
        return g

    def parameters(self) -> dict[str, np.ndarray]:
        """name → value view into one flat buffer (`self.store.flat`)."""
        return self.store.parameters()

    def gradients(self) -> dict[str, np.ndarray]:
        """name → gradient view into the twin flat buffer (`self.store.flat_grad`)."""
        return self.store.gradients()

    def zero_grad(self) -> None:
        self.store.zero_grad()

    def num_parameters(self) -> int:
        return self.store.num_parameters()

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        self.store.load_state_dict(state, strict=strict)
        if self.packed_dtype is not None:  # the packed copies are snapshots: refresh them
            self.pack_weights(self.packed_dtype)

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.store.state_dict()

    # ------------------------------------------------------------------ inference weights
    def _linears(self) -> list:
        from ..nn.linear import Linear
        seen, out = set(), []
        for m in self.modules():
            if isinstance(m, Linear) and id(m) not in seen:
                seen.add(id(m))
                out.append(m)
        return out

    @property
    def packed_dtype(self) -> str | None:
        """"fp32" / "bf16" when the Linear weights are pre-packed for inference (pack_weights), else None."""
        return getattr(self, "_packed_dtype", None)

    def pack_weights(self, dtype: str = "fp32") -> "Model":
        """Pack every Linear weight once for inference (ops.pack_weight): eval-mode forwards and
        generation then multiply by the packed copies. "bf16" rounds them to bfloat16 (activations
        and sums stay float32) so decoding, which streams every weight per token, reads half the
        bytes; "fp32" gives the same results as the unpacked weights. Puts the model in eval mode;
        `train()` drops the copies (training changes the weights; pack again after changing them).
        The float32 parameters stay: they are what training updates and what `save` writes, so
        packing adds the packed bytes (half the weight bytes for bf16) to the model's memory."""
        if dtype not in ("fp32", "bf16"):
            raise ValueError(f"{type(self).__name__}.pack_weights: dtype must be 'fp32' or 'bf16', got {dtype!r}")
        if self.dtype != np.float32:
            raise TypeError(f"{type(self).__name__}.pack_weights: packed weights need a float32 model, "
                            f"this one is {self.dtype}")
        self.eval()
        for lin in self._linears():
            lin.pack(dtype)
        self._packed_dtype = dtype
        self._decoder = None  # a fused decoder (generation/fused.py) points at the old copies
        return self

    def unpack_weights(self) -> "Model":
        """Drop the packed copies (forwards use the float32 parameters again)."""
        for lin in self._linears():
            lin.packed = None
        self._packed_dtype = None
        self._decoder = None
        return self

    def train(self, mode: bool = True):
        """Train mode (see Module.train); drops pre-packed inference weights, which training would make stale."""
        if mode and self.packed_dtype is not None:
            self.unpack_weights()
        return super().train(mode)

    def seed_dropout(self, seed) -> None:
        """Reseed the dropout masks (the same seed before two forwards gives the same masks)."""
        self.rng.seed(seed)

    # ------------------------------------------------------------------ save / load
    def save(self, path) -> str:
        """Write the model to the directory `path`: model.safetensors (Hugging Face names) +
        config.json (config fields, architecture, dtype); each file written atomically."""
        from ..io.checkpoint import save_model
        return save_model(self, path)

    @classmethod
    def load(cls, path, dtype=None) -> "Model":
        """Rebuild a model saved by `save` (the architecture comes from config.json; `GPT.load`
        also checks it is a GPT). `path` may also be a training run's output directory (its
        newest checkpoint). `dtype` overrides the saved one."""
        from ..io.checkpoint import load_model
        return load_model(path, expected=None if cls is Model else cls, dtype=dtype)
