use dspnet_pipeline::augment::*;
#[repr(C)] struct Ts { s: i64, ns: i64 }
extern "C" { fn clock_gettime(clk: i32, ts: *mut Ts) -> i32; }
fn cpu() -> f64 { let mut t = Ts { s: 0, ns: 0 }; unsafe { clock_gettime(3, &mut t) }; t.s as f64 + t.ns as f64 * 1e-9 }
fn main() {
    let (w, h) = (640u32, 480u32);
    let data: Vec<u8> = (0..w * h * 3).map(|i| ((i * 2654435761u32) >> 24) as u8).collect();
    let img = Decoded { width: w, height: h, channels: 3, data };
    let cfg = AugmentConfig::byol_224();
    let t = TwinViewTransform::new(cfg.clone()).unwrap();
    let mut ws = AugmentWorkspace::new();
    let n = t.view_len();
    let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
    let crop = CropBox { left: 100, top: 50, width: 400, height: 380 };
    let base = ViewParams { crop, flip: false, jitter: None, grayscale: false, blur_sigma: None, solarize: false };
    let jit = |order| Some(JitterParams { order, brightness: 1.2, contrast: 0.8, saturation: 1.1, hue: 0.05 });
    let cases: Vec<(&str, ViewParams)> = vec![
        ("resize+norm", base),
        ("flip", ViewParams { flip: true, ..base }),
        ("bright", ViewParams { jitter: jit([0, 9, 9, 9]), ..base }),
        ("contrast", ViewParams { jitter: jit([1, 9, 9, 9]), ..base }),
        ("sat", ViewParams { jitter: jit([2, 9, 9, 9]), ..base }),
        ("hue", ViewParams { jitter: jit([3, 9, 9, 9]), ..base }),
        ("gray", ViewParams { grayscale: true, ..base }),
        ("blur s=1", ViewParams { blur_sigma: Some(1.0), ..base }),
        ("blur s=2", ViewParams { blur_sigma: Some(2.0), ..base }),
        ("solar", ViewParams { solarize: true, ..base }),
        ("all", ViewParams { flip: true, jitter: jit([0, 1, 2, 3]), grayscale: false, blur_sigma: Some(1.0), solarize: true, ..base }),
    ];
    let only = std::env::var("CASE").ok();
    for (name, p) in cases {
        if only.as_deref().is_some_and(|o| o != name) { continue; }
        let mut best = f64::MAX;
        for _ in 0..if only.is_some() { 50 } else { 5 } {
            let t0 = cpu();
            for _ in 0..20 { t.apply_params_into(&img, (0, 0), &[p, p], &mut ws, &mut a, &mut b).unwrap(); }
            best = best.min((cpu() - t0) / 40.0);
        }
        println!("{name:<12} {:.3} ms/view", best * 1e3);
    }
}
