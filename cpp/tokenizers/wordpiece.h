// BERT WordPiece: basic tokeniser (clean-up, CJK spacing, lower-case, accent strip,
// punctuation split) + greedy longest-match-first with a continuation prefix ("##").
// Mirrors transformer_ext/tokenizers/wordpiece.py (the reference).
#pragma once
#include <cstdint>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "batch.h"

namespace tx { namespace tok {

struct WordPieceOptions {
  bool lowercase = true;
  bool strip_accents = true;
  bool chinese_chars = true;
  int max_chars = 100;
  std::string prefix = "##";
};

class WordPiece {
 public:
  WordPiece(const std::vector<std::pair<std::string, int>>& vocab, int unk_id, WordPieceOptions opt,
            std::vector<std::pair<std::string, int>> specials);
  // Word-piece ids of a text (no [CLS]/[SEP]); special tokens in the text are kept whole.
  std::vector<int> encode(const std::string& text);
  // All texts into one flat buffer (see batch.h), on n_threads threads; identical for any count.
  void encode_batch(const TextRef* texts, size_t n, int n_threads, FlatIds& out);
  // The basic tokeniser's words (UTF-8), for tests.
  std::vector<std::string> basic_tokenize(const std::string& text) const;

 private:
  using Cache = std::unordered_map<std::string, std::vector<int>>;
  void encode_segment(const char* s, size_t n, std::vector<int>& out, Cache& cache, const Cache* shared) const;
  void encode_text(std::string_view text, std::vector<int>& out, Cache& cache, const Cache* shared = nullptr) const;
  void wordpiece(const std::string& word, size_t n_chars, std::vector<int>& out, Cache& cache,
                 const Cache* shared) const;
  template <class F> void for_each_word(const char* s, size_t n, F&& f) const;

  std::unordered_map<std::string, int> start_, cont_;  // pieces; continuation pieces without prefix
  size_t max_piece_bytes_ = 1;
  int unk_;
  WordPieceOptions opt_;
  std::vector<std::pair<std::string, int>> specials_;
  Cache cache_;
  std::shared_mutex mu_;
};

}}  // namespace tx::tok
