// UTF-8 decoding and Unicode range look-ups shared by the tokenizers.
#pragma once
#include <cstddef>
#include <cstdint>

namespace tx { namespace tok {

// Is cp inside one of n sorted, disjoint [lo, hi] ranges (the generated unicode_tables.h)?
inline bool in_ranges(uint32_t cp, const uint32_t (*r)[2], int n) {
  int lo = 0, hi = n - 1;
  while (lo <= hi) {
    int mid = (lo + hi) >> 1;
    if (cp < r[mid][0]) hi = mid - 1;
    else if (cp > r[mid][1]) lo = mid + 1;
    else return true;
  }
  return false;
}

// Decodes one code point at s[i] (i < n) and sets len to its byte length. A malformed
// sequence counts as one byte and decodes to `invalid` (callers choose what it means:
// BPE keeps the raw byte, WordPiece a replacement character).
inline uint32_t decode_utf8(const unsigned char* s, size_t n, size_t i, int& len, uint32_t invalid) {
  unsigned c = s[i];
  if (c < 0x80) { len = 1; return c; }
  int need;
  uint32_t cp;
  if ((c & 0xE0) == 0xC0) { need = 1; cp = c & 0x1F; }
  else if ((c & 0xF0) == 0xE0) { need = 2; cp = c & 0x0F; }
  else if ((c & 0xF8) == 0xF0) { need = 3; cp = c & 0x07; }
  else { len = 1; return invalid; }
  for (int k = 1; k <= need; ++k) {
    if (i + k >= n || (s[i + k] & 0xC0) != 0x80) { len = 1; return invalid; }
    cp = (cp << 6) | (s[i + k] & 0x3F);
  }
  len = need + 1;
  return cp;
}

}}  // namespace tx::tok
