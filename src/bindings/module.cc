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

#include <cstdint>
#include <string>

#include "hpc_ops/hpc_ops.h"
#include "rowwise/rowwise_config.h"

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
}
