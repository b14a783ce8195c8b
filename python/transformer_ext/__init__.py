"""transformer_ext: transformers that are fast on ordinary CPUs.

>>> import transformer_ext as tx
>>> tx.cpu_info()["backend"]   # "cpp" when the compiled core loaded, else "numpy"
"""
__version__ = "0.1.0"

from ._backend import (  # noqa: F401
    cpu_info,
    get_backend,
    get_isa,
    get_matmul_precision,
    get_num_threads,
    set_backend,
    set_isa,
    set_matmul_precision,
    set_num_threads,
    supported_isas,
    use_backend,
)
from . import io, models, nn, ops, plot, training  # noqa: F401,E402
from .gradcheck import gradcheck  # noqa: F401,E402
