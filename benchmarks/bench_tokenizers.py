"""Tokenizer benchmark: encode MB/s (this project vs Hugging Face `tokenizers` and `tiktoken`,
when installed) and byte-level BPE training time at 8k / 32k vocabularies.

    PYTHONPATH=build/dev/site python benchmarks/bench_tokenizers.py [--mb 4] [--corpus FILE]

The corpus defaults to the bundled Shakespeare text (python/transformer_ext/data/shakespeare.txt),
repeated up to --mb megabytes. All encoders use the same vocabulary: a 32k BPE trained here on the
corpus (no network access is needed; GPT-2's own files work too via --vocab-dir).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def best_of(fn, repeat=3):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT / "python/transformer_ext/data/shakespeare.txt"))
    ap.add_argument("--mb", type=float, default=4.0, help="encode benchmark size in MB (corpus repeated)")
    ap.add_argument("--vocab-dir", help="directory with vocab.json + merges.txt (default: train 32k here)")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--train-files", nargs="+", help="training corpus (default: --corpus)")
    args = ap.parse_args(argv)

    from transformer_ext import _backend
    from transformer_ext.tokenizers import ByteLevelBPETokenizer

    base = pathlib.Path(args.corpus).read_text(encoding="utf-8")
    reps = max(1, int(args.mb * 1e6 / len(base.encode())))
    text = base * reps
    mb = len(text.encode()) / 1e6
    lines = text.splitlines(keepends=True)
    docs = ["".join(lines[i:i + 200]) for i in range(0, len(lines), 200)]
    print(f"corpus: {args.corpus} ({len(base.encode()) / 1e6:.2f} MB) x{reps} = {mb:.2f} MB, "
          f"{len(docs)} docs of 200 lines; cpus: {os.cpu_count()}")

    tmp = tempfile.mkdtemp()
    if not args.skip_train:
        import subprocess
        code = {
            "ours": "from transformer_ext.tokenizers import ByteLevelBPETokenizer as B; import pathlib;"
                    "B().train([pathlib.Path(c) for c in C], V, 2, ['<|endoftext|>'])",
            "HF": "import tokenizers as hf; t = hf.ByteLevelBPETokenizer(add_prefix_space=False);"
                  "t.train(C, vocab_size=V, min_frequency=2, special_tokens=['<|endoftext|>'], show_progress=False)",
        }

        def peak_rss(which, vs):
            """Peak RSS (MB) of a fresh process doing only this training (imports included)."""
            # VmHWM (not ru_maxrss, which survives fork+exec from this big parent process)
            prog = (f"import time; C = {train_files!r}; V = {vs}; t0 = time.perf_counter(); "
                    f"{code[which]}; t = time.perf_counter() - t0; "
                    f"hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
                    f"print(t, int(hwm) / 1024)")
            try:
                r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, check=True)
                return tuple(float(x) for x in r.stdout.split()[-2:])
            except (subprocess.CalledProcessError, ValueError):
                return None
        try:
            import tokenizers as hf
        except ImportError:
            hf = None
        train_files = args.train_files or [args.corpus]
        tsize = sum(os.path.getsize(f) for f in train_files) / 1e6
        print(f"\nBPE training on {len(train_files)} file(s), {tsize:.1f} MB (vocab counts 256 bytes + <|endoftext|>):")
        for vs in (8000, 32000):
            t_ours, trained = best_of(lambda: ByteLevelBPETokenizer().train(
                [pathlib.Path(f) for f in train_files], vs, 2, ["<|endoftext|>"]), 1)
            line = f"  vocab {vs:>5} (reached {trained.vocab_size}): ours {t_ours:6.2f} s"
            if hf is not None:
                def hf_train():
                    t = hf.ByteLevelBPETokenizer(add_prefix_space=False)
                    t.train(train_files, vocab_size=vs, min_frequency=2, special_tokens=["<|endoftext|>"],
                            show_progress=False)
                    return t
                t_hf, _ = best_of(hf_train, 1)
                line += f" | HF tokenizers {t_hf:6.2f} s (ratio {t_ours / t_hf:.2f}x)"
            print(line)
            for which in ("ours", "HF") if hf is not None else ("ours",):
                r = peak_rss(which, vs)
                if r:
                    print(f"      {which:>4} in a fresh process: {r[0]:6.2f} s incl. imports, peak RSS {r[1]:7.1f} MB")

    vocab_dir = args.vocab_dir
    if vocab_dir is None:
        vocab_dir = tmp
        ByteLevelBPETokenizer().train([pathlib.Path(args.corpus)], 32000, 2, ["<|endoftext|>"]).save(vocab_dir)
    vj, mt = os.path.join(vocab_dir, "vocab.json"), os.path.join(vocab_dir, "merges.txt")

    print(f"\nencode throughput, {mb:.2f} MB (MB/s, best of 3):")
    tok = ByteLevelBPETokenizer.from_files(vj, mt)
    core = _backend.core
    cold = ByteLevelBPETokenizer.from_files(vj, mt)
    t0 = time.perf_counter(); n_ids = len(cold.encode(text)); t_cold = time.perf_counter() - t0
    print(f"  ours  encode(one string), cold cache       {mb / t_cold:7.2f}   ({n_ids} ids)")
    t, _ = best_of(lambda: tok.encode(text))
    print(f"  ours  encode(one string), warm cache       {mb / t:7.2f}")
    raw = text.encode()
    t, _ = best_of(lambda: tok._core.encode(raw, False))
    print(f"  ours  core encode, no cache                {mb / t:7.2f}")
    enc_docs = [d.encode() for d in docs]
    for th in (1, 2):
        t, _ = best_of(lambda: tok._core.encode_batch(enc_docs, th))
        print(f"  ours  encode_batch({len(docs)} docs), {th} thread(s)   {mb / t:7.2f}")
    t, _ = best_of(lambda: tok.encode_batch(docs))
    print(f"  ours  encode_batch via Python API (lists)   {mb / t:7.2f}")
    try:
        import tokenizers as hf
        h = hf.ByteLevelBPETokenizer(vj, mt, add_prefix_space=False)
        assert h.encode(text[:200000]).ids == tok.encode(text[:200000]), "HF and ours disagree"
        t, _ = best_of(lambda: h.encode(text), 1)
        print(f"  HF    encode(one string)                   {mb / t:7.2f}")
        t, _ = best_of(lambda: h.encode_batch(docs), 2)
        print(f"  HF    encode_batch({len(docs)} docs), all threads {mb / t:7.2f}")
    except ImportError:
        print("  HF tokenizers not installed")
    try:
        import tiktoken
        from transformer_ext.tokenizers.bpe import _token_bytes
        # Same vocabulary as ours: rank = id minus the special tokens (merged tokens' ids follow merge order).
        n_sp = len(tok.special_tokens)
        ranks = {_token_bytes(t): i - n_sp for t, i in tok.vocab.items() if t not in tok.special_tokens}
        pat = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
        enc = tiktoken.Encoding("local_bpe", pat_str=pat, mergeable_ranks=ranks,
                                special_tokens={"<|endoftext|>": len(ranks)})
        assert len(enc.encode_ordinary(text[:200000])) == len(tok.encode(text[:200000])), "tiktoken disagrees"
        t, _ = best_of(lambda: enc.encode_ordinary(text))
        print(f"  tiktoken encode_ordinary(one string)       {mb / t:7.2f}")
        for th in (1, 2):
            t, _ = best_of(lambda: enc.encode_ordinary_batch(docs, num_threads=th))
            print(f"  tiktoken encode_ordinary_batch, {th} thread(s) {mb / t:7.2f}")
    except ImportError:
        print("  tiktoken not installed")

    print(f"\nWordPiece (BERT, tests/fixtures/wordpiece_vocab.txt, lower-case), {mb:.2f} MB (MB/s):")
    from transformer_ext.tokenizers import WordPieceTokenizer
    wvocab = str(ROOT / "tests/fixtures/wordpiece_vocab.txt")
    wp = WordPieceTokenizer.from_file(wvocab)
    t0 = time.perf_counter(); wp.tokenize_ids(text); t = time.perf_counter() - t0
    print(f"  ours  encode(one string), cold cache       {mb / t:7.2f}")
    t, _ = best_of(lambda: wp.tokenize_ids(text))
    print(f"  ours  encode(one string), warm cache       {mb / t:7.2f}")
    for th in (1, 2):
        t, _ = best_of(lambda: wp._core.encode_batch(enc_docs, th))
        print(f"  ours  encode_batch({len(docs)} docs), {th} thread(s)   {mb / t:7.2f}")
    t, _ = best_of(lambda: [wp.tokenize_ids_reference(d) for d in docs[:max(1, len(docs) // 20)]], 1)
    print(f"  ours  Python reference (1/20 of the docs)  {mb / 20 / t:7.2f}")
    try:
        import tokenizers as hf
        hw = hf.BertWordPieceTokenizer(wvocab, lowercase=True)
        t, _ = best_of(lambda: hw.encode(text), 1)
        print(f"  HF    encode(one string)                   {mb / t:7.2f}")
        t, _ = best_of(lambda: hw.encode_batch(docs), 2)
        print(f"  HF    encode_batch({len(docs)} docs), all threads {mb / t:7.2f}")
    except ImportError:
        pass

    print("\nUnigram (8k pieces) trained on the base corpus; compression on it, whitespace collapsed:")
    from transformer_ext.tokenizers import UnigramTokenizer
    base_lines = base.splitlines()
    flat = " ".join(base.split())
    t0 = time.perf_counter(); uni = UnigramTokenizer().train(base_lines, 8000); t_tr = time.perf_counter() - t0
    t0 = time.perf_counter(); n_uni = len(uni.encode(flat)); t_enc = time.perf_counter() - t0
    print(f"  ours  train {t_tr:6.2f} s, encode {len(flat.encode()) / 1e6 / t_enc:6.2f} MB/s, "
          f"{n_uni / len(flat):.4f} tokens/char")
    try:
        import sentencepiece as spm
        d = tempfile.mkdtemp()
        with open(os.path.join(d, "c.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(base_lines))
        t0 = time.perf_counter()
        spm.SentencePieceTrainer.train(input=os.path.join(d, "c.txt"), model_prefix=os.path.join(d, "m"),
                                       vocab_size=8000, model_type="unigram", character_coverage=1.0,
                                       normalization_rule_name="identity", bos_id=-1, eos_id=-1, minloglevel=2)
        t_sp = time.perf_counter() - t0
        sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "m.model"))
        t0 = time.perf_counter(); n_sp = len(sp.encode(flat)); t_enc = time.perf_counter() - t0
        print(f"  spm   train {t_sp:6.2f} s, encode {len(flat.encode()) / 1e6 / t_enc:6.2f} MB/s, "
              f"{n_sp / len(flat):.4f} tokens/char (ours/spm = {n_uni / n_sp:.3f})")
    except ImportError:
        print("  sentencepiece not installed")

    print("\npathological inputs (ours, seconds):")
    for name, s in (("100000 x 'a'", "a" * 100000), ("1e6 x 'a'", "a" * 1000000),
                    ("one 1e6-char word", "".join(base.split())[:1000000])):
        t, _ = best_of(lambda: tok._core.encode(s.encode(), False), 1)
        print(f"  {name:<22} {t:8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
