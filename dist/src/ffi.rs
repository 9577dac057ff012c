//! Declarations of the C ABI in `shim.cpp`. Every function returning `*mut c_char` returns NULL
//! on success or a malloc'd one-line error freed with [`dspnet_dist_free_string`].

use std::ffi::{c_char, c_int, c_void};
use torch_sys::C_tensor;

extern "C" {
    pub fn dspnet_dist_free_string(s: *mut c_char);
    #[allow(clippy::too_many_arguments)]
    pub fn dspnet_dist_new(
        host: *const c_char,
        port: u16,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        agent_store: c_int,
        prefix: *const c_char,
        backend: *const c_char,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    pub fn dspnet_dist_free(h: *mut c_void);
    pub fn dspnet_dist_stop_heartbeat(h: *mut c_void);
    pub fn dspnet_dist_all_reduce(h: *mut c_void, t: *mut C_tensor, avg: c_int) -> *mut c_char;
    pub fn dspnet_dist_broadcast(h: *mut c_void, t: *mut C_tensor, root: c_int) -> *mut c_char;
    pub fn dspnet_dist_barrier(h: *mut c_void) -> *mut c_char;
    pub fn dspnet_dist_all_reduce_sum_autograd(
        h: *mut c_void,
        x: *const C_tensor,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    pub fn dspnet_dist_find_dead(h: *mut c_void, window_ms: i64, dead: *mut c_int) -> *mut c_char;
}
