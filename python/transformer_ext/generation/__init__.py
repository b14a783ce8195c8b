"""Text generation: greedy and sampled decoding loops over the models' forward (no KV cache
yet: each step re-runs the model on the whole prefix; the step functions in `loop` are where
a cache slots in).

    generate(gpt, ids, max_new_tokens, do_sample=False, temperature=1.0, top_k=None, top_p=None,
             eos_token_id=None, seed=None)            → prompt + new tokens (int64)
    translate(seq2seq, src_ids, max_len=None, ...)    → decoder ids from BOS (int64)
    greedy_translate(seq2seq, src_ids, max_len)       → the same, greedy
"""
from .loop import generate, greedy_translate, translate
from .sampling import filter_logits, sample_next

__all__ = ["generate", "translate", "greedy_translate", "filter_logits", "sample_next"]
