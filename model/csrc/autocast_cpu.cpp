// CPU autocast switches for dspnet-model (src/autocast.rs). tch 0.26 only exposes the
// device-less at::autocast::set_enabled, which is CUDA autocast; CPU autocast needs the
// device-typed calls below. Every function catches C++ exceptions: nothing unwinds into Rust.
#include <ATen/autocast_mode.h>

extern "C" {

// Writes the calling thread's CPU autocast state (enabled flag, dtype as c10::ScalarType code).
// Returns 0, or 1 if libtorch threw.
int dspnet_autocast_cpu_get(int* enabled, int* dtype) {
  try {
    *enabled = at::autocast::is_autocast_enabled(at::kCPU) ? 1 : 0;
    *dtype = static_cast<int>(at::autocast::get_autocast_dtype(at::kCPU));
    return 0;
  } catch (...) {
    return 1;
  }
}

// Sets the calling thread's CPU autocast state. Returns 0, or 1 if libtorch threw.
int dspnet_autocast_cpu_set(int enabled, int dtype) {
  try {
    at::autocast::set_autocast_dtype(at::kCPU, static_cast<at::ScalarType>(dtype));
    at::autocast::set_autocast_enabled(at::kCPU, enabled != 0);
    return 0;
  } catch (...) {
    return 1;
  }
}

// Autocast region nesting (as torch.autocast's __enter__/__exit__): increment returns the new
// depth; decrement returns the new depth and clears the weight-cast cache when it reaches 0.
// Both return -1 if libtorch threw.
int dspnet_autocast_enter() {
  try {
    return at::autocast::increment_nesting();
  } catch (...) {
    return -1;
  }
}

int dspnet_autocast_exit() {
  try {
    int depth = at::autocast::decrement_nesting();
    if (depth == 0) {
      at::autocast::clear_cache();
    }
    return depth;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
