// Unigram LM tokenizer: Viterbi segmentation of ▁-prefixed whitespace-separated words.
// Mirrors UnigramTokenizer._viterbi in transformer_ext/tokenizers/unigram.py.
#pragma once
#include <cstdint>
#include <deque>
#include <mutex>
#include <shared_mutex>
#include <string_view>
#include <string>
#include <unordered_map>
#include <tuple>
#include <utility>
#include <vector>

#include "batch.h"

namespace tx { namespace tok {

// E-step of unigram training: forward-backward over each word's lattice. pieces: (UTF-8,
// log p); words: UTF-8 with counts. Adds count x posterior occurrences to expected[piece] and
// returns the corpus log-likelihood. Words are summed in a fixed number of chunks combined in
// order, so the result is the same for any n_threads.
double unigram_estep(const std::vector<std::pair<std::string, double>>& pieces,
                     const std::vector<std::string>& words, const std::vector<int64_t>& counts,
                     std::vector<double>& expected, int n_threads = 1);

// Seed candidates: every substring of 2..max_chars characters of each word, weighted by the
// word's count; those with total count >= min_count, in unspecified order.
void unigram_substrings(const TextRef* words, const int64_t* counts, size_t n, int max_chars, int64_t min_count,
                        std::vector<std::pair<std::string_view, int64_t>>& out);

// Pruning: for each piece, the best log-probability of segmenting it into the OTHER pieces
// (-inf if impossible); same operation order as _best_score in unigram.py.
void unigram_alt_scores(const std::vector<std::pair<std::string, double>>& pieces, std::vector<double>& out);

// How text becomes words before Viterbi.
struct UnigramOptions {
  // 0: whitespace (Python's str.split(), each word prefixed with U+2581 — this project's and
  //    SentencePiece's convention); 1: Hugging Face's Metaspace pre-tokeniser (' ' -> U+2581,
  //    then a new word starts at every U+2581; other whitespace stays inside words).
  int split = 0;
  bool metaspace_split = true;  // Metaspace split=false: the whole segment is one word
  int prepend = 1;              // Metaspace prepend_scheme: 0 never, 1 always, 2 first (text start only)
};

class Unigram {
 public:
  // pieces: (UTF-8 bytes, log-probability, id); specials: (UTF-8, id), matched whole first.
  Unigram(const std::vector<std::tuple<std::string, double, int>>& pieces, int unk_id,
          std::vector<std::pair<std::string, int>> specials = {}, UnigramOptions opt = {});
  std::vector<int> encode(const std::string& text);
  // All texts into one flat buffer (see batch.h), on n_threads threads; identical for any count.
  void encode_batch(const TextRef* texts, size_t n, int n_threads, FlatIds& out);

 private:
  using Cache = std::unordered_map<std::string, std::vector<int>>;
  void encode_text(std::string_view text, std::vector<int>& out, Cache& cache, const Cache* shared) const;
  void encode_segment(std::string_view seg, bool at_start, std::vector<int>& out, Cache& cache,
                      const Cache* shared) const;
  void viterbi(const std::string& word, std::vector<int>& out, Cache& cache, const Cache* shared) const;
  static constexpr int kPrefixOnly = -2;  // pieces_ entry that is only a prefix of pieces
  std::deque<std::string> keys_;  // storage of pieces_' keys (a deque never moves its elements)
  std::unordered_map<std::string_view, std::pair<double, int>> pieces_;
  size_t max_bytes_ = 1;
  double unk_score_ = 0.0;
  int unk_;
  std::vector<std::pair<std::string, int>> specials_;
  UnigramOptions opt_;
  Cache cache_;
  std::shared_mutex mu_;
};

}}  // namespace tx::tok
