"""Command-line interface: ``transformer-ext <command>`` or ``python -m transformer_ext <command>``.

Each command is a tuple (help, description, add_arguments, run): `bench` and `info` are
defined here, `demo`, `train`, `generate` and `tokenize` in their own modules (see `_commands`).
"""
from __future__ import annotations

import argparse
import json
import sys


# --------------------------------------------------------------------------- info

def _info_args(p: argparse.ArgumentParser) -> None:
    pass


def _info_run(args: argparse.Namespace) -> int:
    import transformer_ext as tx

    print(json.dumps(tx.cpu_info(), indent=2))
    return 0


# --------------------------------------------------------------------------- bench

def _arg_type(fn):
    """An argparse type from a validator raising ValueError (message kept for the user)."""
    def convert(text):
        try:
            return fn(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = fn.__name__
    return convert


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return int(text)


def _ops_list(text: str) -> str:
    from . import bench

    bench.select_cases(bench.build_cases(), text)  # raises ValueError naming the valid ops
    return text


def _bench_args(p: argparse.ArgumentParser) -> None:
    from .bench import build_cases, parse_threads

    names = ", ".join(dict.fromkeys(c.op for c in build_cases()))
    p.add_argument("--ops", metavar="LIST", type=_arg_type(_ops_list),
                   help=f"comma-separated ops to run (default: all), e.g. matmul,attention; from: {names}")
    p.add_argument("--threads", metavar="LIST", type=_arg_type(parse_threads),
                   help="comma-separated thread counts, each run in turn, e.g. 1,2 (default: the process-wide "
                        "count, tx.get_num_threads(), set by TX_NUM_THREADS or the physical cores); NumPy's BLAS "
                        "is limited to the same count")
    p.add_argument("--repeats", type=_arg_type(_positive_int), metavar="N",
                   help="timed samples per case and backend; the median is reported (default: 7, 3 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="smaller shapes and fewer repeats: a smoke run of a few seconds")
    p.add_argument("--json", metavar="FILE", dest="json_path",
                   help="also write the machine info, measured peaks and every timing to FILE as JSON")


def _bench_run(args: argparse.Namespace) -> int:
    from . import bench

    prog = "python -m transformer_ext" if sys.argv[0].endswith("__main__.py") else "transformer-ext"
    bench.run(ops=args.ops, threads=args.threads, repeats=args.repeats, quick=args.quick,
              json_path=args.json_path, command=" ".join([prog] + sys.argv[1:]))
    return 0


_BENCH_HELP = """\
Time every op on the C++ ("cpp") and NumPy backends at GPT-2-small shapes (d=768,
12 heads, d_ff=3072, V=50257) and compare with the machine's measured peaks.

Columns: op, shape, ISA and thread count; median ms per call on each backend;
speedup = numpy time / cpp time; achieved GFLOP/s (compute-bound ops) or GB/s
(memory-bound ops, minimum traffic) and its percentage of the peak: the FMA rate
measured by a probe kernel, or the read bandwidth over a 256 MiB buffer; memory-bound
ops also as a percentage of the copy bandwidth (%copy: 128 MiB copied, read + write
bytes). "n/a": the op is not implemented on that backend.

Environment: TX_NUM_THREADS, TX_ISA (scalar/avx2/avx512) pick the C++ threads and
kernel variant. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE can slow NumPy down.
"""

# name -> (help, long description, add_arguments, run); each command module exports its tuple.
def _commands() -> dict:
    from .demo import DEMO_COMMAND
    from .generate_cli import GENERATE_COMMAND
    from .tokenizers.cli import TOKENIZE_COMMAND
    from .train_cli import TRAIN_COMMAND

    return {"demo": DEMO_COMMAND, "train": TRAIN_COMMAND, "tokenize": TOKENIZE_COMMAND,
            "generate": GENERATE_COMMAND, **COMMANDS}


COMMANDS = {
    "bench": ("benchmark every op on both backends against the roofline", _BENCH_HELP, _bench_args, _bench_run),
    "info": ("print tx.cpu_info() (ISA, CPU features, threads, backend) as JSON",
             "Print tx.cpu_info() as JSON: kernel ISA variant, CPU features, threads, backend.",
             _info_args, _info_run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transformer-ext",
        description="transformer_ext: transformer kernels in C++ (SIMD + OpenMP) with a NumPy reference.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (short, long, add_args, run) in _commands().items():
        p = sub.add_parser(name, help=short, description=long, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_args(p)
        p.set_defaults(_run=run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args._run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
