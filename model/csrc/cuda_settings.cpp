// Process-wide GPU math settings for dspnet-model (src/cuda_settings.rs) that tch does not
// expose: TF32 for fp32 convolutions (cuDNN) and matrix products (cuBLAS), and cuDNN's benchmark
// mode. They live in at::globalContext() (libtorch_cpu) and so compile without CUDA headers; on a
// CPU-only libtorch they are stored and unused. Every function catches C++ exceptions.
#include <ATen/Context.h>

extern "C" {

// Sets TF32 for fp32 cuDNN convolutions and cuBLAS matrix products. Returns 0, or 1 if libtorch threw.
int dspnet_set_tf32(int enabled) {
  try {
    at::globalContext().setAllowTF32CuDNN(enabled != 0);
    at::globalContext().setAllowTF32CuBLAS(enabled != 0);
    return 0;
  } catch (...) {
    return 1;
  }
}

// Writes the TF32 flags (cuDNN, cuBLAS). Returns 0, or 1 if libtorch threw.
int dspnet_get_tf32(int* cudnn, int* cublas) {
  try {
    *cudnn = at::globalContext().allowTF32CuDNN() ? 1 : 0;
    *cublas = at::globalContext().allowTF32CuBLAS() ? 1 : 0;
    return 0;
  } catch (...) {
    return 1;
  }
}

// Sets cuDNN's benchmark mode (autotune each convolution shape once). Returns 0, or 1 if it threw.
int dspnet_set_cudnn_benchmark(int enabled) {
  try {
    at::globalContext().setBenchmarkCuDNN(enabled != 0);
    return 0;
  } catch (...) {
    return 1;
  }
}
}
