"""Tokenizer benchmark: encode MB/s (this project vs Hugging Face `tokenizers` and `tiktoken`,
when installed) for byte-level BPE, WordPiece and Unigram — one long string, a padded batch of
lines, a batch of documents — at 1 and 2 threads; BPE training time at 8k / 32k vocabularies;
unigram training vs sentencepiece; pathological inputs at n and 4n characters.

    PYTHONPATH=build/dev/site python benchmarks/bench_tokenizers.py [--mb 4] [--corpus FILE] [--skip-train]

Ours follows tx.set_num_threads; HF's batch runs on its rayon pool ("1 thread":
TOKENIZERS_PARALLELISM=false); tiktoken takes num_threads. One string is always one thread.
The machine is shared and noisy: compare ratios within one run.

The corpus defaults to the bundled Shakespeare text (python/transformer_ext/data/shakespeare.txt),
repeated up to --mb megabytes. All encoders use the same vocabulary: a 32k BPE trained here on the
corpus (no network access is needed; GPT-2's own files work too via --vocab-dir).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import statistics
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def best_of(fn, repeat=3):  # training times
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
    ap.add_argument("--repeat", type=int, default=5, help="timed repeats per cell (median)")
    ap.add_argument("--patho-n", type=int, default=100000, help="pathological input size n (also 4n)")
    args = ap.parse_args(argv)

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
    R = args.repeat
    tok = ByteLevelBPETokenizer.from_files(vj, mt)
    cold = ByteLevelBPETokenizer.from_files(vj, mt)
    t0 = time.perf_counter(); n_ids = len(cold.encode(text)); t_cold = time.perf_counter() - t0
    print(f"\nbyte-level BPE (32k), {mb:.2f} MB: ours encode(one string) with a cold word cache "
          f"{mb / t_cold:.2f} MB/s ({n_ids} ids); below: warm caches, MB/s, median of {R}")
    hf = _import("tokenizers")
    tt = _import("tiktoken")
    table = Table(mb, f"{len(lines)} lines", f"{len(docs)} docs")
    table.add("ours", lambda th: tok.encode(text), lambda th: _padded(tok, lines),
              lambda th: tok.encode_batch(docs), lambda th: tok.encode_batch(lines))
    if hf is not None:
        h = hf.ByteLevelBPETokenizer(vj, mt, add_prefix_space=False)
        assert h.encode(text[:200000]).ids == tok.encode(text[:200000]), "HF and ours disagree"
        table.add("HF tokenizers", lambda th: h.encode(text), lambda th: _hf_batch(h, lines, th),
                  lambda th: _hf_batch(h, docs, th), None, repeat_single=1)
    if tt is not None:
        from transformer_ext.tokenizers.bpe import _token_bytes
        # Same vocabulary as ours: rank = id minus the special tokens (merged tokens' ids follow merge order).
        n_sp = len(tok.special_tokens)
        ranks = {_token_bytes(t): i - n_sp for t, i in tok.vocab.items() if t not in tok.special_tokens}
        pat = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
        enc = tt.Encoding("local_bpe", pat_str=pat, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": len(ranks)})
        assert len(enc.encode_ordinary(text[:200000])) == len(tok.encode(text[:200000])), "tiktoken disagrees"
        table.add("tiktoken", lambda th: enc.encode_ordinary(text),
                  lambda th: enc.encode_ordinary_batch(lines, num_threads=th),
                  lambda th: enc.encode_ordinary_batch(docs, num_threads=th), None)
    table.run(R)

    from transformer_ext.tokenizers import WordPieceTokenizer
    wvocab = str(ROOT / "tests/fixtures/wordpiece_vocab.txt")
    wp = WordPieceTokenizer.from_file(wvocab)
    t0 = time.perf_counter(); wp.tokenize_ids(text); t = time.perf_counter() - t0
    print(f"\nWordPiece (BERT, tests/fixtures/wordpiece_vocab.txt, lower-case), {mb:.2f} MB: ours cold cache "
          f"{mb / t:.2f} MB/s; Python reference {_ref_speed(wp, docs):.3f} MB/s")
    table = Table(mb, f"{len(lines)} lines", f"{len(docs)} docs")
    table.add("ours", lambda th: wp.encode(text), lambda th: _padded(wp, lines),
              lambda th: wp.encode_batch(docs), lambda th: wp.encode_batch(lines))
    if hf is not None:
        hw = hf.BertWordPieceTokenizer(wvocab, lowercase=True)
        assert hw.encode(text[:100000]).ids == wp.encode(text[:100000]), "HF and ours disagree"
        table.add("HF tokenizers", lambda th: hw.encode(text), lambda th: _hf_batch(hw, lines, th),
                  lambda th: _hf_batch(hw, docs, th), None, repeat_single=1)
    table.run(R)

    from transformer_ext.tokenizers import UnigramTokenizer, from_pretrained
    base_lines = base.splitlines()
    if hf is not None:
        # Same model on both sides: a unigram trained by HF, loaded here from its tokenizer.json.
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        hu = Tokenizer(models.Unigram())
        hu.pre_tokenizer = pre_tokenizers.Metaspace()
        hu.decoder = decoders.Metaspace()
        t0 = time.perf_counter()
        hu.train_from_iterator(base_lines, trainers.UnigramTrainer(vocab_size=8000, special_tokens=["<unk>"],
                                                                   unk_token="<unk>", show_progress=False))
        t_hf_uni = time.perf_counter() - t0
        ud = tempfile.mkdtemp()
        hu.save(os.path.join(ud, "tokenizer.json"))
        uni = from_pretrained(ud)
        assert uni.encode(text[:100000]) == hu.encode(text[:100000]).ids, "HF and ours disagree (unigram)"
        print(f"\nUnigram (8k, trained by HF in {t_hf_uni:.2f} s, tokenizer.json loaded here), {mb:.2f} MB:")
        table = Table(mb, f"{len(lines)} lines", f"{len(docs)} docs")
        table.add("ours", lambda th: uni.encode(text), lambda th: _padded(uni, lines),
                  lambda th: uni.encode_batch(docs), lambda th: uni.encode_batch(lines))
        table.add("HF tokenizers", lambda th: hu.encode(text), lambda th: _hf_batch(hu, lines, th),
                  lambda th: _hf_batch(hu, docs, th), None, repeat_single=1)
        table.run(R)

    print("\nUnigram training (8k pieces) on the base corpus; compression on it, whitespace collapsed:")
    flat = " ".join(base.split())
    t0 = time.perf_counter(); ours_uni = UnigramTokenizer().train(base_lines, 8000); t_tr = time.perf_counter() - t0
    t0 = time.perf_counter(); n_uni = len(ours_uni.encode(flat)); t_enc = time.perf_counter() - t0
    print(f"  ours  train {t_tr:6.2f} s, encode {len(flat.encode()) / 1e6 / t_enc:6.2f} MB/s, "
          f"{n_uni / len(flat):.4f} tokens/char")
    spm = _import("sentencepiece")
    if spm is not None:
        d = tempfile.mkdtemp()
        with open(os.path.join(d, "c.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(base_lines))
        t0 = time.perf_counter()
        spm.SentencePieceTrainer.train(input=os.path.join(d, "c.txt"), model_prefix=os.path.join(d, "m"),
                                       vocab_size=8000, model_type="unigram", character_coverage=1.0,
                                       normalization_rule_name="identity", bos_id=-1, eos_id=-1, minloglevel=2,
                                       num_threads=1)
        t_sp = time.perf_counter() - t0
        sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "m.model"))
        t0 = time.perf_counter(); n_sp = len(sp.encode(flat)); t_enc = time.perf_counter() - t0
        print(f"  spm   train {t_sp:6.2f} s (num_threads=1), encode {len(flat.encode()) / 1e6 / t_enc:6.2f} MB/s, "
              f"{n_sp / len(flat):.4f} tokens/char (ours/spm = {n_uni / n_sp:.3f})")
    else:
        print("  sentencepiece not installed")

    # Pathological inputs: seconds at n and 4n characters; t(4n)/t(n) ~ 4 is linear, ~ 16 quadratic.
    # Word caches cleared / bypassed so that the merge loop / Viterbi / greedy match is what is timed.
    word = "".join(base.split())
    cases = (("identical chars 'a'", lambda n: "a" * n), ("identical spaces", lambda n: " " * n),
             ("one huge word", lambda n: (word * (1 + n // len(word)))[:n]),
             ("'ab' repeated", lambda n: "ab" * (n // 2)))
    # each entry: a factory giving a fresh encoder (empty word cache), built outside the timing
    encoders = [("BPE", lambda: (lambda s: tok._core.encode(s.encode(), False))),
                ("WordPiece", lambda: WordPieceTokenizer.from_file(wvocab).encode),
                ("WordPiece, no word cap", lambda: WordPieceTokenizer.from_file(
                    wvocab, max_input_chars_per_word=10**9).encode)]
    if hf is not None:
        encoders.append(("Unigram", lambda: from_pretrained(ud).encode))
    n = args.patho_n
    print(f"\npathological inputs (ours; seconds for n = {n} and 4n characters, median of 3; ratio ~4 = linear):")
    for name, make in cases:
        for ename, factory in encoders:
            small, big = make(n), make(4 * n)
            ts = []
            for s_ in (small, big):
                runs = []
                for _ in range(3):
                    fn = factory()
                    runs.append(_time(lambda: fn(s_)))
                ts.append(statistics.median(runs))
            print(f"  {name:<22} {ename:<24} {ts[0]:8.4f} {ts[1]:8.4f}  ratio {ts[1] / ts[0]:5.1f}")
    return 0


def _import(name):
    try:
        return __import__(name)
    except ImportError:
        print(f"  ({name} not installed)")
        return None


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _padded(tok, texts):
    return tok.encode_batch(texts, padding="longest")


def _hf_batch(h, texts, threads):
    # HF's encode_batch runs on rayon's pool unless TOKENIZERS_PARALLELISM is false (read per call);
    # "2 threads" = the pool on this 2-core machine.
    os.environ["TOKENIZERS_PARALLELISM"] = "false" if threads == 1 else "true"
    return h.encode_batch(texts)


def _ref_speed(wp, docs):
    part = docs[:max(1, len(docs) // 40)]
    t = _time(lambda: [wp.tokenize_ids_reference(d) for d in part])
    return sum(len(d.encode()) for d in part) / 1e6 / t


class Table:
    """MB/s of each encoder: one string, a padded batch of lines, a batch of documents, and the
    unpadded batch of lines, at 1 and 2 threads (tx.set_num_threads for ours)."""

    def __init__(self, mb, lines_name, docs_name):
        self.mb, self.rows = mb, []
        self.cols = ["one string", f"batch {lines_name} (padded)", f"batch {docs_name}", f"batch {lines_name} (lists)"]

    def add(self, name, single, batch_lines, batch_docs, batch_lines_lists, repeat_single=None):
        self.rows.append((name, [single, batch_lines, batch_docs, batch_lines_lists], repeat_single))

    def run(self, repeat):
        import resource
        import transformer_ext as tx

        def timed(fn):  # (wall seconds, process CPU seconds)
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            fn()
            t, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
            return t, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)

        before = tx.get_num_threads()
        w = 44
        print(f"  {'MB/s':<14}" + "".join(f" | {c:>{w}}" for c in self.cols))
        print(f"  {'encoder':<14}" + "".join(f" | {'1 thr /  2 thr (2/1) [2-thr cpu/wall]':>{w}}" for c in self.cols))
        for name, fns, rep_single in self.rows:
            cells = []
            for k, fn in enumerate(fns):
                if fn is None:
                    cells.append(f" | {'-':>{w}}")
                    continue
                vals, util = [], 0.0
                for th in (1, 2):
                    tx.set_num_threads(th)
                    r = rep_single if (k == 0 and rep_single) else repeat
                    fn(th)  # warm-up (word caches)
                    runs = [timed(lambda: fn(th)) for _ in range(r)]
                    t_med = statistics.median(t for t, _ in runs)
                    vals.append(self.mb / t_med)
                    util = sum(c for _, c in runs) / sum(t for t, _ in runs)
                cells.append(f" | {vals[0]:18.2f} / {vals[1]:6.2f} ({vals[1] / vals[0]:4.2f}x) [{util:4.2f}]")
            print(f"  {name:<14}" + "".join(cells))
        print("  [cpu/wall] ~2 means both cores were ours during the 2-thread runs; ~1 or below: the machine was busy")
        tx.set_num_threads(before)
        os.environ.pop("TOKENIZERS_PARALLELISM", None)


if __name__ == "__main__":
    sys.exit(main())
