# SPDX-License-Identifier: Apache-2.0
# Locates the CUTLASS/CuTe headers: CUTLASS_DIR (a CUTLASS checkout or install
# prefix) if given, else the PyPI package nvidia-cutlass (pinned in
# pyproject.toml and .ci/run), whose headers lie under
# cutlass_library/source/include. Nothing is vendored.
set(HPC_OPS_CUTLASS_PIN "4.2.0.0")
set(CUTLASS_DIR "$ENV{CUTLASS_DIR}" CACHE PATH "CUTLASS checkout or prefix (optional)")

if(CUTLASS_DIR)
  set(_cutlass_include "${CUTLASS_DIR}/include")
else()
  find_package(Python 3.9 QUIET COMPONENTS Interpreter)
  if(Python_Interpreter_FOUND)
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -c
              "import importlib.util, os; s = importlib.util.find_spec('cutlass_library'); print(os.path.join(list(s.submodule_search_locations)[0], 'source', 'include') if s else '')"
      OUTPUT_VARIABLE _cutlass_include OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  endif()
endif()

if(NOT _cutlass_include OR NOT EXISTS "${_cutlass_include}/cute/tensor.hpp")
  message(FATAL_ERROR
    "CUTLASS/CuTe headers not found (looked in '${_cutlass_include}'). "
    "Install them with: python3 -m pip install nvidia-cutlass==${HPC_OPS_CUTLASS_PIN}, "
    "or point CUTLASS_DIR at a CUTLASS checkout.")
endif()
set(HPC_OPS_CUTLASS_INCLUDE_DIR "${_cutlass_include}")
message(STATUS "hpc_ops: CUTLASS/CuTe headers from ${HPC_OPS_CUTLASS_INCLUDE_DIR}")
