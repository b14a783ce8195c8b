"""The benchmark harness runs and its probes compute what they claim (no timings asserted)."""
import json

import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext import cli
from conftest import needs_core


@needs_core
@pytest.mark.parametrize("n", [1, 5, 63, 64, 65, 255, 256, 257, 1000, 12345, 2 * 131072 + 12345])
def test_probe_read_sums_every_element(isa, threads, n):
    x = (np.arange(n) % 7).astype(np.float32)
    for t in (1, 2):
        threads(t)
        assert tx._backend.core.probe_read(x, 3) == pytest.approx(3 * float(x.sum()), rel=1e-6)


@needs_core
def test_probe_fma_counts_flops(isa):
    assert tx._backend.core.probe_fma(100) > 0


def test_bench_quick_smoke(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert cli.main(["bench", "--quick", "--ops", "softmax", "--threads", "1", "--repeats", "1",
                     "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "softmax" in text and "peaks" in text
    data = json.loads(out.read_text())
    assert data  # machine info, peaks and timings were written
