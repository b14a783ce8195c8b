"""safetensors reader/writer (round trip, format details, compatibility with the
`safetensors` package), atomic writes, and model checkpoints (save → load → identical
logits; clear errors for a missing file, a config that does not match the tensors, an
unknown architecture)."""
import json
import os
import struct

import numpy as np
import pytest

import transformer_ext as tx
from transformer_ext.io import safetensors as st
from transformer_ext.io.checkpoint import CheckpointError
from transformer_ext.models import GPT, GPTConfig, Model

TINY = dict(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2)


def sample_tensors():
    rng = np.random.default_rng(0)
    return {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f64": rng.standard_normal(7),
        "i64": np.arange(-4, 8, dtype=np.int64).reshape(2, 2, 3),
        "i32": np.array([1, -2], np.int32),
        "u8": np.arange(5, dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "f16": np.array([0.5, -2.0], np.float16),
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.array(3.5, np.float64),
        "strided": np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2],  # non-contiguous input
    }


def test_safetensors_round_trip(tmp_path):
    path = tmp_path / "t.safetensors"
    tensors = sample_tensors()
    st.save_file(tensors, path, metadata={"format": "pt", "note": "héllo"})
    back = st.load_file(path)
    assert set(back) == set(tensors)
    for name, a in tensors.items():
        assert back[name].dtype == a.dtype and back[name].shape == a.shape, name
        np.testing.assert_array_equal(back[name], a)
        assert back[name].flags.writeable
    assert st.read_metadata(path) == {"format": "pt", "note": "héllo"}
    assert list(st.load_file(path, names=["i64"])) == ["i64"]
    with pytest.raises(KeyError, match="has no tensor 'nope'"):
        st.load_file(path, names=["nope"])


def test_safetensors_layout(tmp_path):
    """8-byte little-endian header length, JSON header padded to 8 bytes, contiguous data."""
    path = tmp_path / "t.safetensors"
    st.save_file({"a": np.array([1.0, 2.0], np.float32), "b": np.array([7], np.int64)}, path, {"k": "v"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n])
    assert header["__metadata__"] == {"k": "v"}
    assert header["a"] == {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    assert header["b"] == {"dtype": "I64", "shape": [1], "data_offsets": [8, 16]}
    assert raw[8 + n:] == np.array([1.0, 2.0], "<f4").tobytes() + np.array([7], "<i8").tobytes()


def test_safetensors_big_endian_input_and_bf16(tmp_path):
    path = tmp_path / "t.safetensors"
    st.save_file({"x": np.array([1.5, -2.0], dtype=">f4")}, path)
    np.testing.assert_array_equal(st.load_file(path)["x"], [1.5, -2.0])
    # BF16 (as written by torch): the top 16 bits of a float32; widened on read
    vals = np.array([1.0, -3.5, 0.15625], np.float32)
    bf16 = (vals.view(np.uint32) >> 16).astype("<u2").tobytes()
    head = json.dumps({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + bf16)
    np.testing.assert_array_equal(st.load_file(path)["w"], vals)


def test_safetensors_bad_files(tmp_path):
    p = tmp_path / "bad.safetensors"
    with pytest.raises(FileNotFoundError, match="no such file"):
        st.load_file(p)
    p.write_bytes(b"abc")
    with pytest.raises(st.SafetensorsError, match="too short"):
        st.load_file(p)
    p.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(st.SafetensorsError, match="header length 1000 is invalid"):
        st.load_file(p)
    head = json.dumps({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()
    p.write_bytes(struct.pack("<Q", len(head)) + head + b"\0" * 8)
    with pytest.raises(st.SafetensorsError, match=r"tensor 'w' .* inconsistent"):
        st.load_file(p)
    with pytest.raises(TypeError, match="unsupported dtype complex128"):
        st.save_file({"c": np.zeros(2, complex)}, p)
    with pytest.raises(TypeError, match="metadata must map str to str"):
        st.save_file({}, p, {"k": 1})


def test_compatible_with_safetensors_package(tmp_path):
    sn = pytest.importorskip("safetensors.numpy")
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    tensors = {k: np.ascontiguousarray(v) for k, v in sample_tensors().items() if k != "scalar"}
    st.save_file(tensors, ours, {"format": "pt"})
    for name, a in sn.load_file(str(ours)).items():
        np.testing.assert_array_equal(a, tensors[name])
    sn.save_file(tensors, str(theirs), metadata={"format": "np"})
    back = st.load_file(theirs)
    for name, a in tensors.items():
        np.testing.assert_array_equal(back[name], a)
    assert st.read_metadata(theirs) == {"format": "np"}


def test_atomic_write_keeps_old_file_on_crash(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    old = {"x": np.arange(1000, dtype=np.float32)}
    st.save_file(old, path)
    before = path.read_bytes()
    calls = []

    def crash(f, a):  # write half of the first tensor, then fail (a crash mid-write)
        calls.append(1)
        f.write(memoryview(a).cast("B")[: a.nbytes // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(st, "_write_tensor", crash)
    with pytest.raises(OSError, match="simulated"):
        st.save_file({"x": np.ones(1000, np.float32), "y": np.ones(3)}, path)
    assert calls
    assert path.read_bytes() == before  # the old file, untouched
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]  # no temporary file left behind
    np.testing.assert_array_equal(st.load_file(path)["x"], old["x"])


def test_gpt_save_load_identical_logits(tmp_path):
    m = GPT(GPTConfig(**TINY, n_inner=24, activation_function="gelu", seed=3))
    rng = np.random.default_rng(1)
    for v in m.parameters().values():  # (not the padding between tensors: it is not saved)
        v += rng.normal(0, 0.1, v.shape).astype(np.float32)
    m.save(tmp_path / "ckpt")
    files = sorted(os.listdir(tmp_path / "ckpt"))
    assert files == ["config.json", "model.safetensors"]
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["architecture"] == "GPT" and cfg["n_inner"] == 24 and cfg["activation_function"] == "gelu"
    for loader in (GPT.load, Model.load):
        m2 = loader(tmp_path / "ckpt")
        assert isinstance(m2, GPT) and m2.config == m.config and m2.dtype == np.float32
        np.testing.assert_array_equal(m2.store.flat, m.store.flat)
        ids = np.random.default_rng(0).integers(0, 50, (2, 9))
        m.eval(), m2.eval()
        np.testing.assert_array_equal(m2(ids), m(ids))
    # names are Hugging Face's; the tied head is stored once
    names = list(st.load_file(tmp_path / "ckpt" / "model.safetensors"))
    assert "transformer.h.1.attn.c_attn.weight" in names and "lm_head.weight" not in names
    m64 = GPT.load(tmp_path / "ckpt", dtype=np.float64)
    assert m64.dtype == np.float64
    for name, v in m.parameters().items():
        np.testing.assert_array_equal(m64.parameters()[name], v.astype(np.float64))


def test_float64_model_round_trip(tmp_path):
    m = GPT(GPTConfig(**TINY), dtype=np.float64)
    m.save(tmp_path)
    m2 = GPT.load(tmp_path)
    assert m2.dtype == np.float64
    np.testing.assert_array_equal(m2.store.flat, m.store.flat)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        GPT.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        GPT.load(tmp_path / "empty")
    m = GPT(GPTConfig(**TINY))
    m.save(tmp_path / "c")
    cfg_path = tmp_path / "c" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    # the config no longer matches the tensors: name the tensor and both shapes
    cfg_path.write_text(json.dumps({**cfg, "n_embd": 32}))
    with pytest.raises(CheckpointError, match=r"tensor 'transformer.wte.weight' has shape \(50, 16\) in .*"
                                              r"model.safetensors, but the model built from .*config.json "
                                              r"expects \(50, 32\)"):
        GPT.load(tmp_path / "c")
    cfg_path.write_text(json.dumps({**cfg, "n_layer": 3}))
    with pytest.raises(CheckpointError, match=r"missing tensors \['transformer.h.2.ln_1.weight'"):
        GPT.load(tmp_path / "c")
    cfg_path.write_text(json.dumps({**cfg, "architecture": "Mamba"}))
    with pytest.raises(CheckpointError, match="unknown architecture 'Mamba' \\(known: .*'GPT'"):
        GPT.load(tmp_path / "c")
    cfg_path.write_text(json.dumps({**cfg, "n_head": 5}))
    with pytest.raises(CheckpointError, match="invalid GPTConfig: .*not divisible"):
        GPT.load(tmp_path / "c")
    cfg_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        GPT.load(tmp_path / "c")
    os.remove(tmp_path / "c" / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        GPT.load(tmp_path / "c")


def test_load_wrong_class(tmp_path):
    from transformer_ext.io.checkpoint import ARCHITECTURES, _builtin
    _builtin()
    GPT(GPTConfig(**TINY)).save(tmp_path)
    others = [cls for name, (_, cls) in ARCHITECTURES.items() if name != "GPT"]
    if not others:
        pytest.skip("no other architecture registered")
    with pytest.raises(CheckpointError, match="holds a GPT"):
        others[0].load(tmp_path)


def test_numpy_backend_loads_same(tmp_path):
    m = GPT(GPTConfig(**TINY))
    m.save(tmp_path)
    with tx.use_backend("numpy"):
        m2 = GPT.load(tmp_path)
        np.testing.assert_array_equal(m2.store.flat, m.store.flat)
