//! Colour operations of a view on planar f32 in [0, 1] (`[R plane | G plane | B plane]`, or one
//! plane): brightness, contrast, saturation, hue (torchvision's `ColorJitter` formulas) and
//! grayscale (ITU-R 601 luma), each one contiguous pass that the compiler vectorises; and the
//! scalar RGB ↔ HSV conversions of torchvision that the hue shift follows.
use crate::image::luma601;

#[inline(always)]
fn luma_planes(r: &[f32], g: &[f32], b: &[f32], i: usize) -> f32 {
    luma601(r[i], g[i], b[i])
}

#[inline(always)]
fn clamp01(v: f32) -> f32 {
    v.clamp(0.0, 1.0)
}

#[inline(always)]
pub(super) fn op_brightness(px: &mut [f32], f: f32) {
    px.iter_mut().for_each(|v| *v = clamp01(*v * f));
}

#[inline(always)]
pub(super) fn op_contrast(px: &mut [f32], n: usize, c: usize, f: f32) {
    // mean luma of the current image, summed in f64 (8 partial sums)
    let mut acc = [0f64; 8];
    if c == 3 {
        let (r, rest) = px.split_at(n);
        let (g, b) = rest.split_at(n);
        let (r8, g8, b8) = (r.chunks_exact(8), g.chunks_exact(8), b.chunks_exact(8));
        let (rr, gr, br) = (r8.remainder(), g8.remainder(), b8.remainder());
        for ((r, g), b) in r8.zip(g8).zip(b8) {
            for k in 0..8 {
                acc[k] += luma601(r[k], g[k], b[k]) as f64;
            }
        }
        for k in 0..rr.len() {
            acc[k] += luma601(rr[k], gr[k], br[k]) as f64;
        }
    } else {
        let p8 = px[..n].chunks_exact(8);
        let pr = p8.remainder();
        for p in p8 {
            for k in 0..8 {
                acc[k] += p[k] as f64;
            }
        }
        for (k, v) in pr.iter().enumerate() {
            acc[k] += *v as f64;
        }
    }
    let mean = acc.iter().sum::<f64>() as f32 / n.max(1) as f32;
    let m = (1.0 - f) * mean;
    px.iter_mut().for_each(|v| *v = clamp01(f * *v + m));
}

#[inline(always)]
pub(super) fn op_saturation(px: &mut [f32], n: usize, f: f32) {
    let (r, rest) = px.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    let g1 = 1.0 - f;
    for i in 0..n {
        let y = luma_planes(r, g, b, i);
        r[i] = clamp01(f * r[i] + g1 * y);
        g[i] = clamp01(f * g[i] + g1 * y);
        b[i] = clamp01(f * b[i] + g1 * y);
    }
}

/// torchvision's `_rgb2hsv` → hue shift → `_hsv2rgb`, branch-free (selects) so it vectorises.
#[inline(always)]
pub(super) fn op_hue(px: &mut [f32], n: usize, shift: f32) {
    let (r, rest) = px.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for i in 0..n {
        let (rv, gv, bv) = (r[i], g[i], b[i]);
        let maxc = rv.max(gv).max(bv);
        let minc = rv.min(gv).min(bv);
        let eqc = maxc == minc;
        let cr = maxc - minc;
        let s = cr / if eqc { 1.0 } else { maxc };
        let d = if eqc { 1.0 } else { cr };
        let (rc, gc, bc) = ((maxc - rv) / d, (maxc - gv) / d, (maxc - bv) / d);
        let h = if maxc == rv {
            bc - gc
        } else if maxc == gv {
            2.0 + rc - bc
        } else {
            4.0 + gc - rc
        };
        let h = h / 6.0 + 1.0;
        let h = if eqc { 0.0 } else { h - h.floor() };
        let h = h + shift;
        let h = h - h.floor();
        // hsv → rgb
        let h6 = h * 6.0;
        let fl = h6.floor();
        let f = h6 - fl;
        let sector = if fl >= 6.0 { fl - 6.0 } else { fl };
        let v = maxc;
        let p = clamp01(v * (1.0 - s));
        let q = clamp01(v * (1.0 - s * f));
        let t = clamp01(v * (1.0 - s * (1.0 - f)));
        let (nr, ng, nb) = if sector == 0.0 {
            (v, t, p)
        } else if sector == 1.0 {
            (q, v, p)
        } else if sector == 2.0 {
            (p, v, t)
        } else if sector == 3.0 {
            (p, q, v)
        } else if sector == 4.0 {
            (t, p, v)
        } else {
            (v, p, q)
        };
        r[i] = nr;
        g[i] = ng;
        b[i] = nb;
    }
}

#[inline(always)]
pub(super) fn op_grayscale(px: &mut [f32], n: usize) {
    let (r, rest) = px.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for i in 0..n {
        let y = luma_planes(r, g, b, i);
        r[i] = y;
        g[i] = y;
        b[i] = y;
    }
}

/// RGB in [0,1] → (h in [0,1), s, v) as torchvision's `_rgb2hsv`.
pub fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let d = if eqc { 1.0 } else { cr };
    let (rc, gc, bc) = ((maxc - r) / d, (maxc - g) / d, (maxc - b) / d);
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    let h = if eqc { 0.0 } else { (h / 6.0 + 1.0).rem_euclid(1.0) };
    (h, s, maxc)
}

/// (h, s, v) → RGB as torchvision's `_hsv2rgb`.
pub fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = h * 6.0;
    let i = (h6.floor() as i64).rem_euclid(6);
    let f = h6 - h6.floor();
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match i {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}
