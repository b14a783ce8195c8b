// Unigram Viterbi encoder (see unigram.h).
#include "unigram.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>

namespace tx { namespace tok {

namespace {

// Python's str.split() whitespace: Unicode White_Space plus U+001C..U+001F.
bool is_py_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

inline uint32_t decode_at(const unsigned char* s, size_t n, size_t i, int& len) {
  unsigned c = s[i];
  if (c < 0x80) { len = 1; return c; }
  int need = (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : 0;
  if (need == 0 || i + size_t(need) >= n) {
    len = 1;
    return 0xFFFD;
  }
  uint32_t cp = c & (0x3F >> need);
  for (int k = 1; k <= need; ++k) {
    if ((s[i + k] & 0xC0) != 0x80) { len = 1; return 0xFFFD; }
    cp = (cp << 6) | (s[i + k] & 0x3F);
  }
  len = need + 1;
  return cp;
}

// pos = the byte offset of every character of s[0:n], then n (so character c is s[pos[c]:pos[c+1]]).
inline void char_starts(const char* data, size_t n, std::vector<size_t>& pos) {
  const unsigned char* s = reinterpret_cast<const unsigned char*>(data);
  pos.clear();
  for (size_t i = 0; i < n;) {
    pos.push_back(i);
    int l;
    decode_at(s, n, i, l);
    i += size_t(l);
  }
  pos.push_back(n);
}

inline double logsumexp(double a, double b) {
  if (a == -INFINITY) return b;
  if (b == -INFINITY) return a;
  double m = a > b ? a : b;
  return m + std::log1p(std::exp(-std::fabs(a - b)));
}

}  // namespace

double unigram_estep(const std::vector<std::pair<std::string, double>>& pieces,
                     const std::vector<std::string>& words, const std::vector<int64_t>& counts,
                     std::vector<double>& expected, int n_threads) {
  // Every piece, and every proper prefix of one (id -1): a lattice scan from a start stops at
  // the first substring that begins no piece, instead of trying all M lengths.
  std::unordered_map<std::string_view, std::pair<double, int>> table;
  size_t M = 1;  // longest piece in characters
  for (size_t i = 0; i < pieces.size(); ++i) {
    const std::string& p = pieces[i].first;
    table[std::string_view(p)] = std::make_pair(pieces[i].second, int(i));
    size_t chars = 0;
    for (size_t b = 0; b < p.size(); ++b) {
      if ((static_cast<unsigned char>(p[b]) & 0xC0) == 0x80) continue;
      ++chars;
      if (b > 0) table.emplace(std::string_view(p.data(), b), std::make_pair(0.0, -1));
    }
    M = std::max(M, chars);
  }
  // Words are cut into a FIXED number of contiguous chunks, each summed into its own buffer, and
  // the chunks are added in order: the result does not depend on the thread count.
  const size_t n_words = words.size();
  const size_t n_chunks = std::min<size_t>(8, std::max<size_t>(1, n_words / 256));
  std::vector<std::vector<double>> part(n_chunks);
  std::vector<double> part_ll(n_chunks, 0.0);
  auto run_chunk = [&](size_t c) {
    std::vector<double>& exp_c = part[c];
    exp_c.assign(pieces.size(), 0.0);
    double loglik = 0.0;
    std::vector<size_t> pos;
    std::vector<double> alpha, beta;
    std::vector<int> pid;  // piece index of w[s:e] at s * (M + 1) + (e - s), or -1
    std::vector<double> plp;
    for (size_t wi = n_words * c / n_chunks; wi < n_words * (c + 1) / n_chunks; ++wi) {
      const std::string& w = words[wi];
      char_starts(w.data(), w.size(), pos);
      size_t n = pos.size() - 1;
      pid.assign((n + 1) * (M + 1), -1);
      plp.assign((n + 1) * (M + 1), 0.0);
      for (size_t st = 0; st < n; ++st)
        for (size_t e = st + 1; e <= std::min(n, st + M); ++e) {
          auto f = table.find(std::string_view(w.data() + pos[st], pos[e] - pos[st]));
          if (f == table.end()) break;  // no piece starts with w[st:e]
          if (f->second.second >= 0) {
            pid[st * (M + 1) + (e - st)] = f->second.second;
            plp[st * (M + 1) + (e - st)] = f->second.first;
          }
        }
      alpha.assign(n + 1, -INFINITY);
      beta.assign(n + 1, -INFINITY);
      alpha[0] = 0.0;
      for (size_t e = 1; e <= n; ++e) {
        double a = -INFINITY;
        for (size_t st = e > M ? e - M : 0; st < e; ++st) {
          size_t k = st * (M + 1) + (e - st);
          if (pid[k] >= 0 && alpha[st] != -INFINITY) a = logsumexp(a, alpha[st] + plp[k]);
        }
        alpha[e] = a;
      }
      beta[n] = 0.0;
      for (size_t st = n; st-- > 0;) {
        double b = -INFINITY;
        for (size_t e = st + 1; e <= std::min(n, st + M); ++e) {
          size_t k = st * (M + 1) + (e - st);
          if (pid[k] >= 0 && beta[e] != -INFINITY) b = logsumexp(b, plp[k] + beta[e]);
        }
        beta[st] = b;
      }
      double Z = alpha[n];
      double cnt = double(counts[wi]);
      loglik += cnt * Z;
      for (size_t st = 0; st < n; ++st) {
        if (alpha[st] == -INFINITY) continue;
        for (size_t e = st + 1; e <= std::min(n, st + M); ++e) {
          size_t k = st * (M + 1) + (e - st);
          if (pid[k] >= 0) exp_c[size_t(pid[k])] += cnt * std::exp(alpha[st] + plp[k] + beta[e] - Z);
        }
      }
    }
    part_ll[c] = loglik;
  };
  int T = n_threads < 1 ? 1 : n_threads;
  if (size_t(T) > n_chunks) T = int(n_chunks);
  if (T <= 1) {
    for (size_t c = 0; c < n_chunks; ++c) run_chunk(c);
  } else {
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t c; (c = next.fetch_add(1)) < n_chunks;) run_chunk(c);
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < T; ++t) pool.emplace_back(work);
    work();
    for (auto& th : pool) th.join();
  }
  expected.assign(pieces.size(), 0.0);
  double loglik = 0.0;
  for (size_t c = 0; c < n_chunks; ++c) {
    for (size_t i = 0; i < pieces.size(); ++i) expected[i] += part[c][i];
    loglik += part_ll[c];
  }
  return loglik;
}

void unigram_substrings(const TextRef* words, const int64_t* counts, size_t n, int max_chars, int64_t min_count,
                        std::vector<std::pair<std::string_view, int64_t>>& out) {
  // Keys are views into the words (which outlive the map): no allocation per substring.
  std::unordered_map<std::string_view, int64_t> sub;
  std::vector<size_t> pos;
  for (size_t wi = 0; wi < n; ++wi) {
    char_starts(words[wi].data, words[wi].size, pos);
    size_t m = pos.size() - 1;
    for (size_t st = 0; st < m; ++st)
      for (size_t e = st + 2; e <= std::min(m, st + size_t(max_chars)); ++e)
        sub[std::string_view(words[wi].data + pos[st], pos[e] - pos[st])] += counts[wi];
  }
  out.clear();
  for (const auto& kv : sub)
    if (kv.second >= min_count) out.emplace_back(kv.first, kv.second);
}

void unigram_alt_scores(const std::vector<std::pair<std::string, double>>& pieces, std::vector<double>& out) {
  std::unordered_map<std::string_view, double> table;
  for (const auto& p : pieces) table.emplace(p.first, p.second);
  out.assign(pieces.size(), -INFINITY);
  std::vector<size_t> pos;
  std::vector<double> best;
  for (size_t k = 0; k < pieces.size(); ++k) {
    const std::string& w = pieces[k].first;
    char_starts(w.data(), w.size(), pos);
    size_t n = pos.size() - 1;
    best.assign(n + 1, -INFINITY);
    best[0] = 0.0;
    for (size_t e = 1; e <= n; ++e)
      for (size_t st = 0; st < e; ++st) {
        if (best[st] == -INFINITY || (st == 0 && e == n)) continue;  // the piece itself is excluded
        auto f = table.find(std::string_view(w.data() + pos[st], pos[e] - pos[st]));
        if (f != table.end() && best[st] + f->second > best[e]) best[e] = best[st] + f->second;
      }
    out[k] = best[n];
  }
}

Unigram::Unigram(const std::vector<std::tuple<std::string, double, int>>& pieces, int unk_id,
                 std::vector<std::pair<std::string, int>> specials, UnigramOptions opt)
    : unk_(unk_id), specials_(std::move(specials)), opt_(opt) {
  double lo = 0.0;
  bool any = false;
  for (const auto& p : pieces) {
    keys_.push_back(std::get<0>(p));
    if (!pieces_.emplace(std::string_view(keys_.back()), std::make_pair(std::get<1>(p), std::get<2>(p))).second)
      keys_.pop_back();  // duplicate: the first one wins
    max_bytes_ = std::max(max_bytes_, std::get<0>(p).size());
    lo = any ? std::min(lo, std::get<1>(p)) : std::get<1>(p);
    any = true;
  }
  unk_score_ = (any ? lo : 0.0) - 10.0;  // SentencePiece's / HF's kUnkPenalty
  for (const auto& p : pieces) {  // proper prefixes (at character boundaries) for the lattice scan
    const std::string& t = std::get<0>(p);
    for (size_t b = 1; b < t.size(); ++b)
      if ((static_cast<unsigned char>(t[b]) & 0xC0) != 0x80 && pieces_.find(std::string_view(t.data(), b)) == pieces_.end()) {
        keys_.push_back(t.substr(0, b));
        pieces_.emplace(std::string_view(keys_.back()), std::make_pair(0.0, kPrefixOnly));
      }
  }
  // Longest special first so that a special containing another one wins at the same position.
  std::stable_sort(specials_.begin(), specials_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
}

// best[e] = max over pieces w[s:e] of best[s] + score, starts in increasing order (first wins
// ties, as the Python reference and HF's lattice); an unknown single character scores
// unk_score_. The window is bounded by the longest piece: O(n * max piece length).
void Unigram::viterbi(const std::string& w, std::vector<int>& out, Cache& cache, const Cache* shared) const {
  if (shared != nullptr) {
    auto it = shared->find(w);
    if (it != shared->end()) { out.insert(out.end(), it->second.begin(), it->second.end()); return; }
  }
  auto it = cache.find(w);
  if (it != cache.end()) { out.insert(out.end(), it->second.begin(), it->second.end()); return; }
  std::vector<size_t> pos;  // character boundaries
  char_starts(w.data(), w.size(), pos);
  size_t m = pos.size() - 1;
  std::vector<double> best(m + 1, -INFINITY);
  std::vector<size_t> back(m + 1, 0);
  std::vector<int> bid(m + 1, unk_);
  best[0] = 0.0;
  // Forward form: from each reachable start, extend the end while w[st:e] is still the prefix of
  // some piece (pieces_ holds prefixes with id kPrefixOnly). For a given end the candidates are
  // still met in increasing start order, so results (ties included) equal the backward form.
  std::string_view wv(w);
  for (size_t st = 0; st < m; ++st) {
    if (best[st] == -INFINITY) continue;
    bool single = false;
    for (size_t e = st + 1; e <= m && pos[e] - pos[st] <= max_bytes_; ++e) {
      auto f = pieces_.find(wv.substr(pos[st], pos[e] - pos[st]));
      if (f == pieces_.end()) break;
      if (f->second.second == kPrefixOnly) continue;
      single |= e == st + 1;
      double v = best[st] + f->second.first;
      if (v > best[e]) { best[e] = v; back[e] = st; bid[e] = f->second.second; }
    }
    if (!single) {  // an unknown character: one <unk> piece
      double v = best[st] + unk_score_;
      if (v > best[st + 1]) { best[st + 1] = v; back[st + 1] = st; bid[st + 1] = unk_; }
    }
  }
  std::vector<int> ids;
  for (size_t e = m; e > 0; e = back[e]) ids.push_back(bid[e]);
  std::reverse(ids.begin(), ids.end());
  std::vector<int> merged;  // consecutive <unk>s become one
  for (size_t k = 0; k < ids.size(); ++k)
    if (!(ids[k] == unk_ && k > 0 && ids[k - 1] == unk_)) merged.push_back(ids[k]);
  out.insert(out.end(), merged.begin(), merged.end());
  if (w.size() <= 256 && cache.size() < (1u << 18)) cache.emplace(w, std::move(merged));
}

void Unigram::encode_segment(std::string_view text, bool at_start, std::vector<int>& out, Cache& cache,
                             const Cache* shared) const {
  static const char kMeta[] = "\xE2\x96\x81";  // U+2581 ▁
  const unsigned char* s = reinterpret_cast<const unsigned char*>(text.data());
  size_t n = text.size(), i = 0;
  std::string word;
  if (opt_.split == 0) {
    while (i < n) {
      int l;
      uint32_t c = decode_at(s, n, i, l);
      if (is_py_space(c)) { i += size_t(l); continue; }
      word.assign(kMeta, 3);
      size_t j = i;
      while (j < n) {
        int l2;
        uint32_t c2 = decode_at(s, n, j, l2);
        if (is_py_space(c2)) break;
        j += size_t(l2);
      }
      word.append(text.data() + i, j - i);
      viterbi(word, out, cache, shared);
      i = j;
    }
    return;
  }
  // Hugging Face Metaspace: ' ' -> ▁, optional leading ▁, new word at each ▁ (merged with next).
  if (n == 0) return;
  std::string t;
  t.reserve(n + 8);
  bool prepend = opt_.prepend == 1 || (opt_.prepend == 2 && at_start);
  if (prepend && !(text[0] == ' ' || text.substr(0, 3) == std::string_view(kMeta, 3))) t.append(kMeta, 3);
  for (char c : text) {
    if (c == ' ') t.append(kMeta, 3);
    else t += c;
  }
  if (!opt_.metaspace_split) { viterbi(t, out, cache, shared); return; }
  size_t start = 0;
  for (size_t k = 1; k + 3 <= t.size(); ++k) {
    if (t.compare(k, 3, kMeta, 3) == 0) {
      word.assign(t, start, k - start);
      viterbi(word, out, cache, shared);
      start = k;
      k += 2;
    }
  }
  word.assign(t, start, t.size() - start);
  viterbi(word, out, cache, shared);
}

void Unigram::encode_text(std::string_view text, std::vector<int>& out, Cache& cache, const Cache* shared) const {
  size_t pos = 0, n = text.size();
  std::vector<size_t> nxt(specials_.size());
  for (size_t k = 0; k < specials_.size(); ++k)
    nxt[k] = specials_[k].first.empty() ? std::string::npos : text.find(specials_[k].first, 0);
  while (pos < n) {
    size_t best = std::string::npos;
    int best_k = -1;
    for (size_t k = 0; k < specials_.size(); ++k) {
      if (nxt[k] != std::string::npos && nxt[k] < pos) nxt[k] = text.find(specials_[k].first, pos);
      if (nxt[k] < best) { best = nxt[k]; best_k = int(k); }
    }
    if (best_k < 0) { encode_segment(text.substr(pos), pos == 0, out, cache, shared); return; }
    encode_segment(text.substr(pos, best - pos), pos == 0, out, cache, shared);
    out.push_back(specials_[best_k].second);
    pos = best + specials_[best_k].first.size();
  }
}

std::vector<int> Unigram::encode(const std::string& text) {
  std::unique_lock<std::shared_mutex> g(mu_);
  std::vector<int> out;
  encode_text(text, out, cache_, nullptr);
  return out;
}

void Unigram::encode_batch(const TextRef* texts, size_t n, int n_threads, FlatIds& out) {
  encode_batch_cached(mu_, cache_, texts, n, n_threads, out,
                      [&](std::string_view t, std::vector<int>& o, Cache& c, const Cache* shared) {
                        encode_text(t, o, c, shared);
                      });
}

}}  // namespace tx::tok
