// Unigram LM tokenizer: Viterbi segmentation of ▁-prefixed whitespace-separated words.
// Mirrors UnigramTokenizer._viterbi in transformer_ext/tokenizers/unigram.py.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <tuple>
#include <utility>
#include <vector>

namespace tx { namespace tok {

// E-step of unigram training: forward-backward over each word's lattice. pieces: (UTF-8,
// log p); words: UTF-8 with counts. Adds count x posterior occurrences to expected[piece] and
// returns the corpus log-likelihood. Same operation order as the Python reference.
double unigram_estep(const std::vector<std::pair<std::string, double>>& pieces,
                     const std::vector<std::string>& words, const std::vector<int64_t>& counts,
                     std::vector<double>& expected);

class Unigram {
 public:
  // pieces: (UTF-8 bytes, log-probability, id)
  Unigram(const std::vector<std::tuple<std::string, double, int>>& pieces, int unk_id);
  std::vector<int> encode(const std::string& text);

 private:
  void viterbi(const std::string& word, std::vector<int>& out);
  std::unordered_map<std::string, std::pair<double, int>> pieces_;
  size_t max_bytes_ = 1;
  double unk_score_ = 0.0;
  int unk_;
  std::unordered_map<std::string, std::vector<int>> cache_;
  std::mutex mu_;
};

}}  // namespace tx::tok
