"""Text generation: greedy and sampled decoding loops over the models' forward (loop.py: no
cache, each step re-runs the model on the whole prefix — the reference), and the KV-cache
path with Hugging Face's arguments that the models' `generate` methods use.

    generate(gpt, ids, max_new_tokens, do_sample=False, temperature=1.0, top_k=None, top_p=None,
             eos_token_id=None, seed=None)            → prompt + new tokens (int64)
    translate(seq2seq, src_ids, max_len=None, ...)    → decoder ids from BOS (int64)
    greedy_translate(seq2seq, src_ids, max_len)       → the same, greedy

With the KV cache (kv_cache.py) and Hugging Face's arguments (decoding.py) — what
`GPT.generate` / `Seq2Seq.generate` call:
    generate_cached(model, ids, max_new_tokens, attention_mask=None, do_sample=False, ...,
                    num_beams=1, ..., stop_strings=None, tokenizer=None, seed=None)
    generate_stream(model, ids, max_new_tokens, ...)  → iterator of new token ids
"""
from .decoding import generate as generate_cached, generate_stream
from .kv_cache import GPTCache, Seq2SeqCache
from .loop import generate, greedy_translate, translate
from .sampling import filter_logits, sample_next

__all__ = ["generate", "translate", "greedy_translate", "filter_logits", "sample_next",
           "generate_cached", "generate_stream", "GPTCache", "Seq2SeqCache"]
