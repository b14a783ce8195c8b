// Batch encoding shared by the tokenizers: texts are cut into contiguous chunks whose
// boundaries depend only on the text sizes (never on the thread count), threads take chunks
// from an atomic counter, and the chunk outputs are concatenated in order into ONE flat id
// buffer + offsets. The result is therefore identical for any thread count, provided the
// per-text encoder is a pure function of the text (the word caches only memoise it).
// Not ISA-specific: compiled once (std:: templates are fine here).
#pragma once
#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <shared_mutex>
#include <string_view>
#include <thread>
#include <vector>

namespace tx { namespace tok {

struct TextRef {
  const char* data;
  size_t size;
};

// ids of text i are ids[offsets[i] : offsets[i + 1]]; offsets has n + 1 entries.
struct FlatIds {
  std::vector<int32_t> ids;
  std::vector<int64_t> offsets;
};

namespace batch_detail {
constexpr size_t kChunkBytes = 16384;  // ~ a few hundred short lines: cheap to steal, amortises the counter
constexpr size_t kChunkTexts = 1024;
constexpr size_t kMinParallelBytes = 8192;  // below this a thread costs more than it saves

inline std::vector<size_t> chunk_bounds(const TextRef* texts, size_t n) {
  std::vector<size_t> b{0};
  size_t bytes = 0;
  for (size_t i = 0; i < n; ++i) {
    bytes += texts[i].size + 16;  // + per-text overhead, so that empty texts still get cut
    if (bytes >= kChunkBytes || i + 1 - b.back() >= kChunkTexts) {
      b.push_back(i + 1);
      bytes = 0;
    }
  }
  if (b.back() != n) b.push_back(n);
  return b;
}
}  // namespace batch_detail

// Threads actually used for a batch (1 when the batch is small).
inline int batch_threads(const TextRef* texts, size_t n, int requested) {
  size_t total = 0;
  for (size_t i = 0; i < n; ++i) total += texts[i].size;
  if (requested < 1 || total < batch_detail::kMinParallelBytes) return 1;
  size_t chunks = batch_detail::chunk_bounds(texts, n).size() - 1;
  if (size_t(requested) > chunks) requested = int(chunks < 1 ? 1 : chunks);
  return requested;
}

// encode(worker, data, size, out) appends the ids of one text to out; worker in [0, n_threads)
// lets the caller keep per-thread state (word caches). n_threads from batch_threads().
template <class Encode>
void run_batch(const TextRef* texts, size_t n, int n_threads, Encode&& encode, FlatIds& out) {
  std::vector<size_t> bounds = batch_detail::chunk_bounds(texts, n);
  size_t n_chunks = bounds.size() - 1;
  std::vector<std::vector<int>> chunk_ids(n_chunks);
  out.offsets.assign(n + 1, 0);
  std::atomic<size_t> next{0};
  std::vector<std::exception_ptr> errors(size_t(n_threads > 1 ? n_threads : 1));
  auto work = [&](int w) {
    try {
      for (;;) {
        size_t c = next.fetch_add(1, std::memory_order_relaxed);
        if (c >= n_chunks) break;
        std::vector<int>& v = chunk_ids[c];
        for (size_t i = bounds[c]; i < bounds[c + 1]; ++i) {
          size_t before = v.size();
          encode(w, texts[i].data, texts[i].size, v);
          out.offsets[i + 1] = int64_t(v.size() - before);  // length for now; prefix-summed below
        }
      }
    } catch (...) {
      errors[size_t(w)] = std::current_exception();
      next.store(n_chunks);  // make the others stop early
    }
  };
  if (n_threads <= 1) {
    work(0);
  } else {
    std::vector<std::thread> pool;
    for (int t = 1; t < n_threads; ++t) pool.emplace_back(work, t);
    work(0);
    for (auto& th : pool) th.join();
  }
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  for (size_t i = 0; i < n; ++i) out.offsets[i + 1] += out.offsets[i];
  out.ids.resize(size_t(out.offsets[n]));
  size_t pos = 0;
  for (auto& v : chunk_ids) {
    if (!v.empty()) std::memcpy(out.ids.data() + pos, v.data(), v.size() * sizeof(int32_t));
    pos += v.size();
    std::vector<int>().swap(v);
  }
}

// A batch through word caches, the scheme every tokenizer here uses: one thread works on the
// shared cache directly (unique lock); several read it under a shared lock and memoise new
// words in caches of their own, merged back afterwards while the shared one stays under
// kMaxCacheWords. encode(text, out, cache, shared) encodes one text (shared: nullptr or a
// read-only cache to consult first).
constexpr size_t kMaxCacheWords = size_t(1) << 20;

template <class Cache, class Encode>
void encode_batch_cached(std::shared_mutex& mu, Cache& cache, const TextRef* texts, size_t n, int n_threads,
                         FlatIds& out, Encode&& encode) {
  n_threads = batch_threads(texts, n, n_threads);
  if (n_threads <= 1) {
    std::unique_lock<std::shared_mutex> g(mu);
    run_batch(texts, n, 1, [&](int, const char* p, size_t len, std::vector<int>& o) {
      encode(std::string_view(p, len), o, cache, static_cast<const Cache*>(nullptr));
    }, out);
    return;
  }
  std::vector<Cache> local(static_cast<size_t>(n_threads));
  {
    std::shared_lock<std::shared_mutex> g(mu);
    run_batch(texts, n, n_threads, [&](int w, const char* p, size_t len, std::vector<int>& o) {
      encode(std::string_view(p, len), o, local[size_t(w)], static_cast<const Cache*>(&cache));
    }, out);
  }
  std::unique_lock<std::shared_mutex> g(mu);
  for (auto& c : local) {
    if (cache.size() + c.size() > kMaxCacheWords) break;
    for (auto& kv : c) cache.emplace(kv.first, std::move(kv.second));
  }
}

}}  // namespace tx::tok
