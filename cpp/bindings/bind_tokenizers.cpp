// Bindings of the tokenizer cores (cpp/tokenizers). Text crosses the boundary as UTF-8
// bytes (the Python layer encodes with surrogatepass); ids come back as int32 arrays.
// Every call that scans text releases the GIL.
#include <algorithm>
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

// A list/tuple of str as UTF-8 views, valid while this object lives. str uses
// CPython's cached UTF-8 (no copy); a str with lone surrogates is encoded with surrogatepass,
// as the single-text path does.
struct TextBatch {
  std::vector<tx::tok::TextRef> refs;
  py::object items;                 // a tuple holding a reference to every text
  std::vector<py::object> encoded;  // surrogatepass encodings
};

TextBatch texts_from(const py::handle& seq, const std::string& where) {
  if (PyUnicode_Check(seq.ptr()) || PyBytes_Check(seq.ptr()))
    throw py::type_error(where + ": texts must be a list of str, got a single " + Py_TYPE(seq.ptr())->tp_name);
  PyObject* tup = PySequence_Tuple(seq.ptr());
  if (tup == nullptr) {
    PyErr_Clear();
    throw py::type_error(where + ": texts must be a list of str, got " + Py_TYPE(seq.ptr())->tp_name);
  }
  TextBatch b;
  b.items = py::reinterpret_steal<py::object>(tup);
  Py_ssize_t n = PyTuple_GET_SIZE(tup);
  b.refs.resize(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* o = PyTuple_GET_ITEM(tup, i);
    const char* p = nullptr;
    Py_ssize_t len = 0;
    if (PyUnicode_Check(o)) {
      p = PyUnicode_AsUTF8AndSize(o, &len);
      if (p == nullptr) {  // lone surrogates
        PyErr_Clear();
        PyObject* e = PyUnicode_AsEncodedString(o, "utf-8", "surrogatepass");
        if (e == nullptr) throw py::error_already_set();
        b.encoded.push_back(py::reinterpret_steal<py::object>(e));
        p = PyBytes_AS_STRING(e);
        len = PyBytes_GET_SIZE(e);
      }
    } else {
      throw py::type_error(where + ": texts[" + std::to_string(i) + "] must be str, got " + Py_TYPE(o)->tp_name);
    }
    b.refs[static_cast<size_t>(i)] = {p, static_cast<size_t>(len)};
  }
  return b;
}

// (ids int32 (total,), offsets int64 (n + 1,)): text i's ids are ids[offsets[i]:offsets[i + 1]].
py::tuple flat_to_arrays(const tx::tok::FlatIds& f) {
  py::array_t<int32_t> ids(static_cast<py::ssize_t>(f.ids.size()));
  if (!f.ids.empty()) std::memcpy(ids.mutable_data(), f.ids.data(), f.ids.size() * sizeof(int32_t));
  py::array_t<int64_t> off(static_cast<py::ssize_t>(f.offsets.size()));
  std::memcpy(off.mutable_data(), f.offsets.data(), f.offsets.size() * sizeof(int64_t));
  return py::make_tuple(ids, off);
}

template <class T>
py::tuple batch_encode(T& self, const py::handle& texts, int n_threads, const std::string& where) {
  TextBatch b = texts_from(texts, where);
  tx::tok::FlatIds f;
  {
    py::gil_scoped_release release;
    self.encode_batch(b.refs.data(), b.refs.size(), n_threads > 0 ? n_threads : tx::num_threads(), f);
  }
  return flat_to_arrays(f);
}

// Batch assembly (see _base.build_rows, the NumPy version kept as fallback): each row is the
// concatenation of parts, ("ids", starts, lens, type) = flat[starts[i]:starts[i]+lens[i]] or
// ("tok", token, present|None, type) = one token where present[i]. Every start/length is checked
// against the flat buffer before anything is written.
struct Part {
  bool is_ids;
  const int64_t* starts = nullptr;
  const int64_t* lens = nullptr;
  int64_t token = 0;
  const uint8_t* present = nullptr;
  int64_t type = 0;
};

py::tuple assemble(const py::array& flat_a, const py::list& parts_l, int64_t n, int64_t min_width, bool padded,
                   bool left, int64_t pad_id, bool with_types) {
  py::array_t<int32_t, py::array::c_style | py::array::forcecast> flat(flat_a);
  if (flat.ndim() != 1) throw py::value_error("tok_assemble: flat must be 1-D");
  if (n < 0) throw py::value_error("tok_assemble: n must be >= 0");
  const int64_t flat_len = flat.size();
  std::vector<Part> parts;
  std::vector<py::object> keep;
  std::vector<int64_t> total(static_cast<size_t>(n), 0);
  for (const auto& h : parts_l) {
    py::tuple t = py::reinterpret_borrow<py::tuple>(h);
    Part p;
    std::string kind = py::str(t[0]);
    if (kind == "ids") {
      p.is_ids = true;
      auto st = py::array_t<int64_t, py::array::c_style | py::array::forcecast>(t[1]);
      auto ln = py::array_t<int64_t, py::array::c_style | py::array::forcecast>(t[2]);
      if (st.ndim() != 1 || ln.ndim() != 1 || st.size() != n || ln.size() != n)
        throw py::value_error("tok_assemble: starts / lens must have n entries");
      p.starts = st.data();
      p.lens = ln.data();
      p.type = t[3].cast<int64_t>();
      for (int64_t i = 0; i < n; ++i) {
        if (p.lens[i] < 0 || p.starts[i] < 0 || p.starts[i] > flat_len - p.lens[i])
          throw py::value_error("tok_assemble: row " + std::to_string(i) + " is outside the flat buffer");
        total[size_t(i)] += p.lens[i];
      }
      keep.push_back(st);
      keep.push_back(ln);
    } else if (kind == "tok") {
      p.is_ids = false;
      p.token = t[1].cast<int64_t>();
      if (!t[2].is_none()) {
        auto pr = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>(t[2]);
        if (pr.ndim() != 1 || pr.size() != n) throw py::value_error("tok_assemble: present must have n entries");
        p.present = pr.data();
        keep.push_back(pr);
      }
      p.type = t[3].cast<int64_t>();
      for (int64_t i = 0; i < n; ++i) total[size_t(i)] += (p.present == nullptr || p.present[i]) ? 1 : 0;
    } else {
      throw py::value_error("tok_assemble: unknown part kind " + kind);
    }
    parts.push_back(p);
  }
  int64_t width = 0, size = 0;
  std::vector<int64_t> base(static_cast<size_t>(n) + 1, 0);  // where row i starts in the output
  if (padded) {
    for (int64_t i = 0; i < n; ++i) width = std::max(width, total[size_t(i)]);
    width = std::max(width, min_width);
    for (int64_t i = 0; i < n; ++i) base[size_t(i)] = i * width + (left ? width - total[size_t(i)] : 0);
    size = n * width;
  } else {
    for (int64_t i = 0; i < n; ++i) base[size_t(i) + 1] = base[size_t(i)] + total[size_t(i)];
    size = base[size_t(n)];
  }
  py::array_t<int64_t> ids(size), types(with_types ? size : 0), mask(padded ? size : 0);
  int64_t* I = ids.mutable_data();
  int64_t* T = with_types ? types.mutable_data() : nullptr;
  int64_t* M = padded ? mask.mutable_data() : nullptr;
  const int32_t* F = flat.data();
  {
    py::gil_scoped_release release;
    if (padded) {
      std::fill(I, I + size, pad_id);
      if (T) std::fill(T, T + size, int64_t(0));
      std::fill(M, M + size, int64_t(0));
    }
    for (int64_t i = 0; i < n; ++i) {
      int64_t o = base[size_t(i)];
      if (M) std::fill(M + o, M + o + total[size_t(i)], int64_t(1));
      for (const Part& p : parts) {
        if (p.is_ids) {
          const int32_t* src = F + p.starts[i];
          for (int64_t k = 0; k < p.lens[i]; ++k) I[o + k] = src[k];
          if (T) std::fill(T + o, T + o + p.lens[i], p.type);
          o += p.lens[i];
        } else if (p.present == nullptr || p.present[i]) {
          I[o] = p.token;
          if (T) T[o] = p.type;
          ++o;
        }
      }
    }
  }
  py::array_t<int64_t> off(n + 1);
  std::memcpy(off.mutable_data(), base.data(), size_t(n + 1) * sizeof(int64_t));
  if (padded) {
    ids.resize({n, width});
    mask.resize({n, width});
    if (with_types) types.resize({n, width});
  }
  return py::make_tuple(ids, mask, with_types ? py::object(types) : py::none(), off, width);
}

}  // namespace

void bind_tokenizers(py::module_& m) {
  using tx::tok::ByteLevelBPE;
  using tx::tok::BPETrainer;
  m.def("tok_unicode_version", [] { return std::string(tx::tok::unicode_version()); });
  m.def("tok_assemble", &assemble, py::arg("flat"), py::arg("parts"), py::arg("n"), py::arg("min_width"),
        py::arg("padded"), py::arg("left"), py::arg("pad_id"), py::arg("with_types"),
        "(ids, attention_mask, token_type_ids|None, row offsets, width) of a batch; see _base.build_rows");
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
      .def("encode_batch", [](ByteLevelBPE& self, const py::handle& texts, int n_threads, const std::string& where) {
             return batch_encode(self, texts, n_threads, where);
           }, py::arg("texts"), py::arg("n_threads") = 0, py::arg("where") = "encode_batch",
           "list of str -> (ids int32, offsets int64 (n+1,)); n_threads <= 0: tx.get_num_threads()")
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
      .def("encode_batch", [](WordPiece& self, const py::handle& texts, int n_threads, const std::string& where) {
             return batch_encode(self, texts, n_threads, where);
           }, py::arg("texts"), py::arg("n_threads") = 0, py::arg("where") = "encode_batch")
      .def("basic_tokenize", [](const WordPiece& self, const py::bytes& b) {
        std::vector<std::string> w = self.basic_tokenize(std::string(b));
        py::list out;
        for (const auto& x : w) out.append(py::bytes(x));
        return out;
      });
  m.def("unigram_estep", [](const std::vector<std::pair<py::bytes, double>>& pieces,
                            const std::vector<py::bytes>& words, const std::vector<int64_t>& counts, int n_threads) {
    if (words.size() != counts.size()) throw py::value_error("unigram_estep: words and counts differ in length");
    std::vector<std::pair<std::string, double>> p;
    for (const auto& kv : pieces) p.emplace_back(std::string(kv.first), kv.second);
    std::vector<std::string> w(words.begin(), words.end());
    std::vector<double> expected;
    double loglik;
    {
      py::gil_scoped_release release;
      loglik = tx::tok::unigram_estep(p, w, counts, expected, n_threads > 0 ? n_threads : tx::num_threads());
    }
    py::array_t<double> e(static_cast<py::ssize_t>(expected.size()));
    if (!expected.empty()) std::memcpy(e.mutable_data(), expected.data(), expected.size() * sizeof(double));
    return py::make_tuple(e, loglik);
  }, py::arg("pieces"), py::arg("words"), py::arg("counts"), py::arg("n_threads") = 1);
  m.def("unigram_substrings", [](const py::handle& words, const std::vector<int64_t>& counts, int max_chars,
                                 int64_t min_count) {
    TextBatch b = texts_from(words, "unigram_substrings");
    if (b.refs.size() != counts.size()) throw py::value_error("unigram_substrings: words and counts differ in length");
    std::vector<std::pair<std::string_view, int64_t>> out;
    {
      py::gil_scoped_release release;
      tx::tok::unigram_substrings(b.refs.data(), counts.data(), b.refs.size(), max_chars, min_count, out);
    }
    py::list subs;
    py::array_t<int64_t> freq(static_cast<py::ssize_t>(out.size()));
    int64_t* f = freq.mutable_data();
    for (size_t i = 0; i < out.size(); ++i) {
      PyObject* u = PyUnicode_DecodeUTF8(out[i].first.data(), static_cast<Py_ssize_t>(out[i].first.size()),
                                         "surrogatepass");
      if (u == nullptr) throw py::error_already_set();
      subs.append(py::reinterpret_steal<py::object>(u));
      f[i] = out[i].second;
    }
    return py::make_tuple(subs, freq);
  }, py::arg("words"), py::arg("counts"), py::arg("max_chars"), py::arg("min_count") = 2);
  m.def("unigram_alt_scores", [](const std::vector<std::pair<py::bytes, double>>& pieces) {
    std::vector<std::pair<std::string, double>> p;
    for (const auto& kv : pieces) p.emplace_back(std::string(kv.first), kv.second);
    std::vector<double> out;
    {
      py::gil_scoped_release release;
      tx::tok::unigram_alt_scores(p, out);
    }
    py::array_t<double> a(static_cast<py::ssize_t>(out.size()));
    if (!out.empty()) std::memcpy(a.mutable_data(), out.data(), out.size() * sizeof(double));
    return a;
  });
  using tx::tok::Unigram;
  py::class_<Unigram>(m, "Unigram")
      .def(py::init([](const std::vector<std::tuple<py::bytes, double, int>>& pieces, int unk_id,
                       const std::vector<std::pair<py::bytes, int>>& specials, int split, bool metaspace_split,
                       int prepend) {
             std::vector<std::tuple<std::string, double, int>> p;
             for (const auto& t : pieces) p.emplace_back(std::string(std::get<0>(t)), std::get<1>(t), std::get<2>(t));
             std::vector<std::pair<std::string, int>> sp;
             for (const auto& kv : specials) sp.emplace_back(std::string(kv.first), kv.second);
             tx::tok::UnigramOptions o;
             o.split = split;
             o.metaspace_split = metaspace_split;
             o.prepend = prepend;
             return new Unigram(p, unk_id, std::move(sp), o);
           }), py::arg("pieces"), py::arg("unk_id"), py::arg("specials") = std::vector<std::pair<py::bytes, int>>(),
           py::arg("split") = 0, py::arg("metaspace_split") = true, py::arg("prepend") = 1)
      .def("encode", [](Unigram& self, const py::bytes& b) {
        std::string s = b;
        std::vector<int> ids;
        {
          py::gil_scoped_release release;
          ids = self.encode(s);
        }
        return to_array(ids);
      })
      .def("encode_batch", [](Unigram& self, const py::handle& texts, int n_threads, const std::string& where) {
        return batch_encode(self, texts, n_threads, where);
      }, py::arg("texts"), py::arg("n_threads") = 0, py::arg("where") = "encode_batch");
}
