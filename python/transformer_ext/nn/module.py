"""The two building blocks of every layer: `Param` (a value view + its gradient view) and
`Module` (train/eval mode, children, call = forward).

Layers never own arrays. A `Param` is declared in a `ParamStore`
(`transformer_ext.models.params`), which lays every parameter out in ONE flat buffer and
every gradient in a twin flat buffer; after `store.allocate()` each `Param` holds a view
into each. Layers keep `Param`s, and their `backward` ACCUMULATES (`+=`) into `param.grad`.

Convention shared by every layer in `transformer_ext.nn`:
    y = layer(x, ...)          # forward; in train mode it keeps what backward needs
    dx = layer.backward(dy)    # accumulates parameter gradients, returns the input gradient
                               # (and frees what forward kept)
In eval mode forward keeps nothing and backward raises.
"""
from __future__ import annotations


class Param:
    """A named parameter: `value` and `grad` are views into the store's two flat buffers
    (None until the store is allocated)."""

    __slots__ = ("name", "shape", "value", "grad")

    def __init__(self, name: str, shape, value=None, grad=None):
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.value = value
        self.grad = grad

    def accumulate(self, g) -> None:
        """grad += g (the gradient of a use of this parameter; tied uses add up)."""
        if g is not None:
            grad = self.grad  # a view: add in place (never rebind the attribute)
            grad += g

    @property
    def root(self) -> "Param":
        """The declared parameter this one views (itself, or the parent of a `rows` view)."""
        return self

    def rows(self, start: int, stop: int) -> "Param":
        """Rows [start, stop) of this parameter as a Param viewing the same memory (e.g. the q / k / v
        thirds of torch's packed in_proj_weight (3d, d) and in_proj_bias (3d,)). Usable before the
        store is allocated: the views resolve when they are read."""
        if not 0 <= start < stop <= self.shape[0]:
            raise ValueError(f"Param {self.name!r}: rows [{start}, {stop}) out of range for shape {self.shape}")
        return _Rows(self, start, stop)

    def __repr__(self) -> str:
        state = "unallocated" if self.value is None else str(self.value.dtype)
        return f"Param({self.name!r}, shape={self.shape}, {state})"


class _Rows(Param):
    """A row range of a parent Param; value and grad are views resolved on access."""

    __slots__ = ("parent", "start", "stop")

    def __init__(self, parent: Param, start: int, stop: int):
        self.name = f"{parent.name}[{start}:{stop}]"
        self.shape = (stop - start,) + parent.shape[1:]
        self.parent, self.start, self.stop = parent, start, stop

    @property
    def root(self) -> Param:
        return self.parent.root

    @property
    def value(self):
        v = self.parent.value
        return None if v is None else v[self.start:self.stop]

    @property
    def grad(self):
        g = self.parent.grad
        return None if g is None else g[self.start:self.stop]


class Module:
    """Base of every layer and model: a `training` flag, children discovered from attributes
    (Modules, and lists/tuples of Modules), `__call__` = `forward`."""

    training: bool = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy):  # pragma: no cover - abstract
        raise NotImplementedError

    def children(self):
        for value in vars(self).values():
            if isinstance(value, Module):
                yield value
            elif isinstance(value, (list, tuple)):
                for item in value:
                    if isinstance(item, Module):
                        yield item

    def modules(self):
        """This module and all its descendants (depth first; shared modules repeat)."""
        yield self
        for child in self.children():
            yield from child.modules()

    def train(self, mode: bool = True):
        """Train mode: dropout active, forward keeps activations for backward."""
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self):
        """Eval mode: dropout is the identity, forward keeps nothing (backward raises)."""
        return self.train(False)

    def params(self) -> list:
        """The declared Params this module uses directly and through its children (deduplicated:
        tied parameters appear once; a `rows` view counts as its parent)."""
        seen, out = set(), []
        for m in self.modules():
            for value in vars(m).values():
                if isinstance(value, Param) and id(value.root) not in seen:
                    seen.add(id(value.root))
                    out.append(value.root)
        return out

    # -- helpers for subclasses
    def _need(self, saved, what: str = "forward"):
        """The activations kept by forward, or a clear error when there are none."""
        if saved is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward: nothing saved for backward; call {what} in train "
                "mode first (eval mode keeps no activations, and each backward consumes one forward)"
            )
        return saved
