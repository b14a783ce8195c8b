// Byte-level BPE: GPT-2 pre-tokeniser (hand-written scanner, no std::regex), merge loop with
// a per-word cache, batch encoding on threads, and a trainer with incremental pair counts.
#include "bpe.h"

#include <algorithm>
#include <cstring>
#include <queue>
#include <stdexcept>
#include <thread>

#include "unicode_tables.h"
#include "utf8.h"

namespace tx { namespace tok {

namespace {

CharClass classify_slow(uint32_t cp) {
  if (in_ranges(cp, kWhiteSpace, kWhiteSpaceCount)) return kClsSpace;
  if (in_ranges(cp, kLetter, kLetterCount)) return kClsLetter;
  if (in_ranges(cp, kNumber, kNumberCount)) return kClsNumber;
  return kClsOther;
}

// Class of every BMP code point (64 KiB), built once; the rest by binary search.
struct BmpTable {
  uint8_t cls[0x10000];
  BmpTable() {
    for (uint32_t c = 0; c < 0x10000; ++c) cls[c] = classify_slow(c);
  }
};
const BmpTable& bmp() {
  static const BmpTable t;
  return t;
}

// A malformed UTF-8 byte decodes to an out-of-range code point: class "other", kept as a byte.
inline uint32_t decode_utf8(const unsigned char* s, size_t n, size_t i, int& len) {
  return tok::decode_utf8(s, n, i, len, 0xFFFFFFFFu);
}

inline CharClass cls_of(uint32_t cp) {
  if (cp < 0x10000) return CharClass(bmp().cls[cp]);
  if (cp > 0x10FFFF) return kClsOther;
  return classify_slow(cp);
}

}  // namespace

CharClass char_class(uint32_t cp) { return cls_of(cp); }
const char* unicode_version() { return kUnicodeVersion; }

void gpt2_pretokenize(const char* str, size_t n, std::vector<std::pair<uint32_t, uint32_t>>& out) {
  const unsigned char* s = reinterpret_cast<const unsigned char*>(str);
  const uint8_t* tab = bmp().cls;
  auto cls_at = [&](size_t i, int& len) -> CharClass {
    unsigned c = s[i];
    if (c < 0x80) { len = 1; return CharClass(tab[c]); }
    return cls_of(decode_utf8(s, n, i, len));
  };
  // End of the run of characters of class c starting at j.
  auto run_end = [&](size_t j, CharClass c) -> size_t {
    while (j < n) {
      int l;
      if (cls_at(j, l) != c) break;
      j += l;
    }
    return j;
  };
  size_t i = 0;
  while (i < n) {
    unsigned c0 = s[i];
    if (c0 == '\'' && i + 1 < n) {  // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive, as GPT-2)
      unsigned c1 = s[i + 1];
      size_t m = 0;
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') m = 2;
      else if (i + 2 < n) {
        unsigned c2 = s[i + 2];
        if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) m = 3;
      }
      if (m) { out.emplace_back(uint32_t(i), uint32_t(m)); i += m; continue; }
    }
    int len;
    CharClass c = cls_at(i, len);
    if (c0 == ' ' && i + 1 < n) {  // ' ?X+' with X = letter / number / other
      int len2;
      CharClass c2 = cls_at(i + 1, len2);
      if (c2 != kClsSpace) {
        size_t j = run_end(i + 1 + len2, c2);
        out.emplace_back(uint32_t(i), uint32_t(j - i));
        i = j;
        continue;
      }
    }
    if (c != kClsSpace) {
      size_t j = run_end(i + len, c);
      out.emplace_back(uint32_t(i), uint32_t(j - i));
      i = j;
      continue;
    }
    // Whitespace run [i, j): '\s+(?!\S)' backtracks to leave the last space for the next
    // word when the run is followed by a non-space and has more than one character.
    size_t j = i + len, last = i;
    while (j < n) {
      int l;
      if (cls_at(j, l) != kClsSpace) break;
      last = j;
      j += l;
    }
    if (j < n && last > i) j = last;
    out.emplace_back(uint32_t(i), uint32_t(j - i));
    i = j;
  }
}

// ------------------------------------------------------------------------------ encoder

ByteLevelBPE::ByteLevelBPE(std::vector<std::string> token_bytes,
                           const std::vector<std::tuple<int, int, int>>& merges,
                           std::vector<std::pair<std::string, int>> specials)
    : token_bytes_(std::move(token_bytes)), specials_(std::move(specials)) {
  for (int b = 0; b < 256; ++b) byte_id_[b] = -1;
  for (size_t id = 0; id < token_bytes_.size(); ++id) {
    const std::string& t = token_bytes_[id];
    if (t.size() == 1 && byte_id_[(unsigned char)t[0]] < 0) byte_id_[(unsigned char)t[0]] = int(id);
  }
  for (int b = 0; b < 256; ++b)
    if (byte_id_[b] < 0) throw std::invalid_argument("vocabulary lacks the token for byte " + std::to_string(b));
  merges_.reserve(merges.size() * 2);
  int rank = 0;
  for (const auto& m : merges) {
    uint64_t key = (uint64_t(uint32_t(std::get<0>(m))) << 32) | uint32_t(std::get<1>(m));
    merges_.emplace(key, std::make_pair(rank++, std::get<2>(m)));  // first (lowest rank) wins
  }
  // Longest special first so that a special containing another one wins at the same position.
  std::stable_sort(specials_.begin(), specials_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
}

void ByteLevelBPE::clear_cache() {
  std::unique_lock<std::shared_mutex> g(cache_mu_);
  cache_.clear();
}

// BPE on one piece: repeatedly merge the adjacent pair of lowest rank (leftmost on ties),
// as GPT-2's bpe(). Short pieces: rescan an array (n is tiny); long pieces: doubly linked
// list + min-heap keyed by (rank, position) with lazy invalidation, O(n log n).
void ByteLevelBPE::bpe_piece(const char* s, size_t n, std::vector<int>& out) const {
  const unsigned char* u = reinterpret_cast<const unsigned char*>(s);
  if (n == 1) { out.push_back(byte_id_[u[0]]); return; }
  if (n <= 48) {
    int ids[48];
    int m = int(n);
    for (int i = 0; i < m; ++i) ids[i] = byte_id_[u[i]];
    while (m > 1) {
      int best = -1, best_rank = 0x7FFFFFFF, best_new = 0;
      for (int i = 0; i + 1 < m; ++i) {
        int r, nw;
        if (lookup_merge(ids[i], ids[i + 1], r, nw) && r < best_rank) { best_rank = r; best = i; best_new = nw; }
      }
      if (best < 0) break;
      ids[best] = best_new;
      for (int i = best + 1; i + 1 < m; ++i) ids[i] = ids[i + 1];
      --m;
    }
    out.insert(out.end(), ids, ids + m);
    return;
  }
  std::vector<int> id(n), prev(n), next(n);
  for (size_t i = 0; i < n; ++i) { id[i] = byte_id_[u[i]]; prev[i] = int(i) - 1; next[i] = int(i) + 1; }
  next[n - 1] = -1;
  struct Cand { int rank, pos, left, right; };
  auto cmp = [](const Cand& a, const Cand& b) { return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos; };
  std::priority_queue<Cand, std::vector<Cand>, decltype(cmp)> heap(cmp);
  auto push = [&](int p) {
    if (p < 0 || next[p] < 0) return;
    int r, nw;
    if (lookup_merge(id[p], id[next[p]], r, nw)) heap.push({r, p, id[p], id[next[p]]});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(int(i));
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    int p = c.pos, q = next[p];
    if (id[p] != c.left || q < 0 || id[q] != c.right) continue;  // stale
    int r, nw;
    lookup_merge(c.left, c.right, r, nw);
    id[p] = nw;
    id[q] = -1;
    next[p] = next[q];
    if (next[q] >= 0) prev[next[q]] = p;
    push(prev[p]);
    push(p);
  }
  for (int p = 0; p >= 0; p = next[p]) out.push_back(id[p]);
}

void ByteLevelBPE::encode_ordinary(const char* s, size_t n, std::vector<int>& out, Cache* cache,
                                   std::vector<std::pair<uint32_t, uint32_t>>& pieces, const Cache* shared) const {
  pieces.clear();
  gpt2_pretokenize(s, n, pieces);
  std::string key;
  for (const auto& pc : pieces) {
    const char* p = s + pc.first;
    size_t len = pc.second;
    if (len == 1) { out.push_back(byte_id_[(unsigned char)*p]); continue; }
    if (cache == nullptr || len > 64) { bpe_piece(p, len, out); continue; }
    key.assign(p, len);
    if (shared != nullptr) {
      auto hit = shared->find(key);
      if (hit != shared->end()) { out.insert(out.end(), hit->second.begin(), hit->second.end()); continue; }
    }
    auto it = cache->find(key);
    if (it != cache->end()) { out.insert(out.end(), it->second.begin(), it->second.end()); continue; }
    size_t start = out.size();
    bpe_piece(p, len, out);
    if (cache->size() > (1u << 20)) cache->clear();  // bound memory on unbounded vocabularies
    cache->emplace(key, std::vector<int>(out.begin() + start, out.end()));
  }
}

void ByteLevelBPE::encode_with_cache(std::string_view text, std::vector<int>& out, Cache* cache,
                                     const Cache* shared) const {
  std::vector<std::pair<uint32_t, uint32_t>> pieces;
  const char* s = text.data();
  size_t n = text.size(), pos = 0;
  if (specials_.empty()) { encode_ordinary(s, n, out, cache, pieces, shared); return; }
  // Earliest special occurrence (longest at equal positions); cached next positions keep
  // this linear in the number of occurrences.
  std::vector<size_t> nxt(specials_.size());
  for (size_t k = 0; k < specials_.size(); ++k) nxt[k] = text.find(specials_[k].first, 0);
  while (pos < n) {
    size_t best = std::string::npos;
    int best_k = -1;
    for (size_t k = 0; k < specials_.size(); ++k) {
      if (specials_[k].first.empty()) continue;
      if (nxt[k] != std::string::npos && nxt[k] < pos) nxt[k] = text.find(specials_[k].first, pos);
      if (nxt[k] < best) { best = nxt[k]; best_k = int(k); }
    }
    if (best_k < 0) { encode_ordinary(s + pos, n - pos, out, cache, pieces, shared); break; }
    encode_ordinary(s + pos, best - pos, out, cache, pieces, shared);
    out.push_back(specials_[best_k].second);
    pos = best + specials_[best_k].first.size();
  }
}

std::vector<int> ByteLevelBPE::encode(const std::string& text, bool use_cache) {
  std::vector<int> out;
  out.reserve(text.size() / 3 + 4);
  if (!use_cache) {
    encode_with_cache(text, out, nullptr);
    return out;
  }
  std::unique_lock<std::shared_mutex> g(cache_mu_);
  encode_with_cache(text, out, &cache_);
  return out;
}

void ByteLevelBPE::encode_batch(const TextRef* texts, size_t n, int n_threads, FlatIds& out) {
  encode_batch_cached(cache_mu_, cache_, texts, n, n_threads, out,
                      [&](std::string_view t, std::vector<int>& o, Cache& c, const Cache* shared) {
                        encode_with_cache(t, o, &c, shared);
                      });
}

std::string ByteLevelBPE::decode(const int* ids, size_t n) const {
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || size_t(ids[i]) >= token_bytes_.size())
      throw std::out_of_range("token id " + std::to_string(ids[i]) + " is out of range [0, " +
                              std::to_string(token_bytes_.size()) + ")");
    s += token_bytes_[ids[i]];
  }
  return s;
}

// ------------------------------------------------------------------------------ trainer

void BPETrainer::feed(const std::string& text) {
  pieces_.clear();
  gpt2_pretokenize(text.data(), text.size(), pieces_);
  std::string key;
  for (const auto& p : pieces_) {
    key.assign(text.data() + p.first, p.second);
    ++counts_[key];
  }
}

void BPETrainer::add_counts(const BPETrainer& other) {
  for (const auto& kv : other.counts_) counts_[kv.first] += kv.second;
}

std::vector<std::tuple<int, int, int>> BPETrainer::train(const int* byte_ids, int first_new_id, int vocab_size,
                                                         int64_t min_frequency,
                                                         std::vector<std::string>& new_tokens) {
  // Words sorted by bytes so that the result does not depend on hash-map order.
  std::vector<std::pair<std::string, int64_t>> wc(counts_.begin(), counts_.end());
  std::sort(wc.begin(), wc.end());
  std::vector<std::vector<int>> words(wc.size());
  std::vector<int64_t> cnt(wc.size());
  std::unordered_map<std::string, int> tok_id;  // token bytes -> id (to reuse an existing id)
  std::vector<std::string> id_bytes(first_new_id);
  for (int b = 0; b < 256; ++b) { id_bytes[byte_ids[b]] = std::string(1, char(b)); tok_id[id_bytes[byte_ids[b]]] = byte_ids[b]; }
  auto key = [](int a, int b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); };
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int>> where;
  for (size_t w = 0; w < wc.size(); ++w) {
    const std::string& s = wc[w].first;
    cnt[w] = wc[w].second;
    words[w].resize(s.size());
    for (size_t i = 0; i < s.size(); ++i) words[w][i] = byte_ids[(unsigned char)s[i]];
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      uint64_t k = key(words[w][i], words[w][i + 1]);
      pair_count[k] += cnt[w];
      auto& v = where[k];
      if (v.empty() || v.back() != int(w)) v.push_back(int(w));
    }
  }
  // Max-heap on (count, then smallest (left id, right id)) — Hugging Face's tie-break.
  struct Item { int64_t count; uint64_t pair; };
  auto cmp = [](const Item& a, const Item& b) { return a.count != b.count ? a.count < b.count : a.pair > b.pair; };
  std::priority_queue<Item, std::vector<Item>, decltype(cmp)> heap(cmp);
  for (const auto& kv : pair_count) if (kv.second > 0) heap.push({kv.second, kv.first});
  std::vector<std::tuple<int, int, int>> merges;
  int n_tokens = int(tok_id.size()) + (first_new_id - 256);  // specials count too
  std::vector<uint64_t> touched;
  while (n_tokens < vocab_size && !heap.empty()) {
    Item top = heap.top();
    heap.pop();
    auto pc = pair_count.find(top.pair);
    int64_t cur = pc == pair_count.end() ? 0 : pc->second;
    if (cur != top.count) {  // stale entry: requeue with its current count
      if (cur > 0) heap.push({cur, top.pair});
      continue;
    }
    if (top.count < 1 || top.count < min_frequency) break;
    int a = int(top.pair >> 32), b = int(uint32_t(top.pair));
    std::string nb = id_bytes[a] + id_bytes[b];
    int nid;
    auto it = tok_id.find(nb);
    if (it != tok_id.end()) nid = it->second;
    else {
      nid = int(id_bytes.size());
      id_bytes.push_back(nb);
      tok_id.emplace(nb, nid);
      new_tokens.push_back(nb);
      ++n_tokens;
    }
    merges.emplace_back(a, b, nid);
    std::vector<int> ws = std::move(where[top.pair]);
    where.erase(top.pair);
    pair_count.erase(top.pair);
    std::sort(ws.begin(), ws.end());
    ws.erase(std::unique(ws.begin(), ws.end()), ws.end());
    for (int w : ws) {
      std::vector<int>& sy = words[w];
      int64_t c = cnt[w];
      // Merge every non-overlapping occurrence left to right; update neighbour pairs.
      size_t o = 0;
      for (size_t i = 0; i < sy.size(); ++i) {
        if (i + 1 < sy.size() && sy[i] == a && sy[i + 1] == b) {
          if (o > 0) {
            pair_count[key(sy[o - 1], a)] -= c;
            uint64_t k = key(sy[o - 1], nid);
            pair_count[k] += c;
            auto& v = where[k];
            if (v.empty() || v.back() != w) v.push_back(w);
          }
          if (i + 2 < sy.size()) {
            // The right neighbour may itself start another (a, b): its own pair (b, a) is
            // consumed either way.
            pair_count[key(b, sy[i + 2])] -= c;
            uint64_t k = key(nid, sy[i + 2]);
            pair_count[k] += c;
            auto& v = where[k];
            if (v.empty() || v.back() != w) v.push_back(w);
          }
          sy[o++] = nid;
          ++i;
        } else {
          sy[o++] = sy[i];
        }
      }
      sy.resize(o);
    }
    // Requeue the pairs whose counts grew (new pairs); decreased ones are fixed lazily.
    touched.clear();
    for (int w : ws) {
      const std::vector<int>& sy = words[w];
      for (size_t i = 0; i + 1 < sy.size(); ++i)
        if (sy[i] == nid || sy[i + 1] == nid) touched.push_back(key(sy[i], sy[i + 1]));
    }
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (uint64_t k : touched) {
      auto f = pair_count.find(k);
      if (f != pair_count.end() && f->second > 0) heap.push({f->second, k});
    }
  }
  return merges;
}

}}  // namespace tx::tok
