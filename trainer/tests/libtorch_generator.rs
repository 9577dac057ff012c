//! The DSPNet step must not draw from libtorch's global generator: its state is not in the
//! checkpoint (tch cannot read it), so exact resume relies on this. Alone in its own test binary
//! because the generator is process-wide and other tests would race for it.

use dspnet_trainer::{RunLength, Trainer};
use tch::{Device, Kind, Tensor};

#[test]
fn a_step_draws_nothing_from_the_libtorch_generator() {
    let mut cfg = dspnet_run::testing::tiny_config(&[0.25, 0.5, 0.75, 1.0]);
    cfg.method.random_widths = Some(1);
    tch::set_num_threads(1);
    let mut t =
        Trainer::new(&cfg, Device::Cpu, RunLength { total_steps: 10, steps_per_epoch: 5, global_batch: 4 }).unwrap();
    let x = Tensor::arange(4 * 16 * 16, (Kind::Float, Device::Cpu)).view([4, 1, 16, 16]).sin();
    let y = x.cos();
    tch::manual_seed(42);
    let expected = Tensor::randn([8], (Kind::Float, Device::Cpu));
    tch::manual_seed(42);
    for step in 0..3 {
        t.step(&x, &y, step).unwrap();
    }
    let after = Tensor::randn([8], (Kind::Float, Device::Cpu));
    assert!(
        after.equal(&expected),
        "the step consumed libtorch random numbers: its generator state would have to be checkpointed"
    );
}
