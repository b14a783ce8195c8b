// Bindings of the tokenizer cores (cpp/tokenizers). Text crosses the boundary as UTF-8
// bytes (the Python layer encodes with surrogatepass); ids come back as int32 arrays.
// Every call that scans text releases the GIL.
#include <cstring>
#include <stdexcept>

#include "common.h"
#include "tx/dispatch.h"
#include "../tokenizers/bpe.h"
#include "../tokenizers/unigram.h"
#include "../tokenizers/wordpiece.h"

namespace {

py::array_t<int32_t> to_array(const std::vector<int>& v) {
  py::array_t<int32_t> a(static_cast<py::ssize_t>(v.size()));
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(int32_t));
  return a;
}

std::vector<int> ids_from(const py::array& a) {
  py::array_t<int64_t, py::array::c_style | py::array::forcecast> c(a);
  std::vector<int> out(static_cast<size_t>(c.size()));
  const int64_t* p = c.data();
  for (size_t i = 0; i < out.size(); ++i) {
    if (p[i] < INT32_MIN || p[i] > INT32_MAX) throw py::value_error("token id " + std::to_string(p[i]) + " is out of range");
    out[i] = int(p[i]);
  }
  return out;
}

}  // namespace

void bind_tokenizers(py::module_& m) {
  using tx::tok::ByteLevelBPE;
  using tx::tok::BPETrainer;
  m.def("tok_unicode_version", [] { return std::string(tx::tok::unicode_version()); });
  m.def("tok_char_class", [](uint32_t cp) { return int(tx::tok::char_class(cp)); });
  m.def("tok_gpt2_pretokenize", [](const py::bytes& b) {
    std::string s = b;
    std::vector<std::pair<uint32_t, uint32_t>> out;
    {
      py::gil_scoped_release release;
      tx::tok::gpt2_pretokenize(s.data(), s.size(), out);
    }
    return out;
  });
  py::class_<ByteLevelBPE>(m, "ByteLevelBPE")
      .def(py::init([](const std::vector<py::bytes>& toks, const std::vector<std::tuple<int, int, int>>& merges,
                       const std::vector<std::pair<py::bytes, int>>& specials) {
             std::vector<std::string> t(toks.begin(), toks.end());
             std::vector<std::pair<std::string, int>> sp;
             for (const auto& kv : specials) sp.emplace_back(std::string(kv.first), kv.second);
             try {
               return new ByteLevelBPE(std::move(t), merges, std::move(sp));
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }))
      .def("encode", [](ByteLevelBPE& self, const py::bytes& b, bool use_cache) {
             std::string s = b;
             std::vector<int> ids;
             {
               py::gil_scoped_release release;
               ids = self.encode(s, use_cache);
             }
             return to_array(ids);
           }, py::arg("text"), py::arg("use_cache") = true)
      .def("encode_batch", [](ByteLevelBPE& self, const std::vector<py::bytes>& texts, int n_threads) {
             std::vector<std::string> t(texts.begin(), texts.end());
             std::vector<std::vector<int>> ids;
             {
               py::gil_scoped_release release;
               ids = self.encode_batch(t, n_threads > 0 ? n_threads : tx::num_threads());
             }
             py::list out;
             for (const auto& v : ids) out.append(to_array(v));
             return out;
           }, py::arg("texts"), py::arg("n_threads") = 0)
      .def("decode", [](const ByteLevelBPE& self, const py::array& ids) {
             std::vector<int> v = ids_from(ids);
             try {
               return py::bytes(self.decode(v.data(), v.size()));
             } catch (const std::out_of_range& e) {
               throw py::value_error(e.what());
             }
           })
      .def("clear_cache", &ByteLevelBPE::clear_cache)
      .def_property_readonly("vocab_size", &ByteLevelBPE::vocab_size);
  py::class_<BPETrainer>(m, "BPETrainer")
      .def(py::init<>())
      .def("feed", [](BPETrainer& self, const py::bytes& b) {
        std::string s = b;
        py::gil_scoped_release release;
        self.feed(s);
      })
      .def("train", [](BPETrainer& self, const std::vector<int>& byte_ids, int first_new_id, int vocab_size,
                       int64_t min_frequency) {
        if (byte_ids.size() != 256) throw py::value_error("BPETrainer.train: byte_ids must have 256 entries");
        std::vector<std::string> new_tokens;
        std::vector<std::tuple<int, int, int>> merges;
        {
          py::gil_scoped_release release;
          merges = self.train(byte_ids.data(), first_new_id, vocab_size, min_frequency, new_tokens);
        }
        py::list toks;
        for (const auto& t : new_tokens) toks.append(py::bytes(t));
        return py::make_tuple(merges, toks);
      })
      .def_property_readonly("n_words", &BPETrainer::n_words);
  using tx::tok::WordPiece;
  py::class_<WordPiece>(m, "WordPiece")
      .def(py::init([](const std::vector<std::pair<std::string, int>>& vocab, int unk_id, bool lowercase,
                       bool strip_accents, bool chinese_chars, int max_chars, const std::string& prefix,
                       const std::vector<std::pair<std::string, int>>& specials) {
             tx::tok::WordPieceOptions o;
             o.lowercase = lowercase;
             o.strip_accents = strip_accents;
             o.chinese_chars = chinese_chars;
             o.max_chars = max_chars;
             o.prefix = prefix;
             return new WordPiece(vocab, unk_id, o, specials);
           }))
      .def("encode", [](WordPiece& self, const py::bytes& b) {
             std::string s = b;
             std::vector<int> ids;
             {
               py::gil_scoped_release release;
               ids = self.encode(s);
             }
             return to_array(ids);
           })
      .def("encode_batch", [](WordPiece& self, const std::vector<py::bytes>& texts, int n_threads) {
             std::vector<std::string> t(texts.begin(), texts.end());
             std::vector<std::vector<int>> ids;
             {
               py::gil_scoped_release release;
               ids = self.encode_batch(t, n_threads > 0 ? n_threads : tx::num_threads());
             }
             py::list out;
             for (const auto& v : ids) out.append(to_array(v));
             return out;
           }, py::arg("texts"), py::arg("n_threads") = 0)
      .def("basic_tokenize", [](const WordPiece& self, const py::bytes& b) {
        std::vector<std::string> w = self.basic_tokenize(std::string(b));
        py::list out;
        for (const auto& x : w) out.append(py::bytes(x));
        return out;
      });
  m.def("unigram_estep", [](const std::vector<std::pair<py::bytes, double>>& pieces,
                            const std::vector<py::bytes>& words, const std::vector<int64_t>& counts) {
    if (words.size() != counts.size()) throw py::value_error("unigram_estep: words and counts differ in length");
    std::vector<std::pair<std::string, double>> p;
    for (const auto& kv : pieces) p.emplace_back(std::string(kv.first), kv.second);
    std::vector<std::string> w(words.begin(), words.end());
    std::vector<double> expected;
    double loglik;
    {
      py::gil_scoped_release release;
      loglik = tx::tok::unigram_estep(p, w, counts, expected);
    }
    py::array_t<double> e(static_cast<py::ssize_t>(expected.size()));
    if (!expected.empty()) std::memcpy(e.mutable_data(), expected.data(), expected.size() * sizeof(double));
    return py::make_tuple(e, loglik);
  });
  using tx::tok::Unigram;
  py::class_<Unigram>(m, "Unigram")
      .def(py::init([](const std::vector<std::tuple<py::bytes, double, int>>& pieces, int unk_id) {
        std::vector<std::tuple<std::string, double, int>> p;
        for (const auto& t : pieces) p.emplace_back(std::string(std::get<0>(t)), std::get<1>(t), std::get<2>(t));
        return new Unigram(p, unk_id);
      }))
      .def("encode", [](Unigram& self, const py::bytes& b) {
        std::string s = b;
        std::vector<int> ids;
        {
          py::gil_scoped_release release;
          ids = self.encode(s);
        }
        return to_array(ids);
      });
}
