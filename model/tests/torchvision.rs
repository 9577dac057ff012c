//! Cross-check against torchvision: export a width's sub-network with
//! `SlimResNet::torchvision_state_dict`, load it strictly (all but fc) into
//! `torchvision.models.resnetXX()` (channels scaled for width < 1) and compare the pooled
//! eval-mode features of the same input. Runs `tests/torchvision_ref.py` with the workspace venv
//! (`<workspace>/.venv/bin/python`); skipped with a message when that python or torch /
//! torchvision is missing.

use dspnet_model::{Depth, ResNetConfig, SlimResNet, Stem};
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{nn::VarStore, Device, Kind, Tensor};

fn python() -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if !py.exists() {
        assert!(std::env::var_os("CI").is_none(), "CI runs the Python cross-checks: tools/setup.sh installs .venv");
        eprintln!("skipping torchvision cross-check: {} not found", py.display());
        return None;
    }
    let ok = Command::new(&py).args(["-c", "import torch, torchvision"]).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI runs the Python cross-checks: tools/setup.sh installs .venv");
        eprintln!("skipping torchvision cross-check: torch/torchvision not importable by {}", py.display());
        return None;
    }
    Some(py)
}

/// Random BN affine and running statistics (in ranges that keep activations O(1)) so that a
/// wrong BN mapping or a train/eval mix-up shows in the output.
fn randomise_bn(vs: &VarStore) {
    tch::no_grad(|| {
        for (name, t) in vs.variables() {
            if t.dim() != 1 {
                continue;
            }
            let mut t = t;
            let n = t.size()[0];
            let r = |lo: f64, hi: f64| Tensor::rand([n], (Kind::Float, Device::Cpu)) * (hi - lo) + lo;
            let v = if name.ends_with("running_mean") {
                r(-0.2, 0.2)
            } else if name.ends_with("running_var") {
                r(0.5, 2.0)
            } else if name.ends_with("weight") {
                r(0.5, 1.5)
            } else {
                r(-0.1, 0.1)
            };
            t.copy_(&v);
        }
    });
}

#[test]
fn torchvision_cross_check() {
    let Some(py) = python() else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torchvision_ref.py");
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(5);
    // One python process for all cases (importing torchvision dominates the run time).
    let mut cases: Vec<String> = Vec::new();
    for depth in [Depth::R18, Depth::R34, Depth::R50] {
        let vs = VarStore::new(Device::Cpu);
        let cfg = ResNetConfig {
            depth,
            stem: Stem::Imagenet,
            in_channels: 3,
            base_channels: 64,
            widths: vec![0.25, 0.5, 0.75, 1.0],
        };
        let net = SlimResNet::new(&vs.root(), &cfg).unwrap();
        randomise_bn(&vs);
        let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        for width in [1.0, 0.5] {
            let y = tch::no_grad(|| net.forward_t(&x, width, false)).unwrap();
            let sd = net.torchvision_state_dict(&vs, width).unwrap();
            let n_bn = sd.iter().filter(|(k, _)| k.ends_with("running_var")).count();
            let n_conv = sd.iter().filter(|(_, t)| t.dim() == 4).count();
            assert_eq!(n_bn, n_conv, "one BN per conv");
            let state = dir.path().join(format!("{depth}_{width}_state.safetensors"));
            let io = dir.path().join(format!("{depth}_{width}_io.safetensors"));
            Tensor::write_safetensors(&sd, &state).unwrap();
            Tensor::write_safetensors(&[("input", &x), ("output", &y)], &io).unwrap();
            cases.extend([depth.layers().to_string(), width.to_string()]);
            cases.extend([state.display().to_string(), io.display().to_string(), "pass".into()]);
            if depth == Depth::R18 && width == 1.0 {
                // Negative control: the checker must reject an output off by 1e-3.
                let bad = dir.path().join("r18_bad_io.safetensors");
                Tensor::write_safetensors(&[("input", &x), ("output", &(&y + 1e-3))], &bad).unwrap();
                cases.extend(["18".into(), "1".into(), state.display().to_string()]);
                cases.extend([bad.display().to_string(), "fail".into()]);
            }
        }
    }
    let out = Command::new(&py).arg(&script).arg("check").args(&cases).output().unwrap();
    let msg = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{}", msg.trim());
    assert!(out.status.success(), "torchvision cross-check failed:\n{msg}");
}
