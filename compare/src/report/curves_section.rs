//! report.md's `## kNN top-1 during training` section: per width, the DSPNet and one-by-one
//! monitor curves (mean over the seeds, with min and max) against optimiser steps and training
//! FLOPs, beside the links to their plots, and the `eval.knn_k` the curves were measured with.

use crate::curves::{png_name, side, MeanCurve};
use crate::report::records::Comparison;

fn top1_cell(p: Option<&crate::curves::MeanPoint>, seeds: usize) -> String {
    match p {
        None => "-".into(),
        Some(p) if seeds < 2 => format!("{:.2}", p.top1_mean),
        Some(p) => format!("{:.2} [{:.2}, {:.2}]", p.top1_mean, p.top1_min, p.top1_max),
    }
}

/// `## kNN top-1 during training`: per width, both sides' monitor curves against steps and
/// training FLOPs, with the plots.
pub(super) fn curves_section(c: &Comparison) -> String {
    let mut s = String::from("## kNN top-1 during training\n\n");
    let m = &c.monitor;
    if !m.enabled {
        return s + "The kNN monitor was off (`compare.monitor.enabled = false`): no curves.\n\n";
    }
    let trained: Vec<&str> = c
        .runs
        .iter()
        .filter(|r| r.kind != "same-budget" && !c.curves.iter().any(|k| k.run == r.name))
        .map(|r| r.name.as_str())
        .collect();
    s += &format!(
        "The kNN monitor's top-1 (k = {} as in the kNN protocol; bank: the first {} training images, or all if fewer; classified: the first {} test images, or all) \
         at every epoch end and every {} steps, against optimiser steps and against the training FLOPs counted up to that step \
         (2 x MACs; DSPNet: its whole training, which gives every width; one-by-one: that width's own training). ",
        c.runs.iter().find_map(|r| knn_k(&r.config_toml)).map_or("eval.knn_k".into(), |k| k.to_string()),
        m.bank_images,
        m.test_images,
        m.every_steps
    );
    s += if c.seeds.len() < 2 {
        "One seed: its values.\n\n"
    } else {
        "Top-1: mean over the seeds [min, max]; GFLOPs: mean over the seeds.\n\n"
    };
    if !trained.is_empty() {
        s += &format!(
            "No monitor records (trained without the monitor, e.g. kept from an earlier version): {}.\n\n",
            trained.join(", ")
        );
    }
    let mut widths: Vec<f64> = c.mean_curves.iter().map(|k| k.width).collect();
    widths.dedup_by(|a, b| (*a - *b).abs() <= 1e-9);
    for w in widths {
        let of = |kind: &str| c.mean_curves.iter().find(|k| k.kind == kind && (k.width - w).abs() <= 1e-9);
        let (d, o) = (of("dspnet"), of("one-by-one"));
        let mut steps: Vec<u64> = d.iter().chain(o.iter()).flat_map(|k| k.points.iter().map(|p| p.step)).collect();
        steps.sort_unstable();
        steps.dedup();
        s += &format!(
            "### width {w}\n\n![kNN top-1 against steps, width {w}]({}) ![kNN top-1 against training FLOPs, width {w}]({})\n\n\
             | step | {} GFLOPs | {} kNN top-1 (%) | {} GFLOPs | {} kNN top-1 (%) |\n|---:|---:|---:|---:|---:|\n",
            png_name("steps", w),
            png_name("flops", w),
            side("dspnet"),
            side("dspnet"),
            side("one-by-one"),
            side("one-by-one")
        );
        let gflops =
            |p: Option<&crate::curves::MeanPoint>| p.map_or("-".into(), |p| format!("{:.3}", 2.0 * p.train_macs / 1e9));
        for step in steps {
            let (pd, po) = (point_at(d, step), point_at(o, step));
            s += &format!(
                "| {step} | {} | {} | {} | {} |\n",
                gflops(pd),
                top1_cell(pd, d.map_or(0, |k| k.seeds.len())),
                gflops(po),
                top1_cell(po, o.map_or(0, |k| k.seeds.len()))
            );
        }
        s.push('\n');
    }
    s
}

fn point_at(k: Option<&MeanCurve>, step: u64) -> Option<&crate::curves::MeanPoint> {
    k.and_then(|k| k.points.iter().find(|p| p.step == step))
}

/// `eval.knn_k` of a recorded configuration.
fn knn_k(config_toml: &str) -> Option<i64> {
    toml::from_str::<toml::Value>(config_toml).ok()?.get("eval")?.get("knn_k")?.as_integer()
}
