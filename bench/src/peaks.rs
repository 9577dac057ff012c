//! The hardware limits the trainer figures are set against, measured in the same run: GEMM
//! (square matmul) and 3x3 convolution (forward, the ResNet-18 layer2/layer3 shapes,
//! channels_last) in fp32 and bf16, and their rows in the `peaks` section.

use crate::cli::Plan;
use crate::measure::time_median;
use crate::table::Row;
use tch::{Device, Kind, Tensor};

pub struct Peaks {
    pub gemm_fp32: f64,
    pub gemm_bf16: f64,
    pub conv_fp32: f64,
    pub conv_bf16: f64,
    pub conv_shapes: String,
}

fn gemm_gflops(kind: Kind, n: i64, reps: usize) -> f64 {
    let a = Tensor::randn([n, n], (Kind::Float, Device::Cpu)).to_kind(kind);
    let b = Tensor::randn([n, n], (Kind::Float, Device::Cpu)).to_kind(kind);
    let t = tch::no_grad(|| {
        time_median(reps, || {
            let _ = std::hint::black_box(a.matmul(&b));
        })
    });
    2.0 * (n as f64).powi(3) / t / 1e9
}

/// Best forward GFLOP/s of a 3x3 stride-1 convolution over the ResNet-18 shapes that carry most
/// of its FLOPs at 32 px (layer2: 128 ch 16x16, layer3: 256 ch 8x8), channels_last.
fn conv_gflops(kind: Kind, batch: i64, reps: usize) -> f64 {
    let mut best: f64 = 0.0;
    for (c, hw) in [(128i64, 16i64), (256, 8)] {
        let x = dspnet_model::to_channels_last(
            &Tensor::randn([batch, c, hw, hw], (Kind::Float, Device::Cpu)).to_kind(kind),
        );
        let w = dspnet_model::to_channels_last(
            &(Tensor::randn([c, c, 3, 3], (Kind::Float, Device::Cpu)) * 0.05).to_kind(kind),
        );
        let t = tch::no_grad(|| {
            time_median(reps, || {
                let _ = std::hint::black_box(x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1));
            })
        });
        best = best.max(2.0 * (batch * c * c * 9 * hw * hw) as f64 / t / 1e9);
    }
    best
}

pub fn measure_peaks(plan: &Plan) -> Peaks {
    Peaks {
        gemm_fp32: gemm_gflops(Kind::Float, plan.gemm_n, plan.peak_reps),
        gemm_bf16: gemm_gflops(Kind::BFloat16, plan.gemm_n, plan.peak_reps),
        conv_fp32: conv_gflops(Kind::Float, plan.conv_batch, plan.peak_reps),
        conv_bf16: conv_gflops(Kind::BFloat16, plan.conv_batch, plan.peak_reps),
        conv_shapes: format!(
            "best of [{b},128,16,16] and [{b},256,8,8] inputs, 3x3 same-channel weight, channels_last, forward, median of {} runs",
            plan.peak_reps,
            b = plan.conv_batch
        ),
    }
}

/// The `peaks` section's rows.
pub fn figures(plan: &Plan, peaks: &Peaks, rows: &mut Vec<Row>) {
    let s = "peaks";
    rows.push(Row::new(
        s,
        "GEMM fp32",
        peaks.gemm_fp32,
        "GFLOP/s",
        format!("{n}x{n} @ {n}x{n} matmul, median of {} runs", plan.peak_reps, n = plan.gemm_n),
    ));
    rows.push(
        Row::new(s, "GEMM bf16", peaks.gemm_bf16, "GFLOP/s", format!("{n}x{n} @ {n}x{n} matmul", n = plan.gemm_n))
            .against("GEMM fp32", peaks.gemm_fp32),
    );
    rows.push(Row::new(
        s,
        "3x3 convolution fp32, channels_last",
        peaks.conv_fp32,
        "GFLOP/s",
        peaks.conv_shapes.clone(),
    ));
    rows.push(
        Row::new(s, "3x3 convolution bf16, channels_last", peaks.conv_bf16, "GFLOP/s", peaks.conv_shapes.clone())
            .against("3x3 convolution fp32", peaks.conv_fp32),
    );
}
