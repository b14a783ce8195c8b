// Unigram Viterbi encoder (see unigram.h).
#include "unigram.h"

#include <algorithm>
#include <cmath>

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

inline double logsumexp(double a, double b) {
  if (a == -INFINITY) return b;
  if (b == -INFINITY) return a;
  double m = a > b ? a : b;
  return m + std::log1p(std::exp(-std::fabs(a - b)));
}

}  // namespace

double unigram_estep(const std::vector<std::pair<std::string, double>>& pieces,
                     const std::vector<std::string>& words, const std::vector<int64_t>& counts,
                     std::vector<double>& expected) {
  std::unordered_map<std::string, std::pair<double, int>> table;
  size_t M = 1;  // longest piece in characters
  for (size_t i = 0; i < pieces.size(); ++i) {
    table.emplace(pieces[i].first, std::make_pair(pieces[i].second, int(i)));
    size_t chars = 0;
    for (unsigned char c : pieces[i].first) chars += (c & 0xC0) != 0x80;
    M = std::max(M, chars);
  }
  expected.assign(pieces.size(), 0.0);
  double loglik = 0.0;
  std::vector<size_t> pos;
  std::vector<double> alpha, beta;
  std::vector<int> pid;  // piece index of w[s:e] at s * (M + 1) + (e - s), or -1
  std::vector<double> plp;
  std::string key;
  for (size_t wi = 0; wi < words.size(); ++wi) {
    const std::string& w = words[wi];
    const unsigned char* s = reinterpret_cast<const unsigned char*>(w.data());
    pos.clear();
    for (size_t i = 0; i < w.size();) {
      pos.push_back(i);
      int l;
      decode_at(s, w.size(), i, l);
      i += size_t(l);
    }
    pos.push_back(w.size());
    size_t n = pos.size() - 1;
    pid.assign((n + 1) * (M + 1), -1);
    plp.assign((n + 1) * (M + 1), 0.0);
    for (size_t st = 0; st < n; ++st)
      for (size_t e = st + 1; e <= std::min(n, st + M); ++e) {
        key.assign(w, pos[st], pos[e] - pos[st]);
        auto f = table.find(key);
        if (f != table.end()) { pid[st * (M + 1) + (e - st)] = f->second.second; plp[st * (M + 1) + (e - st)] = f->second.first; }
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
    double c = double(counts[wi]);
    loglik += c * Z;
    for (size_t st = 0; st < n; ++st) {
      if (alpha[st] == -INFINITY) continue;
      for (size_t e = st + 1; e <= std::min(n, st + M); ++e) {
        size_t k = st * (M + 1) + (e - st);
        if (pid[k] >= 0) expected[size_t(pid[k])] += c * std::exp(alpha[st] + plp[k] + beta[e] - Z);
      }
    }
  }
  return loglik;
}

Unigram::Unigram(const std::vector<std::tuple<std::string, double, int>>& pieces, int unk_id) : unk_(unk_id) {
  double lo = 0.0;
  bool any = false;
  for (const auto& p : pieces) {
    pieces_.emplace(std::get<0>(p), std::make_pair(std::get<1>(p), std::get<2>(p)));
    max_bytes_ = std::max(max_bytes_, std::get<0>(p).size());
    lo = any ? std::min(lo, std::get<1>(p)) : std::get<1>(p);
    any = true;
  }
  unk_score_ = (any ? lo : 0.0) - 10.0;
}

// best[e] = max over pieces w[s:e] of best[s] + score, starts in increasing order (first wins
// ties, as the Python reference); an unknown single character scores unk_score_.
void Unigram::viterbi(const std::string& w, std::vector<int>& out) {
  auto it = cache_.find(w);
  if (it != cache_.end()) { out.insert(out.end(), it->second.begin(), it->second.end()); return; }
  const unsigned char* s = reinterpret_cast<const unsigned char*>(w.data());
  size_t n = w.size();
  std::vector<size_t> pos;  // character boundaries
  for (size_t i = 0; i < n;) {
    pos.push_back(i);
    int l;
    decode_at(s, n, i, l);
    i += size_t(l);
  }
  pos.push_back(n);
  size_t m = pos.size() - 1;
  std::vector<double> best(m + 1, -INFINITY);
  std::vector<size_t> back(m + 1, 0);
  std::vector<int> bid(m + 1, unk_);
  best[0] = 0.0;
  std::string key;
  for (size_t e = 1; e <= m; ++e) {
    size_t s0 = e;
    while (s0 > 0 && pos[e] - pos[s0 - 1] <= max_bytes_) --s0;
    if (s0 == e) s0 = e - 1;
    for (size_t st = s0; st < e; ++st) {
      if (best[st] == -INFINITY) continue;
      key.assign(w, pos[st], pos[e] - pos[st]);
      auto f = pieces_.find(key);
      double sc;
      int id;
      if (f == pieces_.end()) {
        if (e - st != 1) continue;
        sc = unk_score_;
        id = unk_;
      } else {
        sc = f->second.first;
        id = f->second.second;
      }
      double v = best[st] + sc;
      if (v > best[e]) { best[e] = v; back[e] = st; bid[e] = id; }
    }
  }
  std::vector<int> ids;
  for (size_t e = m; e > 0; e = back[e]) ids.push_back(bid[e]);
  std::reverse(ids.begin(), ids.end());
  std::vector<int> merged;  // consecutive <unk>s become one
  for (size_t k = 0; k < ids.size(); ++k)
    if (!(ids[k] == unk_ && k > 0 && ids[k - 1] == unk_)) merged.push_back(ids[k]);
  out.insert(out.end(), merged.begin(), merged.end());
  if (cache_.size() < (1u << 18)) cache_.emplace(w, std::move(merged));
}

std::vector<int> Unigram::encode(const std::string& text) {
  std::lock_guard<std::mutex> g(mu_);
  std::vector<int> out;
  const unsigned char* s = reinterpret_cast<const unsigned char*>(text.data());
  size_t n = text.size(), i = 0;
  std::string word;
  while (i < n) {
    int l;
    uint32_t c = decode_at(s, n, i, l);
    if (is_py_space(c)) { i += size_t(l); continue; }
    word.assign("\xE2\x96\x81");  // U+2581 ▁
    size_t j = i;
    while (j < n) {
      int l2;
      uint32_t c2 = decode_at(s, n, j, l2);
      if (is_py_space(c2)) break;
      j += size_t(l2);
    }
    word.append(text, i, j - i);
    viterbi(word, out);
    i = j;
  }
  return out;
}

}}  // namespace tx::tok
