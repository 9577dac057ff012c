//! Gaussian blur: torchvision's 1-D kernel and the separable blur of one square plane with
//! reflect padding, blocked so that the taps of 64 outputs stay in registers (one fused
//! multiply-add per tap on FMA CPUs).

/// `dst[x0 .. x0 + B] = Σ_i kernel[i] · src(i)[x0 .. x0 + B]`, `B` outputs kept in registers.
#[inline(always)]
fn taps_block<'a, const B: usize, const FMA: bool>(
    dst: &mut [f32],
    x0: usize,
    kernel: &[f32],
    src: &impl Fn(usize) -> &'a [f32],
) {
    let mut acc = [0f32; B];
    for (i, w) in kernel.iter().enumerate() {
        let v = &src(i)[x0..x0 + B];
        for j in 0..B {
            acc[j] = if FMA { w.mul_add(v[j], acc[j]) } else { acc[j] + w * v[j] };
        }
    }
    dst[x0..x0 + B].copy_from_slice(&acc);
}

/// `dst[x] = Σ_i kernel[i] · src(i)[x]` for `x` in `0..dst.len()`, taps in ascending order (the
/// reference's summation order). 64 outputs at a time (8 AVX registers: enough independent
/// chains to hide the add latency), then 8, then one; with `FMA` (CPUs with FMA only) each tap
/// is one fused multiply-add (rounding differs by ~1e-7).
#[inline(always)]
fn taps_into<'a, const FMA: bool>(dst: &mut [f32], kernel: &[f32], src: impl Fn(usize) -> &'a [f32]) {
    let s = dst.len();
    let mut x = 0;
    while x + 64 <= s {
        taps_block::<64, FMA>(dst, x, kernel, &src);
        x += 64;
    }
    while x + 8 <= s {
        taps_block::<8, FMA>(dst, x, kernel, &src);
        x += 8;
    }
    while x < s {
        taps_block::<1, FMA>(dst, x, kernel, &src);
        x += 1;
    }
}

/// Separable Gaussian blur of one `s`×`s` plane with reflect padding. `kernel` taps below 1e-9
/// at both ends are dropped by the caller (they change no value by more than ~2e-8).
#[inline(always)]
pub(super) fn blur_plane<const FMA: bool>(
    plane: &mut [f32],
    s: usize,
    kernel: &[f32],
    tmp: &mut [f32],
    row: &mut Vec<f32>,
    idx: &mut Vec<usize>,
) {
    let k = kernel.len();
    let h = k / 2;
    // padded index j (0 .. s + k - 1) → source index reflect(j - h), computed once
    idx.clear();
    idx.extend((0..s + k - 1).map(|j| reflect(j as i64 - h as i64, s)));
    let refl: &[usize] = idx;
    row.clear();
    row.resize(s + k, 0.0);
    // horizontal: padded row, out[x] = Σ_i w[i] · padded[x + i]
    for y in 0..s {
        let src = &plane[y * s..(y + 1) * s];
        row[h..h + s].copy_from_slice(src);
        for j in (0..h).chain(h + s..s + k - 1) {
            row[j] = src[refl[j]];
        }
        let padded: &[f32] = row;
        taps_into::<FMA>(&mut tmp[y * s..(y + 1) * s], kernel, |i| &padded[i..i + s]);
    }
    // vertical: out row y = Σ_i w[i] · tmp row reflect(y + i - h)
    let tmp: &[f32] = tmp;
    for y in 0..s {
        let rows = &refl[y..y + k];
        taps_into::<FMA>(&mut plane[y * s..(y + 1) * s], kernel, |i| &tmp[rows[i] * s..rows[i] * s + s]);
    }
}

/// Reflect an index into 0..n like numpy/torch `reflect` padding (edge not repeated).
pub(super) fn reflect(i: i64, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as i64 - 1);
    let m = i.rem_euclid(period);
    (if m < n as i64 { m } else { period - m }) as usize
}

/// Normalised 1-D Gaussian of `ksize` taps (torchvision's `_get_gaussian_kernel1d`).
pub fn gaussian_kernel(ksize: usize, sigma: f32) -> Vec<f32> {
    let half = (ksize as f32 - 1.0) / 2.0;
    let k: Vec<f32> = (0..ksize).map(|i| (-0.5 * ((i as f32 - half) / sigma).powi(2)).exp()).collect();
    let sum: f32 = k.iter().sum();
    k.into_iter().map(|v| v / sum).collect()
}
