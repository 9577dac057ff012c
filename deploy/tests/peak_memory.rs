//! The peak-memory method of `dspnet-profile` (`dspnet_core::memory::PeakRss`) against
//! allocations of known size. One test in its own process: resident memory is per process, so
//! no other test may allocate while it measures.

use dspnet_core::memory::PeakRss as Measurement;
use tch::{Device, Kind, Tensor};

const MIB: u64 = 1 << 20;

/// `count` fp32 tensors of `each` bytes, every page written (ones).
fn allocate(count: usize, each: u64) -> Vec<Tensor> {
    (0..count).map(|_| Tensor::ones([(each / 4) as i64], (Kind::Float, Device::Cpu))).collect()
}

#[test]
fn peak_rss_delta_counts_known_allocations() {
    // warm libtorch up (thread pool, allocator) outside the measurements
    drop(allocate(4, MIB));

    // one 64 MiB tensor: the delta is 64 MiB plus at most a few pages of bookkeeping
    let m = Measurement::start().expect("Linux /proc/self/clear_refs and status");
    let t = allocate(1, 64 * MIB);
    let d = m.peak_delta().unwrap();
    drop(t);
    assert!((64 * MIB..64 * MIB + 4 * MIB).contains(&d), "64 MiB tensor measured as {d} bytes");

    // freed memory is not counted once it is gone: nothing allocated, (almost) nothing measured
    let m = Measurement::start().unwrap();
    let d = m.peak_delta().unwrap();
    assert!(d < MIB, "nothing allocated but {d} bytes measured");

    // 128 tensors of 256 KiB (heap-sized chunks that malloc keeps after free): allocated, freed,
    // then allocated again in a new measurement. Without returning the freed heap to the OS the
    // second round would reuse resident pages and measure ~0; the method must count 32 MiB again.
    drop(allocate(128, 256 * 1024));
    let m = Measurement::start().unwrap();
    let ts = allocate(128, 256 * 1024);
    let d = m.peak_delta().unwrap();
    drop(ts);
    assert!((32 * MIB..32 * MIB + 4 * MIB).contains(&d), "128 x 256 KiB measured as {d} bytes");
}
