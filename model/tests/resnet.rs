//! Slimmable ResNet / head tests. Reference numbers are worked out independently (in the test
//! from raw data, or once with torchvision via `tests/torchvision_ref.py counts`).

use dspnet_model::{
    slim_channels, to_channels_last, Depth, ModelError, ResNetConfig, SlimMlpHead, SlimResNet, Stem, WidthList,
};
use std::collections::HashMap;
use tch::{nn::VarStore, Device, Kind, Tensor};

const WIDTHS: [f64; 4] = [0.25, 0.5, 0.75, 1.0];
const DEPTHS: [Depth; 3] = [Depth::R18, Depth::R34, Depth::R50];

fn cfg(depth: Depth, stem: Stem, widths: &[f64]) -> ResNetConfig {
    ResNetConfig { depth, stem, in_channels: 3, base_channels: 64, widths: widths.to_vec() }
}

fn build(c: &ResNetConfig) -> (VarStore, SlimResNet) {
    let vs = VarStore::new(Device::Cpu);
    let net = SlimResNet::new(&vs.root(), c).expect("valid config");
    (vs, net)
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_kind(Kind::Float);
    let b = b.to_kind(Kind::Float);
    (&a - &b).norm().double_value(&[]) / b.norm().double_value(&[])
}

fn abs_sum(t: &Tensor) -> f64 {
    t.abs().sum(Kind::Double).double_value(&[])
}

#[test]
fn shapes_every_depth_stem_width() {
    tch::manual_seed(0);
    for depth in DEPTHS {
        // Output channels of the last stage at width 1, from He et al. 2016 Table 1.
        let full_out = if depth == Depth::R50 { 2048 } else { 512 };
        for (stem, px, spatial) in [(Stem::Small, 32, [32, 16, 8, 4]), (Stem::Imagenet, 64, [16, 8, 4, 2])] {
            let (_vs, net) = build(&cfg(depth, stem, &WIDTHS));
            let x = Tensor::randn([2, 3, px, px], (Kind::Float, Device::Cpu));
            for w in WIDTHS {
                let stage_out: Vec<i64> = (0..4).map(|i| ((full_out >> (3 - i)) as f64 * w).round() as i64).collect();
                let maps = tch::no_grad(|| net.feature_maps(&x, w, false)).unwrap();
                assert_eq!(maps.len(), 4);
                for (i, m) in maps.iter().enumerate() {
                    assert_eq!(
                        m.size(),
                        vec![2, stage_out[i], spatial[i], spatial[i]],
                        "{depth:?} {stem:?} w={w} layer{}",
                        i + 1
                    );
                }
                let y = tch::no_grad(|| net.forward_t(&x, w, true)).unwrap();
                let expect = (full_out as f64 * w).round() as i64;
                assert_eq!(y.size(), vec![2, expect], "{depth:?} {stem:?} w={w}");
                assert_eq!(net.feature_dim(w), expect);
                assert_eq!(y.kind(), Kind::Float);
            }
        }
    }
    // Grey images (Fashion-MNIST, 28 px) with the small stem.
    let mut c = cfg(Depth::R18, Stem::Small, &[0.5, 1.0]);
    c.in_channels = 1;
    let (_vs, net) = build(&c);
    let y =
        tch::no_grad(|| net.forward_t(&Tensor::randn([2, 1, 28, 28], (Kind::Float, Device::Cpu)), 0.5, false)).unwrap();
    assert_eq!(y.size(), vec![2, 256]);
}

#[test]
fn errors_are_typed_and_clear() {
    let (_vs, net) = build(&cfg(Depth::R18, Stem::Small, &WIDTHS));
    let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
    let e = net.forward_t(&x, 0.3, false).unwrap_err();
    assert!(matches!(e, ModelError::WidthNotInList { .. }));
    assert_eq!(e.to_string(), "width 0.3 is not in this model's width list [0.25, 0.5, 0.75, 1.0]; pass one of them");
    let e = net.forward_t(&Tensor::randn([2, 1, 8, 8], (Kind::Float, Device::Cpu)), 1.0, false).unwrap_err();
    assert!(matches!(e, ModelError::BadInput { .. }), "{e}");
    assert!(net.torchvision_state_dict(&_vs, 0.3).is_err());
    let vs = VarStore::new(Device::Cpu);
    assert!(matches!(
        SlimResNet::new(&vs.root(), &cfg(Depth::R18, Stem::Small, &[1.0, 0.5])),
        Err(ModelError::InvalidWidthList { .. })
    ));
    let mut c = cfg(Depth::R18, Stem::Small, &[1.0]);
    c.base_channels = 0;
    assert!(matches!(SlimResNet::new(&vs.root(), &c), Err(ModelError::InvalidConfig(_))));
}

#[test]
fn config_serde_and_from_str() {
    let c: ResNetConfig = serde_json::from_str(
        r#"{"depth":"r50","stem":"imagenet","in_channels":3,"base_channels":64,"widths":[0.25,1.0]}"#,
    )
    .unwrap();
    assert_eq!((c.depth, c.stem), (Depth::R50, Stem::Imagenet));
    let s = serde_json::to_string(&c).unwrap();
    assert!(s.contains(r#""depth":"r50""#) && s.contains(r#""stem":"imagenet""#), "{s}");
    assert!(serde_json::from_str::<ResNetConfig>(
        r#"{"depth":"r18","stem":"small","in_channels":3,"base_channels":64,"widths":[1.0],"extra":1}"#
    )
    .is_err());
    assert_eq!("resnet18".parse::<Depth>().unwrap(), Depth::R18);
    assert_eq!("34".parse::<Depth>().unwrap(), Depth::R34);
    assert_eq!("R50".parse::<Depth>().unwrap(), Depth::R50);
    assert!("resnet101".parse::<Depth>().is_err());
    assert_eq!("small".parse::<Stem>().unwrap(), Stem::Small);
}

/// Full (out, in) of a conv weight and whether its input is sliced (only the stem's is not).
fn conv_slice(name: &str, t: &Tensor, w: f64) -> (i64, i64) {
    let s = t.size();
    let ic = if name == "conv1.weight" { s[1] } else { slim_channels(s[1], w) };
    (slim_channels(s[0], w), ic)
}

#[test]
fn out_of_slice_weights_are_ignored() {
    tch::manual_seed(1);
    for depth in [Depth::R18, Depth::R50] {
        let (vs, net) = build(&cfg(depth, Stem::Small, &[0.5, 1.0]));
        let x = Tensor::randn([2, 3, 16, 16], (Kind::Float, Device::Cpu));
        let y_half = tch::no_grad(|| net.forward_t(&x, 0.5, false)).unwrap();
        let y_full = tch::no_grad(|| net.forward_t(&x, 1.0, false)).unwrap();
        let mut n_perturbed = 0;
        tch::no_grad(|| {
            for (name, t) in vs.variables() {
                if name.contains(".w1_00.") {
                    t.narrow(0, 0, t.size()[0]).copy_(&(Tensor::randn_like(&t) + 3.0));
                    n_perturbed += 1;
                } else if t.dim() == 4 {
                    let s = t.size();
                    let (oc, ic) = conv_slice(&name, &t, 0.5);
                    if oc < s[0] {
                        let mut r = t.narrow(0, oc, s[0] - oc);
                        r.copy_(&(Tensor::randn_like(&r) * 10.0));
                    }
                    if ic < s[1] {
                        let mut r = t.narrow(1, ic, s[1] - ic);
                        r.copy_(&(Tensor::randn_like(&r) * 10.0));
                    }
                    n_perturbed += 1;
                }
            }
        });
        assert!(n_perturbed > 20);
        let y_half2 = tch::no_grad(|| net.forward_t(&x, 0.5, false)).unwrap();
        assert!(y_half2.equal(&y_half), "{depth:?}: width-0.5 output changed when out-of-slice weights changed");
        let y_full2 = tch::no_grad(|| net.forward_t(&x, 1.0, false)).unwrap();
        assert!(!y_full2.allclose(&y_full, 1e-3, 1e-3, false), "sanity: the perturbation must affect width 1.0");
    }
}

#[test]
fn grads_in_slice_and_bn_stats_per_width() {
    tch::manual_seed(2);
    let w = 0.25;
    let (vs, net) = build(&cfg(Depth::R50, Stem::Small, &[0.25, 1.0]));
    let vars: HashMap<String, Tensor> = vs.variables();
    let before: HashMap<String, Tensor> = vars.iter().map(|(k, v)| (k.clone(), v.detach().copy())).collect();
    let x = Tensor::randn([4, 3, 8, 8], (Kind::Float, Device::Cpu));
    let y = net.forward_t(&x, w, true).unwrap();
    (&y * &y).sum(Kind::Float).backward();

    for (name, t) in &vars {
        let g = t.grad();
        if t.dim() == 4 {
            assert!(g.defined(), "{name} has no gradient");
            let (oc, ic) = conv_slice(name, t, w);
            let inside = abs_sum(&g.narrow(0, 0, oc).narrow(1, 0, ic));
            assert!(inside > 0.0, "{name}: no gradient inside the slice");
            let outside = g.copy();
            let _ = outside.narrow(0, 0, oc).narrow(1, 0, ic).fill_(0.0);
            assert_eq!(abs_sum(&outside), 0.0, "{name}: gradient outside the width-{w} slice");
        } else if name.contains(".w1_00.") {
            assert!(!g.defined() || abs_sum(&g) == 0.0, "{name}: other width's BN got a gradient");
            // Other width's running statistics are untouched.
            assert!(t.equal(&before[name]), "{name} changed by a width-{w} pass");
        } else if name.ends_with("w0_25.weight") {
            assert!(g.defined() && abs_sum(&g) > 0.0, "{name}: active BN has no gradient");
        }
    }

    // Hand-computed momentum update of the stem BN: running_mean = 0.9*0 + 0.1*mean,
    // running_var = 0.9*1 + 0.1*unbiased_var over (B, H, W) of the width-0.25 stem conv output.
    let wt = &vars["conv1.weight"];
    let oc = slim_channels(64, w);
    let conv = tch::no_grad(|| x.conv2d(&wt.narrow(0, 0, oc).copy(), None::<Tensor>, [1, 1], [1, 1], [1, 1], 1));
    let flat = Vec::<f32>::try_from(&conv.permute([1, 0, 2, 3]).contiguous().view([-1])).unwrap();
    let n = (4 * 8 * 8) as usize;
    let rm = Vec::<f32>::try_from(&vars["bn1.w0_25.running_mean"]).unwrap();
    let rv = Vec::<f32>::try_from(&vars["bn1.w0_25.running_var"]).unwrap();
    assert_eq!(rm.len(), oc as usize);
    for c in 0..oc as usize {
        let col = &flat[c * n..(c + 1) * n];
        let mean = col.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var_u = col.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        assert!((rm[c] as f64 - 0.1 * mean).abs() < 1e-5, "ch {c}: running_mean {} vs {}", rm[c], 0.1 * mean);
        assert!(
            (rv[c] as f64 - (0.9 + 0.1 * var_u)).abs() < 1e-4 * (1.0 + var_u),
            "ch {c}: running_var {} vs {}",
            rv[c],
            0.9 + 0.1 * var_u
        );
    }
    // Every width-0.25 BN moved its running mean; every width-1.0 BN kept zeros.
    for (name, t) in &vars {
        if name.ends_with("w0_25.running_mean") {
            assert!(!t.equal(&before[name]), "{name} was not updated");
        }
    }
}

/// Parameter counts of the sub-networks (ImageNet stem, base 64, no fc). Computed once with
/// `python model/tests/torchvision_ref.py counts`, i.e. `sum(p.numel() for p in m.parameters())`
/// of torchvision.models.resnetXX() with fc replaced by Identity and every channel count scaled
/// by slim(c, w). Width 1.0 matches torchvision's published totals minus the fc
/// (11,689,512 - 513,000 = 11,176,512 for ResNet-18, etc.).
const PARAMS: [(Depth, [i64; 4]); 3] = [
    (Depth::R18, [702_096, 2_798_880, 6_290_352, 11_176_512]),
    (Depth::R34, [1_335_248, 5_327_776, 11_977_584, 21_284_672]),
    (Depth::R50, [1_480_976, 5_892_640, 13_234_992, 23_508_032]),
];

/// Convolution MACs of one 224x224 image, from forward hooks on every nn.Conv2d of the same
/// torchvision models (`torchvision_ref.py counts`).
const MACS224: [(Depth, [u64; 4]); 3] = [
    (Depth::R18, [135_475_200, 482_893_824, 1_042_255_872, 1_813_561_344]),
    (Depth::R34, [251_080_704, 945_315_840, 2_082_705_408, 3_663_249_408]),
    (Depth::R50, [277_573_632, 1_051_287_552, 2_321_141_760, 4_087_136_256]),
];

#[test]
fn parameter_counts_match_torchvision() {
    for (depth, counts) in PARAMS {
        let (vs, net) = build(&cfg(depth, Stem::Imagenet, &WIDTHS));
        for (w, expect) in WIDTHS.iter().zip(counts) {
            assert_eq!(net.num_params(*w), expect, "{depth:?} w={w}");
        }
        // Independent check at width 1: trainable variables minus the other widths' BNs.
        let n: i64 = vs
            .variables()
            .iter()
            .filter(|(k, v)| v.requires_grad() && (k.contains(".w1_00.") || !k.contains(".w0_")))
            .map(|(_, v)| v.numel() as i64)
            .sum();
        assert_eq!(n, counts[3], "{depth:?} VarStore count");
    }
}

#[test]
fn flops_match_torchvision() {
    for (depth, macs) in MACS224 {
        let (_vs, net) = build(&cfg(depth, Stem::Imagenet, &WIDTHS));
        for (w, expect) in WIDTHS.iter().zip(macs) {
            assert_eq!(net.macs(*w, 224, 224), expect, "{depth:?} w={w}");
        }
    }
    // Against torchvision's published GFLOPS (which include the fc, < 0.1 %): within 1 %.
    for (depth, published) in [(Depth::R18, 1.81e9), (Depth::R34, 3.66e9), (Depth::R50, 4.09e9)] {
        let (_vs, net) = build(&cfg(depth, Stem::Imagenet, &[1.0]));
        let f = net.macs(1.0, 224, 224) as f64;
        assert!((f - published).abs() / published < 0.01, "{depth:?}: {f} vs {published}");
    }
    // Small stem, 32 px, ResNet-18 at width 1, by hand (C_out*C_in*k*k*H_out*W_out):
    //   stem 64*3*9*32*32 = 1,769,472; layer1 4 x 64*64*9*32*32 = 150,994,944;
    //   layer2/3/4 each: first conv (stride 2) 18,874,368 + 3 x 37,748,736 + 1x1 downsample
    //   2,097,152 = 134,217,728 (the channel doubling and the 4x smaller map cancel).
    //   Total 1,769,472 + 150,994,944 + 3 * 134,217,728 = 555,417,600 (the well-known
    //   "0.56 GFLOPs" of CIFAR ResNet-18).
    let (_vs, net) = build(&cfg(Depth::R18, Stem::Small, &[1.0]));
    assert_eq!(net.macs(1.0, 32, 32), 555_417_600);
}

#[test]
fn bf16_channels_last_matches_fp32() {
    tch::manual_seed(3);
    for (depth, stem, px) in [(Depth::R18, Stem::Small, 32), (Depth::R50, Stem::Imagenet, 64)] {
        let (vs, net) = build(&cfg(depth, stem, &[0.5, 1.0]));
        let x = Tensor::randn([2, 3, px, px], (Kind::Float, Device::Cpu));
        for w in [0.5, 1.0] {
            let y32 = tch::no_grad(|| net.forward_t(&x, w, false)).unwrap();
            // fp32 channels-last agrees with contiguous up to summation order.
            let ycl = tch::no_grad(|| net.forward_t(&to_channels_last(&x), w, false)).unwrap();
            assert!(rel_err(&ycl, &y32) < 1e-5, "{depth:?} w={w}: channels_last fp32 differs");
            let xb = to_channels_last(&x.to_kind(Kind::BFloat16));
            assert!(dspnet_model::is_channels_last(&xb));
            let yb = tch::no_grad(|| net.forward_t(&xb, w, false)).unwrap();
            assert_eq!(yb.kind(), Kind::BFloat16);
            let e = rel_err(&yb, &y32);
            // bf16 has an 8-bit mantissa (rel. precision 2^-8 = 3.9e-3 per op); tolerance 3e-2.
            assert!(e < 3e-2, "{depth:?} w={w}: bf16 relative error {e}");
        }
        // bf16 training step reaches the fp32 master weights.
        let xb = to_channels_last(&x.to_kind(Kind::BFloat16));
        let y = net.forward_t(&xb, 0.5, true).unwrap();
        y.to_kind(Kind::Float).square().sum(Kind::Float).backward();
        let g = vs.variables()["layer1.0.conv1.weight"].grad();
        assert_eq!(g.kind(), Kind::Float);
        assert!(abs_sum(&g) > 0.0);
    }
}

#[test]
fn mlp_heads() {
    tch::manual_seed(4);
    let widths = WidthList::new(WIDTHS.to_vec()).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let proj = SlimMlpHead::new(&vs.root().sub("projector"), 512, true, 128, 32, &widths).unwrap();
    let pred = SlimMlpHead::new(&vs.root().sub("predictor"), 32, false, 128, 32, &widths).unwrap();
    for w in WIDTHS {
        let din = (512.0 * w) as i64;
        let hid = (128.0 * w) as i64;
        assert_eq!(proj.in_features(w), din);
        let z = proj.forward_t(&Tensor::randn([4, din], (Kind::Float, Device::Cpu)), w, true).unwrap();
        assert_eq!(z.size(), vec![4, 32]);
        let p = pred.forward_t(&z, w, true).unwrap();
        assert_eq!(p.size(), vec![4, 32]);
        // fc1 (no bias) + BN affine + fc2 (with bias), by hand.
        assert_eq!(proj.num_params(w), din * hid + 2 * hid + hid * 32 + 32);
        let zb = proj.forward_t(&Tensor::randn([4, din], (Kind::BFloat16, Device::Cpu)), w, false).unwrap();
        assert_eq!(zb.kind(), Kind::BFloat16);
    }
    let names: Vec<String> = vs.variables().into_keys().collect();
    for n in ["projector.fc1.weight", "projector.bn1.w0_75.running_var", "predictor.fc2.bias"] {
        assert!(names.iter().any(|k| k == n), "missing {n}");
    }
    assert!(matches!(
        proj.forward_t(&Tensor::randn([4, 256], (Kind::Float, Device::Cpu)), 0.3, true),
        Err(ModelError::WidthNotInList { .. })
    ));
    assert!(matches!(
        proj.forward_t(&Tensor::randn([4, 100], (Kind::Float, Device::Cpu)), 0.5, true),
        Err(ModelError::BadInput { .. })
    ));
}
