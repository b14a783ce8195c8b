// BERT WordPiece in C++ (see wordpiece.h). Unicode data: unicode_tables.h (generated from
// Python's unicodedata, so the C++ and Python paths agree character for character).
#include "wordpiece.h"

#include <algorithm>
#include <mutex>
#include <thread>

#include "unicode_tables.h"
#include "utf8.h"

namespace tx { namespace tok {

namespace {

// cp -> (pool offset, length) in a generated map, or nullptr.
const uint32_t* find_map(uint32_t cp, const uint32_t (*m)[3], int n) {
  int lo = 0, hi = n - 1;
  while (lo <= hi) {
    int mid = (lo + hi) >> 1;
    if (cp < m[mid][0]) hi = mid - 1;
    else if (cp > m[mid][0]) lo = mid + 1;
    else return m[mid];
  }
  return nullptr;
}

// Per-BMP-character flags, built once; astral characters use the range tables.
enum : uint8_t { kFControl = 1, kFSpace = 2, kFPunct = 4, kFMn = 8, kFLetter = 16, kFSplit = 32 };
struct Flags {
  uint8_t f[0x10000];
  Flags() {
    for (uint32_t c = 0; c < 0x10000; ++c) f[c] = compute(c);
  }
  static uint8_t compute(uint32_t c) {
    uint8_t v = 0;
    if (in_ranges(c, kBertControl, kBertControlCount)) v |= kFControl;
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || in_ranges(c, kSpaceSeparator, kSpaceSeparatorCount)) v |= kFSpace;
    if (c == 0x2028 || c == 0x2029) v |= kFSplit;  // not BERT whitespace, but str.split() splits there
    if (in_ranges(c, kBertPunct, kBertPunctCount)) v |= kFPunct;
    if (in_ranges(c, kMarkNonspacing, kMarkNonspacingCount)) v |= kFMn;
    if (in_ranges(c, kLetter, kLetterCount)) v |= kFLetter;
    return v;
  }
};
const Flags& flags() {
  static const Flags t;
  return t;
}
inline uint8_t flag(uint32_t c) { return c < 0x10000 ? flags().f[c] : Flags::compute(c); }

inline bool is_cjk(uint32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
         (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

inline uint32_t decode_utf8(const unsigned char* s, size_t n, size_t i, int& len) {
  uint32_t cp = tok::decode_utf8(s, n, i, len, 0xFFFD);
  return (cp >= 0xD800 && cp < 0xE000) ? 0xFFFD : cp;  // surrogates (category Cs) are dropped anyway
}

inline void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) s += char(cp);
  else if (cp < 0x800) { s += char(0xC0 | (cp >> 6)); s += char(0x80 | (cp & 0x3F)); }
  else if (cp < 0x10000) { s += char(0xE0 | (cp >> 12)); s += char(0x80 | ((cp >> 6) & 0x3F)); s += char(0x80 | (cp & 0x3F)); }
  else { s += char(0xF0 | (cp >> 18)); s += char(0x80 | ((cp >> 12) & 0x3F)); s += char(0x80 | ((cp >> 6) & 0x3F)); s += char(0x80 | (cp & 0x3F)); }
}

// str.lower() of one word (Final_Sigma approximated: Σ after a letter, not before one -> ς).
void lower_word(std::vector<uint32_t>& w) {
  std::vector<uint32_t> out;
  out.reserve(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    uint32_t c = w[i];
    if (c < 0x80) { out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c); continue; }
    if (c == 0x3A3) {
      bool before = i > 0 && (flag(w[i - 1]) & kFLetter);
      bool after = i + 1 < w.size() && (flag(w[i + 1]) & kFLetter);
      out.push_back(before && !after ? 0x3C2 : 0x3C3);
      continue;
    }
    const uint32_t* m = find_map(c, kLowerMap, kLowerCount);
    if (m) out.insert(out.end(), kLowerPool + m[1], kLowerPool + m[1] + m[2]);
    else out.push_back(c);
  }
  w.swap(out);
}

// NFD (without canonical reordering: only nonspacing marks are reordered by it, and they are
// dropped here) followed by removal of Mn characters.
void strip_accents(std::vector<uint32_t>& w) {
  std::vector<uint32_t> out;
  out.reserve(w.size());
  for (uint32_t c : w) {
    if (c < 0xC0) { out.push_back(c); continue; }
    if (c >= 0xAC00 && c <= 0xD7A3) {  // Hangul syllable -> L V (T) jamo
      uint32_t s = c - 0xAC00;
      out.push_back(0x1100 + s / 588);
      out.push_back(0x1161 + (s % 588) / 28);
      if (s % 28) out.push_back(0x11A7 + s % 28);
      continue;
    }
    const uint32_t* m = find_map(c, kNfdMap, kNfdCount);
    if (m) {
      for (uint32_t k = 0; k < m[2]; ++k) {
        uint32_t d = kNfdPool[m[1] + k];
        if (!(flag(d) & kFMn)) out.push_back(d);
      }
    } else if (!(flag(c) & kFMn)) {
      out.push_back(c);
    }
  }
  w.swap(out);
}

}  // namespace

WordPiece::WordPiece(const std::vector<std::pair<std::string, int>>& vocab, int unk_id, WordPieceOptions opt,
                     std::vector<std::pair<std::string, int>> specials)
    : unk_(unk_id), opt_(std::move(opt)), specials_(std::move(specials)) {
  for (const auto& kv : vocab) {
    start_.emplace(kv.first, kv.second);
    if (!opt_.prefix.empty() && kv.first.size() > opt_.prefix.size() &&
        kv.first.compare(0, opt_.prefix.size(), opt_.prefix) == 0)
      cont_.emplace(kv.first.substr(opt_.prefix.size()), kv.second);
    max_piece_bytes_ = std::max(max_piece_bytes_, kv.first.size());
  }
  std::stable_sort(specials_.begin(), specials_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
}

// Basic tokeniser: calls f(word_utf8, n_chars) for each word, in order.
template <class F>
void WordPiece::for_each_word(const char* str, size_t n, F&& f) const {
  const unsigned char* s = reinterpret_cast<const unsigned char*>(str);
  std::vector<uint32_t> word;
  std::string piece;
  auto flush = [&]() {
    if (word.empty()) return;
    bool ascii = true;
    for (uint32_t c : word) ascii &= c < 0x80;
    if (ascii) {  // fast path: ASCII has no accents, and lower-casing is A-Z only (no allocation)
      if (opt_.lowercase)
        for (uint32_t& c : word) c += (c >= 'A' && c <= 'Z') ? 32 : 0;
    } else {
      if (opt_.lowercase) lower_word(word);
      if (opt_.strip_accents) strip_accents(word);
    }
    piece.clear();
    size_t chars = 0;
    for (uint32_t c : word) {
      if (flag(c) & kFPunct) {
        if (chars) f(piece, chars);
        piece.clear();
        append_utf8(piece, c);
        f(piece, size_t(1));
        piece.clear();
        chars = 0;
      } else {
        append_utf8(piece, c);
        ++chars;
      }
    }
    if (chars) f(piece, chars);
    word.clear();
  };
  size_t i = 0;
  while (i < n) {
    int len;
    uint32_t c = s[i] < 0x80 ? (len = 1, s[i]) : decode_utf8(s, n, i, len);
    i += size_t(len);
    if (c == 0 || c == 0xFFFD) continue;
    uint8_t fl = flag(c);
    if (fl & (kFSpace | kFSplit)) { flush(); continue; }
    if (fl & kFControl) continue;
    if (opt_.chinese_chars && is_cjk(c)) {
      flush();
      word.push_back(c);
      flush();
      continue;
    }
    word.push_back(c);
  }
  flush();
}

std::vector<std::string> WordPiece::basic_tokenize(const std::string& text) const {
  std::vector<std::string> out;
  for_each_word(text.data(), text.size(), [&](const std::string& w, size_t) { out.push_back(w); });
  return out;
}

// Greedy longest-match-first; a word with an unmatchable tail, or longer than max_chars
// characters, is one [UNK].
void WordPiece::wordpiece(const std::string& word, size_t n_chars, std::vector<int>& out, Cache& cache,
                          const Cache* shared) const {
  if (int64_t(n_chars) > opt_.max_chars) { out.push_back(unk_); return; }
  if (shared != nullptr) {
    auto hit = shared->find(word);
    if (hit != shared->end()) { out.insert(out.end(), hit->second.begin(), hit->second.end()); return; }
  }
  auto it = cache.find(word);
  if (it != cache.end()) { out.insert(out.end(), it->second.begin(), it->second.end()); return; }
  std::vector<int> ids;
  size_t start = 0, n = word.size();
  std::string key;
  while (start < n) {
    size_t end = std::min(n, start + max_piece_bytes_);
    int found = -1;
    const auto& table = start == 0 ? start_ : cont_;
    while (end > start) {
      // only end at a character boundary
      if (end < n && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80) { --end; continue; }
      key.assign(word, start, end - start);
      auto f = table.find(key);
      if (f != table.end()) { found = f->second; break; }
      --end;
    }
    if (found < 0) { ids.assign(1, unk_); break; }
    ids.push_back(found);
    start = end;
  }
  out.insert(out.end(), ids.begin(), ids.end());
  if (cache.size() < (1u << 18)) cache.emplace(word, std::move(ids));
}

void WordPiece::encode_segment(const char* s, size_t n, std::vector<int>& out, Cache& cache,
                               const Cache* shared) const {
  for_each_word(s, n, [&](const std::string& w, size_t chars) { wordpiece(w, chars, out, cache, shared); });
}

void WordPiece::encode_text(std::string_view text, std::vector<int>& out, Cache& cache, const Cache* shared) const {
  size_t pos = 0, n = text.size();
  // Next occurrence of each special, re-searched only once passed: linear in the number of
  // occurrences (searching every special again after each hit would be quadratic).
  size_t nxt_small[16];
  std::vector<size_t> nxt_big;
  const size_t n_sp = specials_.size();
  size_t* nxt = nxt_small;
  if (n_sp > 16) { nxt_big.resize(n_sp); nxt = nxt_big.data(); }
  for (size_t k = 0; k < n_sp; ++k) nxt[k] = specials_[k].first.empty() ? std::string::npos : text.find(specials_[k].first, 0);
  while (pos < n) {
    size_t best = std::string::npos;
    int best_k = -1;
    for (size_t k = 0; k < n_sp; ++k) {
      if (nxt[k] != std::string::npos && nxt[k] < pos) nxt[k] = text.find(specials_[k].first, pos);
      if (nxt[k] < best) { best = nxt[k]; best_k = int(k); }
    }
    if (best_k < 0) { encode_segment(text.data() + pos, n - pos, out, cache, shared); return; }
    encode_segment(text.data() + pos, best - pos, out, cache, shared);
    out.push_back(specials_[best_k].second);
    pos = best + specials_[best_k].first.size();
  }
}

std::vector<int> WordPiece::encode(const std::string& text) {
  std::vector<int> out;
  std::unique_lock<std::shared_mutex> g(mu_);
  encode_text(text, out, cache_);
  return out;
}

void WordPiece::encode_batch(const TextRef* texts, size_t n, int n_threads, FlatIds& out) {
  encode_batch_cached(mu_, cache_, texts, n, n_threads, out,
                      [&](std::string_view t, std::vector<int>& o, Cache& c, const Cache* shared) {
                        encode_text(t, o, c, shared);
                      });
}

}}  // namespace tx::tok
