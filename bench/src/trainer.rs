//! The `trainer` section: the single-width BYOL and all-widths DSPNet steps in each compute
//! format (fp32, the fast path bf16 + channels_last, and with the full plan fp32 NCHW and CPU
//! autocast), their images/s, achieved GFLOP/s against the peaks, peak memory, and the fast
//! path's ratios with their targets.

use crate::cli::Plan;
use crate::peaks::Peaks;
use crate::step::{step_bench, StepResult};
use crate::table::{gib, Row};
use dspnet_model::ComputeFormat;
use tch::Kind;

fn step_note(plan: &Plan, r: &StepResult) -> String {
    let mut s = format!(
        "batch {}, 32 px, median of {} steps after {} warm-up: {:.2} s/step, {:.2} GFLOP/image",
        plan.batch,
        plan.steps,
        plan.warmup,
        r.step_s,
        r.flops_per_image / 1e9
    );
    if let Some(c) = r.cpu_s {
        s += &format!(", {c:.2} CPU s/step");
    }
    if let Some(c) = r.cpu_share {
        s += &format!(", CPU share {:.0}%", 100.0 * c);
    }
    s
}

struct Variant {
    label: &'static str,
    format: ComputeFormat,
}

struct VariantResult {
    label: &'static str,
    bf16: bool,
    single: StepResult,
    all: StepResult,
}

/// The `trainer` section's rows; returns the single-width images/s of the fast path and of
/// our fp32 step (for the peer's ratios).
pub fn figures(
    plan: &Plan,
    peaks: &Peaks,
    auto: ComputeFormat,
    native_bf16: bool,
    rows: &mut Vec<Row>,
) -> Result<(Option<f64>, Option<f64>), String> {
    // "fp32" is our fp32 step as the presets run it (channels_last = true).
    let mut variants = vec![
        Variant { label: "fp32", format: ComputeFormat { kind: Kind::Float, channels_last: true, autocast: false } },
        Variant {
            label: "fast path (bf16 + channels_last)",
            format: ComputeFormat { kind: Kind::BFloat16, channels_last: true, autocast: false },
        },
    ];
    if plan.extra_variants {
        variants.push(Variant {
            label: "fp32 contiguous (NCHW)",
            format: ComputeFormat { kind: Kind::Float, channels_last: false, autocast: false },
        });
        variants.push(Variant {
            label: "bf16 + channels_last via CPU autocast",
            format: ComputeFormat { kind: Kind::BFloat16, channels_last: true, autocast: true },
        });
    }
    let mut results = Vec::new();
    for v in &variants {
        eprintln!("trainer: {} single-width BYOL step ...", v.label);
        let single = step_bench(plan, false, v.format)?;
        eprintln!("trainer: {} all-widths DSPNet step ...", v.label);
        let all = step_bench(plan, true, v.format)?;
        results.push(VariantResult { label: v.label, bf16: v.format.kind == Kind::BFloat16, single, all });
    }
    let s = "trainer";
    for r in &results {
        let (peak_name, peak) =
            if r.bf16 { ("3x3 conv peak bf16", peaks.conv_bf16) } else { ("3x3 conv peak fp32", peaks.conv_fp32) };
        let is_fast = r.label.starts_with("fast path");
        rows.push(Row::new(
            s,
            format!("{}: single-width BYOL step", r.label),
            r.single.images_per_s,
            "images/s",
            step_note(plan, &r.single),
        ));
        let mut all = Row::new(
            s,
            format!("{}: all-widths DSPNet step", r.label),
            r.all.images_per_s,
            "images/s",
            format!(
                "{}; ratio = step time all-widths / single-width (FLOP ratio {:.2})",
                step_note(plan, &r.all),
                r.all.flops_per_image / r.single.flops_per_image
            ),
        );
        all.ratio = Some(r.all.step_s / r.single.step_s);
        all.ratio_unit = "x time";
        all.baseline = Some((format!("{} single-width step", r.label), r.single.images_per_s));
        if is_fast {
            all = all.target("<= 1.8x", false, 1.8);
        }
        rows.push(all);
        let mut g = Row::new(
            s,
            format!("{}: single-width step, achieved", r.label),
            r.single.gflops(),
            "GFLOP/s",
            "training FLOPs (module docs) x images/s",
        )
        .of_peak(peak_name, peak);
        if is_fast {
            g = g.target(">= 60%", true, 60.0);
        }
        rows.push(g);
        rows.push(
            Row::new(s, format!("{}: all-widths step, achieved", r.label), r.all.gflops(), "GFLOP/s", "")
                .of_peak(peak_name, peak),
        );
        let gemm = if r.bf16 { peaks.gemm_bf16 } else { peaks.gemm_fp32 };
        rows.push(
            Row::new(s, format!("{}: single-width step vs GEMM peak", r.label), r.single.gflops(), "GFLOP/s", "")
                .of_peak(if r.bf16 { "GEMM bf16" } else { "GEMM fp32" }, gemm),
        );
        for (what, x) in [("single-width", &r.single), ("all-widths", &r.all)] {
            if let Some(p) = x.peak_rss {
                let start = x
                    .rss_start
                    .map(|b| {
                        format!(
                            "; {} resident before the first step (libtorch, weights, teacher, optimiser state)",
                            gib(b)
                        )
                    })
                    .unwrap_or_default();
                rows.push(Row::new(
                    s,
                    format!("{}: {what} step peak memory", r.label),
                    p as f64,
                    "bytes",
                    format!("peak RSS over warm-up and timed steps = {}{start}", gib(p)),
                ));
            }
        }
    }
    let fp32 = results.iter().find(|r| r.label == "fp32").map(|r| r.single.images_per_s);
    let fast = results.iter().find(|r| r.label.starts_with("fast path")).map(|r| r.single.images_per_s);
    if let (Some(fp32), Some(fast)) = (fp32, fast) {
        rows.push(
            Row::new(
                s,
                "fast path vs our fp32: single-width step",
                fast,
                "images/s",
                format!(
                    "precision auto on this machine = {}{}",
                    auto.name(),
                    if native_bf16 { "" } else { " (no AMX / AVX512-BF16 in /proc/cpuinfo: oneDNN emulates bf16)" }
                ),
            )
            .against("our fp32 single-width step", fp32)
            .target(">= 4x", true, 4.0),
        );
    }
    if let (Some(e), Some(a)) = (
        results.iter().find(|r| r.label.starts_with("fast path")),
        results.iter().find(|r| r.label.contains("autocast")),
    ) {
        rows.push(
            Row::new(
                s,
                "CPU autocast vs explicit bf16 casts: single-width step",
                a.single.images_per_s,
                "images/s",
                "same kernels, different place of the casts",
            )
            .against("explicit casts (fast path)", e.single.images_per_s),
        );
        rows.push(
            Row::new(s, "CPU autocast vs explicit bf16 casts: all-widths step", a.all.images_per_s, "images/s", "")
                .against("explicit casts (fast path)", e.all.images_per_s),
        );
    }
    Ok((fast, fp32))
}
