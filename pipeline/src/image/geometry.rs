//! Crop-box geometry in source pixels: the box type, the source window an antialiased
//! resampling of a crop reads, and the union of two boxes (the window a JPEG decode must cover
//! for both twin views).

/// A crop rectangle in source pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

/// Source rectangle (clamped to the `full_w`×`full_h` image) whose pixels the antialiased
/// bilinear resampling of `crop` to `out`×`out` reads, plus one pixel of safety on each side:
/// a decoded window that contains it gives the same view as the full image (see
/// [`crate::augment::TwinViewTransform::apply_params_into`]). Filter radius = max(crop / out, 1) source pixels
/// (`fast_image_resize`'s convolution with its bilinear filter of support 1).
pub fn resample_support(crop: CropBox, out: u32, full_w: u32, full_h: u32) -> CropBox {
    let axis = |c0: u32, cs: u32, full: u32| -> (u32, u32) {
        if cs == out {
            return (c0, c0 + cs); // integral crop of the output size: copied, no resampling
        }
        let scale = cs as f64 / out as f64;
        let radius = scale.max(1.0);
        let lo = (c0 as f64 + 0.5 * scale - radius).floor() - 1.0;
        let hi = (c0 as f64 + cs as f64 - 0.5 * scale + radius).ceil() + 1.0;
        (lo.max(0.0) as u32, (hi.min(full as f64) as u32).max(c0 + cs))
    };
    let (x0, x1) = axis(crop.left, crop.width, full_w);
    let (y0, y1) = axis(crop.top, crop.height, full_h);
    CropBox { left: x0, top: y0, width: x1 - x0, height: y1 - y0 }
}

/// Smallest box holding both boxes.
pub fn union_box(a: CropBox, b: CropBox) -> CropBox {
    let (x0, y0) = (a.left.min(b.left), a.top.min(b.top));
    let (x1, y1) = ((a.left + a.width).max(b.left + b.width), (a.top + a.height).max(b.top + b.height));
    CropBox { left: x0, top: y0, width: x1 - x0, height: y1 - y0 }
}
