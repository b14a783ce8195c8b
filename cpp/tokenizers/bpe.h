// Byte-level BPE (GPT-2 scheme): hand-written GPT-2 pre-tokeniser, merge loop, trainer.
// Not ISA-specific: compiled once into _core (see CMakeLists.txt).
#pragma once
#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "batch.h"

namespace tx { namespace tok {

enum CharClass : uint8_t { kClsOther = 0, kClsLetter = 1, kClsNumber = 2, kClsSpace = 3 };
CharClass char_class(uint32_t cp);
const char* unicode_version();

// Splits UTF-8 text with GPT-2's pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// appending (byte offset, byte length) of each piece. Invalid UTF-8 bytes count as one
// "other" character each, so every byte belongs to exactly one piece.
void gpt2_pretokenize(const char* s, size_t n, std::vector<std::pair<uint32_t, uint32_t>>& out);

class ByteLevelBPE {
 public:
  // token_bytes[id]: the raw bytes of token id ("" = unused id); merges in rank order as
  // (left id, right id, merged id); specials: (bytes, id), matched whole before splitting.
  ByteLevelBPE(std::vector<std::string> token_bytes,
               const std::vector<std::tuple<int, int, int>>& merges,
               std::vector<std::pair<std::string, int>> specials);
  std::vector<int> encode(const std::string& text, bool use_cache = true);
  // All texts into one flat buffer (see batch.h), on n_threads threads; identical for any count.
  void encode_batch(const TextRef* texts, size_t n, int n_threads, FlatIds& out);
  std::string decode(const int* ids, size_t n) const;  // throws std::out_of_range on bad id
  size_t vocab_size() const { return token_bytes_.size(); }
  void clear_cache();

 private:
  using Cache = std::unordered_map<std::string, std::vector<int>>;
  void encode_ordinary(const char* s, size_t n, std::vector<int>& out, Cache* cache,
                       std::vector<std::pair<uint32_t, uint32_t>>& pieces, const Cache* shared) const;
  void bpe_piece(const char* s, size_t n, std::vector<int>& out) const;
  void encode_with_cache(std::string_view text, std::vector<int>& out, Cache* cache,
                         const Cache* shared = nullptr) const;
  bool lookup_merge(int a, int b, int& rank, int& merged) const {
    auto it = merges_.find((uint64_t(uint32_t(a)) << 32) | uint32_t(b));
    if (it == merges_.end()) return false;
    rank = it->second.first;
    merged = it->second.second;
    return true;
  }

  std::vector<std::string> token_bytes_;
  int byte_id_[256];
  std::unordered_map<uint64_t, std::pair<int, int>> merges_;
  std::vector<std::pair<std::string, int>> specials_;
  Cache cache_;
  std::shared_mutex cache_mu_;  // exclusive: encode(); shared: encode_batch's read-only lookups
};

// Trainer: count words (pre-tokenised pieces) from texts, then learn merges.
class BPETrainer {
 public:
  void feed(const std::string& text);
  void add_counts(const BPETrainer& other);
  // base_ids: token string -> id for the 256 byte tokens (ids start after the specials);
  // returns merges as (left id, right id, merged id) and fills new_tokens (bytes of ids >=
  // first_new_id, in order). Stops when the vocabulary reaches vocab_size or the best pair
  // count is below min_frequency.
  std::vector<std::tuple<int, int, int>> train(const int* byte_ids, int first_new_id, int vocab_size,
                                               int64_t min_frequency,
                                               std::vector<std::string>& new_tokens);
  size_t n_words() const { return counts_.size(); }

 private:
  std::unordered_map<std::string, int64_t> counts_;
  std::vector<std::pair<uint32_t, uint32_t>> pieces_;
};

}}  // namespace tx::tok
