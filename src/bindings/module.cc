// SPDX-License-Identifier: Apache-2.0
// The Python module hpc_ops._C (nanobind). Deliberately boring: it turns
// tensor descriptors into hpc_ops::Tensor views, calls the C++ entry point and
// maps hpc_ops::Error to ValueError (bad arguments) or RuntimeError (CUDA).
// No checks, no allocation, no logic.
//
// A tensor arrives as the tuple (data_ptr, dtype_code, shape, strides, device)
// built by python/hpc_ops/_tensor.py; device is -1 for host memory, else the
// CUDA device index. NOTE: the tuple, not a DLPack capsule, because torch's
// __dlpack__ costs several microseconds per tensor in Python, which alone
// would exceed the eager-mode overhead budget of a small operator.
#include <Python.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>

#include <cstdint>
#include <string>
#include <tuple>

#include "hpc_ops/hpc_ops.h"
#include "rowwise/rowwise_config.h"
#ifdef HPC_OPS_HAS_GEMM
#include "gemm/router_gemm_config.h"
#endif
#ifdef HPC_OPS_HAS_COMM
#include "comm/allreduce_config.h"
#endif

namespace nb = nanobind;
using namespace nb::literals;
using namespace hpc_ops;

namespace {

int64_t as_int(PyObject* o, const char* name) {
  const long long v = PyLong_AsLongLong(o);
  if (v == -1 && PyErr_Occurred()) throw nb::python_error();
  (void)name;
  return v;
}

Tensor to_tensor(nb::handle h, const char* name) {
  PyObject* t = h.ptr();
  if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 5) {
    throw nb::type_error((std::string("hpc_ops._C: ") + name +
                          " must be a tensor descriptor (data_ptr, dtype, shape, strides, device)")
                             .c_str());
  }
  Tensor out;
  out.data = PyLong_AsVoidPtr(PyTuple_GET_ITEM(t, 0));
  if (PyErr_Occurred()) throw nb::python_error();
  const int64_t code = as_int(PyTuple_GET_ITEM(t, 1), name);
  out.dtype = (code >= 0 && code <= static_cast<int64_t>(DType::kFloat64)) ? static_cast<DType>(code)
                                                                          : DType::kUnknown;
  PyObject* shape = PyTuple_GET_ITEM(t, 2);
  PyObject* strides = PyTuple_GET_ITEM(t, 3);
  const Py_ssize_t ndim = PyTuple_Size(shape);
  if (ndim < 0 || ndim > Tensor::kMaxDims || PyTuple_Size(strides) != ndim) {
    PyErr_Clear();
    throw Error(ErrorKind::kUnsupported, std::string("hpc_ops: ") + name +
                                             " has more than 6 dims or malformed strides");
  }
  out.ndim = static_cast<int>(ndim);
  for (Py_ssize_t i = 0; i < ndim; ++i) {
    out.shape[i] = as_int(PyTuple_GET_ITEM(shape, i), name);
    out.strides[i] = as_int(PyTuple_GET_ITEM(strides, i), name);
  }
  const int64_t device = as_int(PyTuple_GET_ITEM(t, 4), name);
  out.device = device < 0 ? Device{DeviceType::kCPU, 0} : Device{DeviceType::kCUDA, int(device)};
  return out;
}

Fp8Output to_quant(int scaling, nb::handle scale) {
  Fp8Output q;
  q.scaling = static_cast<Fp8Scaling>(scaling);
  if (!scale.is_none()) q.scale = to_tensor(scale, "scale");
  return q;
}

cudaStream_t to_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

#ifdef HPC_OPS_HAS_ATTENTION
// A DecodePlanInfo crosses as a tuple of its fields, in declaration order.
using PlanTuple = std::tuple<int32_t, int32_t, int32_t, int32_t, int32_t, int32_t, int32_t,
                             int32_t, int64_t, int64_t, int32_t>;

PlanTuple from_info(const DecodePlanInfo& i) {
  return {i.batch, i.num_q_heads, i.num_kv_heads, i.head_dim, i.q_len, i.sliding_window,
          i.num_bins, i.num_slots, i.workspace_bytes, i.schedule_words,
          static_cast<int32_t>(i.kv_dtype)};
}

DecodePlanInfo to_info(const PlanTuple& t) {
  DecodePlanInfo i;
  int32_t kv_dtype = 0;
  std::tie(i.batch, i.num_q_heads, i.num_kv_heads, i.head_dim, i.q_len, i.sliding_window,
           i.num_bins, i.num_slots, i.workspace_bytes, i.schedule_words, kv_dtype) = t;
  i.kv_dtype = static_cast<DType>(kv_dtype);
  return i;
}
#endif

Tensor optional_tensor(nb::handle h, const char* name) {
  return h.is_none() ? Tensor{} : to_tensor(h, name);
}

#ifdef HPC_OPS_HAS_SAMPLING
// Sampling options cross as three tuples: params ((value, tensor or None) x 7
// in SamplingOptions order), masks (seen_mask, token_counts, allowed_mask),
// seeds ((seed, tensor or None), (offset, tensor or None)) with the scalar
// seed and offset as ints in [0, 2^64).
SamplingOptions to_sampling_options(nb::tuple params, nb::tuple masks, nb::tuple seeds) {
  static const char* const kNames[7] = {"temperature", "top_k", "top_p", "min_p",
                                        "repetition_penalty", "presence_penalty",
                                        "frequency_penalty"};
  SamplingOptions o;
  RowParam* fields[7] = {&o.temperature, &o.top_k, &o.top_p, &o.min_p, &o.repetition_penalty,
                         &o.presence_penalty, &o.frequency_penalty};
  for (int i = 0; i < 7; ++i) {
    nb::tuple pair = nb::borrow<nb::tuple>(params[i]);
    fields[i]->value = nb::cast<double>(pair[0]);
    fields[i]->tensor = optional_tensor(pair[1], kNames[i]);
  }
  o.seen_mask = optional_tensor(masks[0], "seen_mask");
  o.token_counts = optional_tensor(masks[1], "token_counts");
  o.allowed_mask = optional_tensor(masks[2], "allowed_mask");
  RowSeed* seed_fields[2] = {&o.seeds, &o.offsets};
  static const char* const kSeedNames[2] = {"seeds", "offsets"};
  for (int i = 0; i < 2; ++i) {
    nb::tuple pair = nb::borrow<nb::tuple>(seeds[i]);
    const unsigned long long v = PyLong_AsUnsignedLongLong(pair[0].ptr());
    if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) throw nb::python_error();
    seed_fields[i]->value = v;
    seed_fields[i]->tensor = optional_tensor(pair[1], kSeedNames[i]);
  }
  return o;
}
#endif

}  // namespace

NB_MODULE(_C, m) {
  m.doc() = "hpc_ops C++ core (use the hpc_ops package, not this module)";
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const Error& e) {
      const bool bad_argument =
          e.kind() == ErrorKind::kInvalidArgument || e.kind() == ErrorKind::kUnsupported;
      PyErr_SetString(bad_argument ? PyExc_ValueError : PyExc_RuntimeError, e.what());
    }
  });

  m.attr("__version__") = HPC_OPS_VERSION_STRING;
  m.def("families", [] {
    std::string f;
#ifdef HPC_OPS_HAS_NORM
    f += "norm ";
#endif
#ifdef HPC_OPS_HAS_ACTIVATION
    f += "activation ";
#endif
#ifdef HPC_OPS_HAS_QUANTIZATION
    f += "quantization ";
#endif
#ifdef HPC_OPS_HAS_ATTENTION
    f += "attention ";
#endif
#ifdef HPC_OPS_HAS_ROPE
    f += "rope ";
#endif
#ifdef HPC_OPS_HAS_GEMM
    f += "gemm ";
#endif
#ifdef HPC_OPS_HAS_SAMPLING
    f += "sampling ";
#endif
#ifdef HPC_OPS_HAS_COMM
    f += "comm ";
#endif
    return f;
  });
  m.def("rowwise_config", [](int64_t cols, int64_t rows, int sms) {
    return rowwise::choose_rowwise_config(cols, rows, sms).to_string();
  });

#ifdef HPC_OPS_HAS_NORM
  m.def("rms_norm", [](nb::handle x, nb::handle weight, float eps, nb::handle out, int scaling,
                       nb::handle scale, uintptr_t stream) {
    rms_norm(to_tensor(x, "x"), to_tensor(weight, "weight"), eps, to_tensor(out, "out"),
             to_quant(scaling, scale), to_stream(stream));
  }, "x"_a, "weight"_a, "eps"_a, "out"_a, "scaling"_a, "scale"_a.none(), "stream"_a);
  m.def("fused_add_rms_norm",
        [](nb::handle x, nb::handle residual, nb::handle weight, float eps, nb::handle out,
           nb::handle residual_out, int scaling, nb::handle scale, uintptr_t stream) {
          fused_add_rms_norm(to_tensor(x, "x"), to_tensor(residual, "residual"),
                             to_tensor(weight, "weight"), eps, to_tensor(out, "out"),
                             to_tensor(residual_out, "residual_out"), to_quant(scaling, scale),
                             to_stream(stream));
        }, "x"_a, "residual"_a, "weight"_a, "eps"_a, "out"_a, "residual_out"_a, "scaling"_a,
        "scale"_a.none(), "stream"_a);
#endif
#ifdef HPC_OPS_HAS_ACTIVATION
  m.def("act_and_mul", [](int act, nb::handle x, nb::handle out, int scaling, nb::handle scale,
                          uintptr_t stream) {
    act_and_mul(static_cast<Activation>(act), to_tensor(x, "x"), to_tensor(out, "out"),
                to_quant(scaling, scale), to_stream(stream));
  }, "act"_a, "x"_a, "out"_a, "scaling"_a, "scale"_a.none(), "stream"_a);
  m.def("act_and_mul_masked", [](int act, nb::handle x, nb::handle row_counts, nb::handle out,
                                 int scaling, nb::handle scale, uintptr_t stream) {
    act_and_mul_masked(static_cast<Activation>(act), to_tensor(x, "x"),
                       to_tensor(row_counts, "row_counts"), to_tensor(out, "out"),
                       to_quant(scaling, scale), to_stream(stream));
  }, "act"_a, "x"_a, "row_counts"_a, "out"_a, "scaling"_a, "scale"_a.none(), "stream"_a);
#endif
#ifdef HPC_OPS_HAS_QUANTIZATION
  m.def("quantize_fp8", [](nb::handle x, nb::handle out, int scaling, nb::handle scale,
                           uintptr_t stream) {
    quantize_fp8(to_tensor(x, "x"), to_tensor(out, "out"), to_quant(scaling, scale),
                 to_stream(stream));
  }, "x"_a, "out"_a, "scaling"_a, "scale"_a.none(), "stream"_a);
#endif
#ifdef HPC_OPS_HAS_ATTENTION
  m.def("make_decode_plan_info", [](int32_t batch, int32_t q_heads, int32_t kv_heads,
                                    int32_t head_dim, int32_t q_len, int32_t window, int device,
                                    int32_t kv_dtype) {
    return from_info(make_decode_plan_info(batch, q_heads, kv_heads, head_dim, q_len, window, device,
                                           static_cast<DType>(kv_dtype)));
  }, "batch"_a, "num_q_heads"_a, "num_kv_heads"_a, "head_dim"_a, "q_len"_a, "sliding_window"_a,
     "device"_a, "kv_dtype"_a);
  m.def("with_decode_bins", [](const PlanTuple& info, int32_t num_bins) {
    return from_info(with_decode_bins(to_info(info), num_bins));
  }, "info"_a, "num_bins"_a);
  m.def("plan_decode_attention", [](nb::handle kv_lens, const PlanTuple& info, nb::handle workspace,
                                    uintptr_t stream) {
    plan_decode_attention(to_tensor(kv_lens, "kv_lens"), to_info(info),
                          to_tensor(workspace, "workspace"), to_stream(stream));
  }, "kv_lens"_a, "info"_a, "workspace"_a, "stream"_a);
  m.def("decode_attention_schedule_host", [](nb::handle kv_lens, const PlanTuple& info,
                                             nb::handle schedule) {
    decode_attention_schedule_host(to_tensor(kv_lens, "kv_lens"), to_info(info),
                                   to_tensor(schedule, "schedule"));
  }, "kv_lens"_a, "info"_a, "schedule"_a);
  m.def("decode_attention",
        [](nb::handle q, nb::handle k_cache, nb::handle v_cache, nb::handle page_table,
           nb::handle kv_lens, const PlanTuple& info, nb::handle workspace, float softmax_scale,
           float soft_cap, int scheme, nb::handle q_scale, nb::handle k_scale, nb::handle v_scale,
           nb::handle out, nb::handle lse, uintptr_t stream) {
          DecodeAttentionOptions options;
          options.softmax_scale = softmax_scale;
          options.soft_cap = soft_cap;
          options.scheme = static_cast<Fp8Scheme>(scheme);
          options.q_scale = optional_tensor(q_scale, "q_scale");
          options.k_scale = optional_tensor(k_scale, "k_scale");
          options.v_scale = optional_tensor(v_scale, "v_scale");
          decode_attention(to_tensor(q, "q"), to_tensor(k_cache, "k_cache"),
                           to_tensor(v_cache, "v_cache"), to_tensor(page_table, "page_table"),
                           to_tensor(kv_lens, "kv_lens"), to_info(info),
                           to_tensor(workspace, "workspace"), options, to_tensor(out, "out"),
                           optional_tensor(lse, "lse_out"), to_stream(stream));
        }, "q"_a, "k_cache"_a, "v_cache"_a, "page_table"_a, "kv_lens"_a, "info"_a, "workspace"_a,
        "softmax_scale"_a, "soft_cap"_a, "scheme"_a, "q_scale"_a.none(), "k_scale"_a.none(),
        "v_scale"_a.none(), "out"_a, "lse"_a.none(), "stream"_a);
#endif
#ifdef HPC_OPS_HAS_ROPE
  m.def("rope_qk_norm_kv_write",
        [](nb::handle q, nb::handle k, nb::handle v, nb::handle cos_sin_cache, nb::handle k_cache,
           nb::handle v_cache, nb::handle page_table, nb::handle kv_lens, nb::handle cu_seqlens,
           nb::handle positions, nb::handle q_norm_weight, nb::handle k_norm_weight,
           nb::handle k_scale, nb::handle v_scale, nb::handle q_scale, nb::handle out_q,
           int rotary_dim, int style, int norm_order, float eps, int kv_scheme, uintptr_t stream) {
          RopeKvWriteOptions o;
          o.rotary_dim = rotary_dim;
          o.style = static_cast<RopeStyle>(style);
          o.positions = optional_tensor(positions, "positions");
          o.q_norm_weight = optional_tensor(q_norm_weight, "q_norm_weight");
          o.k_norm_weight = optional_tensor(k_norm_weight, "k_norm_weight");
          o.norm_order = static_cast<QkNormOrder>(norm_order);
          o.eps = eps;
          o.kv_scheme = static_cast<Fp8Scheme>(kv_scheme);
          o.k_scale = optional_tensor(k_scale, "k_scale");
          o.v_scale = optional_tensor(v_scale, "v_scale");
          o.q_scale = optional_tensor(q_scale, "q_scale");
          rope_qk_norm_kv_write(to_tensor(q, "q"), to_tensor(k, "k"), to_tensor(v, "v"),
                                to_tensor(cos_sin_cache, "cos_sin_cache"),
                                to_tensor(k_cache, "k_cache"), to_tensor(v_cache, "v_cache"),
                                to_tensor(page_table, "page_table"), to_tensor(kv_lens, "kv_lens"),
                                to_tensor(cu_seqlens, "cu_seqlens"), o, to_tensor(out_q, "out_q"),
                                to_stream(stream));
        }, "q"_a, "k"_a, "v"_a, "cos_sin_cache"_a, "k_cache"_a, "v_cache"_a, "page_table"_a,
        "kv_lens"_a, "cu_seqlens"_a, "positions"_a.none(), "q_norm_weight"_a.none(),
        "k_norm_weight"_a.none(), "k_scale"_a.none(), "v_scale"_a.none(), "q_scale"_a.none(),
        "out_q"_a, "rotary_dim"_a, "style"_a, "norm_order"_a, "eps"_a, "kv_scheme"_a, "stream"_a);
#endif
#ifdef HPC_OPS_HAS_GEMM
  m.def("grouped_gemm",
        [](nb::handle x, nb::handle w, nb::handle cu_seqlens, nb::handle rows_per_group,
           nb::handle row_index, nb::handle x_scale, nb::handle w_scale, nb::handle out,
           int layout, int scaling, int expected_rows_per_group, uintptr_t stream) {
          GroupedGemmOptions o;
          o.layout = static_cast<GroupedLayout>(layout);
          o.cu_seqlens = optional_tensor(cu_seqlens, "cu_seqlens");
          o.rows_per_group = optional_tensor(rows_per_group, "rows_per_group");
          o.row_index = optional_tensor(row_index, "row_index");
          o.scaling = static_cast<GemmScaling>(scaling);
          o.x_scale = optional_tensor(x_scale, "x_scale");
          o.w_scale = optional_tensor(w_scale, "w_scale");
          o.expected_rows_per_group = expected_rows_per_group;
          grouped_gemm(to_tensor(x, "x"), to_tensor(w, "w"), to_tensor(out, "out"), o,
                       to_stream(stream));
        }, "x"_a, "w"_a, "cu_seqlens"_a.none(), "rows_per_group"_a.none(), "row_index"_a.none(),
        "x_scale"_a.none(), "w_scale"_a.none(), "out"_a, "layout"_a, "scaling"_a,
        "expected_rows_per_group"_a, "stream"_a);
  m.def("router_gemm",
        [](nb::handle x, nb::handle w_parts, nb::handle out, nb::handle workspace,
           uintptr_t stream) {
          router_gemm(to_tensor(x, "x"), to_tensor(w_parts, "w_parts"), to_tensor(out, "out"),
                      optional_tensor(workspace, "workspace"), to_stream(stream));
        }, "x"_a, "w_parts"_a, "out"_a, "workspace"_a.none(), "stream"_a);
  m.def("split_router_weight",
        [](nb::handle w, nb::handle w_parts, uintptr_t stream) {
          split_router_weight(to_tensor(w, "w"), to_tensor(w_parts, "w_parts"), to_stream(stream));
        }, "w"_a, "w_parts"_a, "stream"_a);
  m.def("router_gemm_workspace_bytes", &router_gemm_workspace_bytes, "device"_a);
  m.def("router_gemm_config", [](int64_t m, int64_t n, int64_t k, int sms) {
    const gemm::RouterGemmShape s = gemm::choose_router_shape(m, n, k, sms);
    return "tile=" + std::to_string(s.token_tile) + " splits=" + std::to_string(s.splits);
  });
#endif
#ifdef HPC_OPS_HAS_SAMPLING
  m.def("sample", [](nb::handle logits, nb::tuple params, nb::tuple masks, nb::tuple seeds,
                     nb::handle out, nb::handle logprobs_out, uintptr_t stream) {
    sample(to_tensor(logits, "logits"), to_sampling_options(params, masks, seeds),
           to_tensor(out, "out"), optional_tensor(logprobs_out, "logprobs_out"), to_stream(stream));
  }, "logits"_a, "params"_a, "masks"_a, "seeds"_a, "out"_a, "logprobs_out"_a.none(), "stream"_a);
  m.def("verify_speculative",
        [](nb::handle drafts, nb::handle draft_probs, nb::handle target, nb::tuple params,
           nb::tuple masks, nb::tuple seeds, nb::handle accepted, nb::handle tokens,
           uintptr_t stream) {
          verify_speculative(to_tensor(drafts, "draft_token_ids"),
                             optional_tensor(draft_probs, "draft_probs"),
                             to_tensor(target, "target_logits"),
                             to_sampling_options(params, masks, seeds),
                             to_tensor(accepted, "accepted_out"), to_tensor(tokens, "tokens_out"),
                             to_stream(stream));
        }, "draft_token_ids"_a, "draft_probs"_a.none(), "target_logits"_a, "params"_a, "masks"_a,
        "seeds"_a, "accepted_out"_a, "tokens_out"_a, "stream"_a);
  m.def("update_seen_mask", [](nb::handle seen_mask, nb::handle tokens, uintptr_t stream) {
    update_seen_mask(to_tensor(seen_mask, "seen_mask"), to_tensor(tokens, "tokens"),
                     to_stream(stream));
  }, "seen_mask"_a, "tokens"_a, "stream"_a);
  m.def("update_token_counts", [](nb::handle token_counts, nb::handle tokens, uintptr_t stream) {
    update_token_counts(to_tensor(token_counts, "token_counts"), to_tensor(tokens, "tokens"),
                        to_stream(stream));
  }, "token_counts"_a, "tokens"_a, "stream"_a);
#endif
#ifdef HPC_OPS_HAS_COMM
  nb::class_<TpCommunicator>(m, "TpCommunicator")
      .def("__init__",
           [](TpCommunicator* self, int rank, int world, int device, int64_t hidden,
              int64_t max_tokens, int max_ctas, int64_t timeout_ms) {
             TpCommOptions o;
             o.hidden = hidden;
             o.max_tokens = max_tokens;
             o.max_ctas = max_ctas;
             o.timeout_ms = timeout_ms;
             new (self) TpCommunicator(rank, world, device, o);
           },
           "rank"_a, "world"_a, "device"_a, "hidden"_a, "max_tokens"_a, "max_ctas"_a,
           "timeout_ms"_a)
      .def("export_handle",
           [](const TpCommunicator& c) {
             const std::string h = c.export_handle();
             return nb::bytes(h.data(), h.size());
           })
      .def("connect",
           [](TpCommunicator& c, nb::list handles) {
             std::vector<std::string> v;
             for (nb::handle h : handles) {
               const nb::bytes b = nb::cast<nb::bytes>(h);
               v.emplace_back(b.c_str(), b.size());
             }
             c.connect(v);
           })
      .def("path_for", [](const TpCommunicator& c, int64_t tokens) {
        return static_cast<int>(c.path_for(tokens));
      })
      .def("device_error", &TpCommunicator::device_error)
      .def_prop_ro("rank", &TpCommunicator::rank)
      .def_prop_ro("world", &TpCommunicator::world)
      .def_prop_ro("device", &TpCommunicator::device)
      .def_prop_ro("connected", &TpCommunicator::connected)
      .def_prop_ro("failed", &TpCommunicator::failed)
      .def_prop_ro("capacity_elems", &TpCommunicator::capacity_elems)
      .def_prop_ro("one_shot_capacity_elems", &TpCommunicator::one_shot_capacity_elems);
  m.def("tp_local_group", [](int world, int device, int64_t hidden, int64_t max_tokens,
                             int max_ctas, int64_t timeout_ms) {
    TpCommOptions o;
    o.hidden = hidden;
    o.max_tokens = max_tokens;
    o.max_ctas = max_ctas;
    o.timeout_ms = timeout_ms;
    nb::list out;
    for (auto& c : TpCommunicator::local_group(world, device, o)) {
      out.append(nb::cast(c.release(), nb::rv_policy::take_ownership));
    }
    return out;
  });
  m.def("fused_allreduce_residual_rmsnorm",
        [](TpCommunicator& comm, nb::handle x, nb::handle residual, nb::handle weight, float eps,
           nb::handle out, nb::handle residual_out, int scaling, nb::handle scale,
           uintptr_t stream) {
          fused_allreduce_residual_rmsnorm(comm, to_tensor(x, "x"), to_tensor(residual, "residual"),
                                           to_tensor(weight, "weight"), eps, to_tensor(out, "out"),
                                           to_tensor(residual_out, "residual_out"),
                                           to_quant(scaling, scale), to_stream(stream));
        }, "comm"_a, "x"_a, "residual"_a, "weight"_a, "eps"_a, "out"_a, "residual_out"_a,
        "scaling"_a, "scale"_a.none(), "stream"_a);
  m.def("choose_allreduce_path", [](int world, int64_t elems, int64_t capacity, bool peer) {
    return static_cast<int>(choose_allreduce_path(
        elems, capacity, comm::one_shot_limit_elems(world, capacity), peer));
  }, "world"_a, "elems"_a, "capacity_elems"_a, "peer_access"_a);
#endif
}
