use super::reference::{self, Work};
use super::*;
use crate::augment::blur::blur_plane;
use crate::augment::colour::{op_brightness, op_contrast, op_grayscale, op_hue, op_saturation};
use crate::image::{decode_image_with_image_crate, resample_support, union_box, CropBox, Decoded};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn cfg_small(s: u32, c: u32) -> AugmentConfig {
    AugmentConfig::byol_small(s, c)
}

#[test]
fn crop_boxes_respect_bounds() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (scale, ratio) = ((0.08f32, 1.0f32), (0.75f32, 4.0f32 / 3.0));
    let mut fallbacks = 0;
    for &(w, h) in &[(224u32, 224u32), (32, 32), (500, 375), (375, 500), (28, 28)] {
        let area = (w * h) as f64;
        for _ in 0..3000 {
            let b = random_resized_crop_box(w, h, scale, ratio, &mut rng);
            assert!(
                b.width >= 1 && b.height >= 1 && b.left + b.width <= w && b.top + b.height <= h,
                "{b:?} in {w}x{h}"
            );
            let (bw, bh) = (b.width as f64, b.height as f64);
            if b.width == w && b.height == h {
                fallbacks += 1;
                continue; // the centre fallback of a within-ratio image is the full image
            }
            // Unrounded w', h' satisfy w'h' in [s0 A, s1 A] and w'/h' in [r0, r1]; each is
            // within 0.5 of the rounded value.
            assert!((bw + 0.5) * (bh + 0.5) >= scale.0 as f64 * area, "{b:?} too small in {w}x{h}");
            assert!((bw - 0.5) * (bh - 0.5) <= scale.1 as f64 * area);
            assert!((bw + 0.5) / (bh - 0.5) >= ratio.0 as f64 - 1e-9, "{b:?} ratio");
            assert!((bw - 0.5) / (bh + 0.5) <= ratio.1 as f64 + 1e-9, "{b:?} ratio");
        }
    }
    assert!(fallbacks < 15_000);
}

#[test]
fn crop_fallback_is_centre_clamped() {
    // Area must be the whole image but aspect >= 2: no try fits a 100x100 image, so the
    // fallback takes w = 100, h = round(100 / 2) = 50, centred: top = 25.
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let b = random_resized_crop_box(100, 100, (1.0, 1.0), (2.0, 3.0), &mut rng);
    assert_eq!(b, CropBox { left: 0, top: 25, width: 100, height: 50 });
    // Tall image 40x100 with ratio (0.75, 1.33): in_ratio 0.4 < 0.75 → w = 40, h = round(40/0.75) = 53.
    let b = random_resized_crop_box(40, 100, (1.0, 1.0), (0.75, 4.0 / 3.0), &mut rng);
    assert_eq!(b, CropBox { left: 0, top: 23, width: 40, height: 53 });
}

#[test]
fn flip_rate_near_half() {
    let v = ViewAugment::byol(0.0, 0.0);
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let n = 4000;
    let flips = (0..n).filter(|_| sample_view_params(&v, 32, 32, &mut rng).flip).count() as f64;
    // Binomial(4000, 0.5): mean 2000, sd sqrt(4000 * 0.25) = 31.6; 5 sigma = 158.
    assert!((flips - 2000.0).abs() < 158.0, "flips = {flips}");
}

#[test]
fn eval_normalisation_exact() {
    // 2x2 RGB image, eval_resize == image_size == 2 → no resampling; values hand-computed:
    // (p / 255 - mean) / std with mean 0.5, std 0.25: 0 → -2, 255 → 2, 51 → (0.2-0.5)/0.25 = -1.2.
    let mut cfg = cfg_small(2, 3);
    cfg.mean = vec![0.5; 3];
    cfg.std = vec![0.25; 3];
    let img = Decoded { width: 2, height: 2, channels: 3, data: vec![0, 255, 51, 255, 0, 51, 51, 51, 51, 0, 0, 0] };
    let out = EvalTransform::new(cfg).unwrap().apply(&img).unwrap();
    // CHW: R plane = [0,255,51,0], G = [255,0,51,0], B = [51,51,51,0]
    let expect = [-2.0, 2.0, -1.2, -2.0, 2.0, -2.0, -1.2, -2.0, -1.2, -1.2, -1.2, -2.0];
    for (a, b) in out.iter().zip(expect) {
        assert!((a - b).abs() < 1e-6, "{out:?}");
    }
}

#[test]
fn eval_centre_crop() {
    // 6x4 gray image, values = x + 10*y. eval_resize 4 == shorter side → scale 1; crop 2x2
    // centred: left = (6-2)/2 = 2, top = (4-2)/2 = 1 → pixels (2,1),(3,1),(2,2),(3,2).
    let mut cfg = cfg_small(2, 1);
    cfg.eval_resize = 4;
    cfg.mean = vec![0.0];
    cfg.std = vec![1.0];
    let data: Vec<u8> = (0..4).flat_map(|y| (0..6).map(move |x| (x + 10 * y) as u8)).collect();
    let img = Decoded { width: 6, height: 4, channels: 1, data };
    let out = EvalTransform::new(cfg).unwrap().apply(&img).unwrap();
    let got: Vec<u8> = out.iter().map(|v| (v * 255.0).round() as u8).collect();
    assert_eq!(got, vec![12, 13, 22, 23]);
}

#[test]
fn eval_resizes_shorter_side() {
    let mut cfg = cfg_small(8, 3);
    cfg.eval_resize = 10;
    let img = Decoded { width: 40, height: 20, channels: 3, data: vec![128; 40 * 20 * 3] };
    let out = EvalTransform::new(cfg.clone()).unwrap().apply(&img).unwrap();
    assert_eq!(out.len(), 3 * 8 * 8);
    // a constant image stays constant through resampling
    let v = (128.0 / 255.0 - cfg.mean[0]) / cfg.std[0];
    assert!((out[0] - v).abs() < 1e-5);
}

#[test]
fn colour_ops_known_values() {
    let mut w = Work { s: 1, c: 3, px: vec![1.0, 0.5, 0.0] };
    w.grayscale();
    let g = 0.299 + 0.587 * 0.5;
    assert!(w.px.iter().all(|v| (v - g).abs() < 1e-6));
    let mut w = Work { s: 1, c: 3, px: vec![0.2, 0.6, 0.8] };
    w.brightness(1.5);
    assert!((w.px[0] - 0.3).abs() < 1e-6 && (w.px[1] - 0.9).abs() < 1e-6 && w.px[2] == 1.0);
    let mut w = Work { s: 1, c: 3, px: vec![0.75, 0.6, 0.2] };
    w.solarize();
    assert!((w.px[0] - 0.25).abs() < 1e-6 && (w.px[1] - 0.4).abs() < 1e-6 && (w.px[2] - 0.2).abs() < 1e-6);
    // pure red shifted by 1/3 turn is pure green
    let (r, g, b) = {
        let (h, s, v) = rgb_to_hsv(1.0, 0.0, 0.0);
        hsv_to_rgb(h + 1.0 / 3.0, s, v)
    };
    assert!(r.abs() < 1e-5 && (g - 1.0).abs() < 1e-5 && b.abs() < 1e-5);
    // contrast 0 → every pixel becomes the image's mean luma
    let mut w = Work { s: 1, c: 3, px: vec![1.0, 0.0, 0.0] };
    w.contrast(0.0);
    assert!(w.px.iter().all(|v| (v - 0.299).abs() < 1e-6));
    // saturation 0 on one channel input is a no-op
    let mut w = Work { s: 1, c: 1, px: vec![0.3] };
    w.saturation(0.0);
    w.hue(0.2);
    w.grayscale();
    assert_eq!(w.px, vec![0.3]);
    // blur keeps a constant image constant; kernel sums to 1 and has 23 taps at 224
    let mut w = Work { s: 5, c: 1, px: vec![0.4; 25] };
    w.blur(1.5, 3);
    assert!(w.px.iter().all(|v| (v - 0.4).abs() < 1e-6));
    assert_eq!(blur_kernel_size(224), 23);
    assert_eq!(blur_kernel_size(32), 3);
    assert!((gaussian_kernel(23, 1.0).iter().sum::<f32>() - 1.0).abs() < 1e-6);
}

#[test]
fn flip_mirrors_and_twin_views_are_seeded() {
    let cfg = cfg_small(4, 1);
    let t = TwinViewTransform::new(cfg.clone()).unwrap();
    let data: Vec<u8> = (0..16).map(|i| (i * 10) as u8).collect();
    let img = Decoded { width: 4, height: 4, channels: 1, data };
    let full = CropBox { left: 0, top: 0, width: 4, height: 4 };
    let base =
        ViewParams { crop: full, flip: false, jitter: None, grayscale: false, blur_sigma: None, solarize: false };
    let a = t.apply_params(&img, &base).unwrap();
    let b = t.apply_params(&img, &ViewParams { flip: true, ..base }).unwrap();
    for y in 0..4 {
        for x in 0..4 {
            assert_eq!(a[y * 4 + x], b[y * 4 + 3 - x]);
        }
    }
    let (a1, b1) = t.apply(&img, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    let (a2, b2) = t.apply(&img, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    assert_eq!((a1.len(), b1.len()), (16, 16));
    assert_eq!((&a1, &b1), (&a2, &b2));
    let rgb = Decoded { width: 4, height: 4, channels: 3, data: vec![1; 48] };
    assert!(t.apply(&rgb, &mut ChaCha8Rng::seed_from_u64(5)).is_err());
}

#[test]
fn config_validation_and_serde() {
    assert!(AugmentConfig::byol_224().validate().is_ok());
    let mut c = AugmentConfig::byol_small(32, 3);
    c.view_b.flip_p = 1.5;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("augment.view_b.flip_p"), "{e}");
    let mut c = AugmentConfig::byol_small(32, 3);
    c.mean = vec![0.5];
    assert!(c.validate().is_err());
    let json = serde_json::to_string(&AugmentConfig::byol_small(28, 1)).unwrap();
    let back: AugmentConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, AugmentConfig::byol_small(28, 1));
    assert!(serde_json::from_str::<ViewAugment>(r#"{"nope": 1}"#).is_err());
}

/// A `w`×`h` image with smooth colour gradients plus a seeded texture (every op has work to
/// do: saturated and grey pixels, edges, values near 0.5 for solarize).
fn textured(w: u32, h: u32, c: u32, seed: u64) -> Decoded {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut data = Vec::with_capacity((w * h * c) as usize);
    for y in 0..h {
        for x in 0..w {
            for k in 0..c {
                let base =
                    (x * 255 / w.max(1)) as i32 * (k as i32 % 2) + (y * 255 / h.max(1)) as i32 * ((k as i32 + 1) % 2);
                let noise: i32 = rng.gen_range(-40..=40);
                data.push((base + noise).clamp(0, 255) as u8);
            }
        }
    }
    Decoded { width: w, height: h, channels: c, data }
}

/// A config where every op fires often: jitter always, grayscale / blur / solarize half the time.
fn busy(mut cfg: AugmentConfig) -> AugmentConfig {
    for v in [&mut cfg.view_a, &mut cfg.view_b] {
        v.jitter_p = 1.0;
        v.grayscale_p = 0.3;
        v.blur_p = 0.6;
        v.solarize_p = 0.5;
    }
    cfg
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn fast_path_matches_reference_views() {
    // The fast planar path against the per-op reference on 160 random views of 3- and
    // 1-channel images at 32 and 48 px (blur kernels 3 and 5 taps) and at 224 px (23 taps).
    // Same formulas and order: only the contrast mean's summation order and dropped blur taps
    // below 1e-9 differ: outputs agree to 1e-5 in normalised units (measured: 7e-7).
    for (s, c, w, h, n) in
        [(32u32, 3u32, 45u32, 37u32, 60usize), (48, 1, 50, 64, 40), (224, 3, 320, 240, 12), (32, 3, 32, 32, 48)]
    {
        let cfg = busy(if s == 224 { AugmentConfig::byol_224() } else { AugmentConfig::byol_small(s, c) });
        let t = TwinViewTransform::new(cfg.clone()).unwrap();
        let img = textured(w, h, c, s as u64 + c as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut ws = AugmentWorkspace::new();
        let (mut a, mut b) = (vec![0f32; t.view_len()], vec![0f32; t.view_len()]);
        for _ in 0..n / 2 {
            let params = t.sample_params(w, h, &mut rng);
            t.apply_params_into(&img, (0, 0), &params, &mut ws, &mut a, &mut b).unwrap();
            for (p, got) in params.iter().zip([&a, &b]) {
                let want = reference::apply_view(&cfg, &img, p).unwrap();
                let d = max_abs_diff(got, &want);
                assert!(d < 1e-5, "{s}px c={c}: diff {d} for {p:?}");
            }
        }
    }
}

#[test]
fn fast_eval_matches_reference() {
    for (s, c, w, h) in [(32u32, 3u32, 40u32, 33u32), (8, 1, 12, 10), (224, 3, 500, 375)] {
        let mut cfg = AugmentConfig::byol_small(s, c);
        cfg.eval_resize = s + s / 7;
        let img = textured(w, h, c, 3);
        let got = EvalTransform::new(cfg.clone()).unwrap().apply(&img).unwrap();
        let want = reference::eval(&cfg, &img).unwrap();
        assert_eq!(got, want, "{s}px c={c}");
    }
}

#[test]
fn fast_ops_known_values() {
    // planar layout: [R plane | G plane | B plane], one pixel per plane here
    let mut px = vec![1.0f32, 0.5, 0.0];
    op_grayscale(&mut px, 1);
    let g = 0.299 + 0.587 * 0.5;
    assert!(px.iter().all(|v| (v - g).abs() < 1e-6));
    let mut px = vec![0.2f32, 0.6, 0.8];
    op_brightness(&mut px, 1.5);
    assert!((px[0] - 0.3).abs() < 1e-6 && (px[1] - 0.9).abs() < 1e-6 && px[2] == 1.0);
    // contrast 0 → every pixel becomes the image's mean luma; two pixels (1,0,0), (0,0,1):
    // mean luma = (0.299 + 0.114) / 2
    let mut px = vec![1.0f32, 0.0, 0.0, 0.0, 0.0, 1.0];
    op_contrast(&mut px, 2, 3, 0.0);
    assert!(px.iter().all(|v| (v - 0.2065).abs() < 1e-6), "{px:?}");
    // saturation 0 → luma; saturation 2 on (0.5, 0.25, 0.25): y = 0.299*0.5 + 0.701*0.25 =
    // 0.32475 → r = 2*0.5 - 0.32475 = 0.67525, g = b = 0.5 - 0.32475 = 0.17525
    let mut px = vec![0.5f32, 0.25, 0.25];
    op_saturation(&mut px, 1, 2.0);
    assert!(
        (px[0] - 0.67525).abs() < 1e-6 && (px[1] - 0.17525).abs() < 1e-6 && (px[2] - 0.17525).abs() < 1e-6,
        "{px:?}"
    );
    // hue: red + 1/3 turn = green, green + 1/3 = blue, (0.6, 0.3, 0.3) - 1/6 turn =
    // (0.6, 0.3, 0.6) (hue 0 → 5/6: magenta side, v = 0.6, s = 0.5)
    let mut px = vec![1.0f32, 0.0, 0.0, 1.0, 0.0, 0.0]; // pixel 0 red, pixel 1 green
    op_hue(&mut px, 2, 1.0 / 3.0);
    let want = [0.0f32, 0.0, 1.0, 0.0, 0.0, 1.0];
    assert!(max_abs_diff(&px, &want) < 1e-5, "{px:?}");
    let mut px = vec![0.6f32, 0.3, 0.3];
    op_hue(&mut px, 1, -1.0 / 6.0);
    assert!(max_abs_diff(&px, &[0.6, 0.3, 0.6]) < 1e-5, "{px:?}");
    // blur keeps a constant plane constant; a 1-pixel impulse spreads as the kernel's outer
    // product: centre weight k[1]^2 with k = normalised exp(-x²/2σ²), σ = 1, x = -1, 0, 1
    let mut plane = vec![0.4f32; 25];
    let (mut tmp, mut row) = (vec![0f32; 25], Vec::new());
    blur_plane::<false>(&mut plane, 5, &gaussian_kernel(3, 1.0), &mut tmp, &mut row, &mut Vec::new());
    assert!(plane.iter().all(|v| (v - 0.4).abs() < 1e-6));
    let mut plane = vec![0f32; 25];
    plane[12] = 1.0;
    blur_plane::<false>(&mut plane, 5, &gaussian_kernel(3, 1.0), &mut tmp, &mut row, &mut Vec::new());
    let e = (-0.5f32).exp();
    let k1 = 1.0 / (1.0 + 2.0 * e);
    assert!(
        (plane[12] - k1 * k1).abs() < 1e-6 && (plane[11] - k1 * k1 * e).abs() < 1e-6 && plane[0] == 0.0,
        "{plane:?}"
    );
    // reflect padding at the edge: impulse at (0, 0) of a 3x3 plane with k = (a, b, a)
    // horizontally gives row 0 = (b, 2a, 0)... reflect(-1) = 1 so x=0 gets k[0]*p[1] + k[1]*p[0]
    let mut plane = vec![0f32; 9];
    plane[0] = 1.0;
    let (mut tmp, mut row) = (vec![0f32; 9], Vec::new());
    blur_plane::<false>(&mut plane, 3, &[0.25, 0.5, 0.25], &mut tmp, &mut row, &mut Vec::new());
    // x: (0.5, 0.25, 0) on row 0; then y weights (0.5, 0.25, 0): (0,0) = 0.25, (1,0) = 0.125, (0,1) = 0.125
    assert_eq!(&plane[..], &[0.25, 0.125, 0.0, 0.125, 0.0625, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn window_gives_the_same_views() {
    // Decoding only the union of both crops' resampling supports gives the same views as the
    // full image: identical up to the resampler's rounding of shifted coordinates (at most one
    // 8-bit level before normalisation; measured: every value identical).
    let cfg = busy(AugmentConfig::byol_224());
    let t = TwinViewTransform::new(cfg.clone()).unwrap();
    let (w, h) = (640u32, 480u32);
    let img = textured(w, h, 3, 9);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut ws = AugmentWorkspace::new();
    let n = t.view_len();
    let (mut fa, mut fb, mut wa, mut wb) = (vec![0f32; n], vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    let (mut exact, mut total) = (0usize, 0usize);
    for _ in 0..12 {
        let params = t.sample_params(w, h, &mut rng);
        t.apply_params_into(&img, (0, 0), &params, &mut ws, &mut fa, &mut fb).unwrap();
        let win = union_box(resample_support(params[0].crop, 224, w, h), resample_support(params[1].crop, 224, w, h));
        let mut data = Vec::new();
        for y in win.top..win.top + win.height {
            let row = ((y * w + win.left) * 3) as usize;
            data.extend_from_slice(&img.data[row..row + (win.width * 3) as usize]);
        }
        let sub = Decoded { width: win.width, height: win.height, channels: 3, data };
        t.apply_params_into(&sub, (win.left, win.top), &params, &mut ws, &mut wa, &mut wb).unwrap();
        for (x, y) in [(&fa, &wa), (&fb, &wb)] {
            let d = max_abs_diff(x, y);
            assert!(d <= 1.01 / 255.0 / 0.224, "window differs by {d}");
            exact += x.iter().zip(y.iter()).filter(|(a, b)| a == b).count();
            total += n;
        }
    }
    assert!(exact as f64 >= 0.999 * total as f64, "{exact} of {total} values identical");
    // a window that misses a crop is refused
    let params = t.sample_params(w, h, &mut rng);
    let tiny = Decoded { width: 4, height: 4, channels: 3, data: vec![0; 48] };
    assert!(t.apply_params_into(&tiny, (0, 0), &params, &mut ws, &mut wa, &mut wb).is_err());
}

#[test]
fn decode_apply_matches_full_decode_and_reference_on_coco() {
    // Real photos through the loader's path (frame-header size, window decode with
    // libjpeg-turbo, fast views) against (a) libjpeg's full decode + the same views: equal
    // (the window holds every pixel the resampler reads), and (b) the image crate's decode +
    // the reference per-op path: the decoders differ by a few 8-bit levels on some pixels
    // (see crate::image::jpeg), so views differ by at most 8 levels (8/255/std) and on average by
    // less than 0.1 level (measured: 0.02).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/coco128/images/train2017");
    if !dir.is_dir() {
        assert!(std::env::var_os("CI").is_none(), "{} missing under CI", dir.display());
        return;
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let cfg = busy(AugmentConfig::byol_224());
    let t = TwinViewTransform::new(cfg.clone()).unwrap();
    let mut ws = AugmentWorkspace::new();
    let n = t.view_len();
    let (mut a, mut b, mut fa, mut fb) = (vec![0f32; n], vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    let min_std = cfg.std.iter().cloned().fold(f32::MAX, f32::min);
    let (mut sum, mut count) = (0f64, 0usize);
    for (i, f) in files.iter().take(12).enumerate() {
        let bytes = std::fs::read(f).unwrap();
        t.decode_apply_into(&bytes, &mut ChaCha8Rng::seed_from_u64(i as u64), &mut ws, &mut a, &mut b).unwrap();
        let full = crate::image::jpeg::decode_jpeg_window(&bytes, 3, None, Vec::new()).unwrap().img;
        t.apply_into(&full, &mut ChaCha8Rng::seed_from_u64(i as u64), &mut ws, &mut fa, &mut fb).unwrap();
        assert!(a == fa && b == fb, "file {i}: window decode changed the views");
        let img = decode_image_with_image_crate(&bytes, 3).unwrap();
        let params = t.sample_params(img.width, img.height, &mut ChaCha8Rng::seed_from_u64(i as u64));
        for (p, got) in params.iter().zip([&a, &b]) {
            let want = reference::apply_view(&cfg, &img, p).unwrap();
            let d = max_abs_diff(got, &want);
            assert!(d <= 8.0 / 255.0 / min_std, "file {i}: {d}");
            sum += got.iter().zip(&want).map(|(x, y)| (x - y).abs() as f64).sum::<f64>();
            count += n;
        }
    }
    let mean = sum / count as f64;
    assert!(mean < 0.1 / 255.0 / min_std as f64, "mean difference {mean}");
}
