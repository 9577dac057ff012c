// NCCL backend of dspnet-dist: creates c10d's ProcessGroupNCCL (libtorch_cuda.so). Compiled by
// build.rs only where CUDA's full headers (with crt/host_config.h, e.g. from the CUDA toolkit
// or the nvidia-cuda-nvcc wheel) and nccl.h are found; otherwise the crate builds without NCCL.

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

c10::intrusive_ptr<c10d::Backend> dspnet_make_nccl(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                   int world, std::chrono::milliseconds timeout) {
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, opts);
}
