//! Resizing with SIMD (`fast_image_resize`): several times faster than the `image` crate's
//! scalar filters, which were a few per cent of a photo's processing time twice over (the
//! model's input and the thumbnail).

use fast_image_resize::{
    images::{Image, ImageRef},
    FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
};
use image::RgbImage;

/// The size of a `w` × `h` image brought to a long side of `side`, aspect ratio kept (for
/// [`to_size`]).
pub fn fit_size(w: u32, h: u32, side: u32) -> (u32, u32) {
    let (w, h) = (w.max(1), h.max(1));
    let ratio = (f64::from(side) / f64::from(w)).min(f64::from(side) / f64::from(h));
    (((f64::from(w) * ratio).round() as u32).max(1), ((f64::from(h) * ratio).round() as u32).max(1))
}

/// `rgb` resized to exactly `nw` × `nh` (the model's input shape, which may stretch one axis by
/// a few per cent: [`crate::Model::input_size`]). Shrinking averages the source pixels each
/// output pixel covers (a box filter, as `image`'s `thumbnail` does); enlarging a small photo
/// interpolates bilinearly.
pub fn to_size(rgb: &RgbImage, nw: u32, nh: u32) -> RgbImage {
    let (w, h) = rgb.dimensions();
    let (nw, nh) = (nw.max(1), nh.max(1));
    if (nw, nh) == (w, h) {
        return rgb.clone();
    }
    let filter = if nw <= w && nh <= h { FilterType::Box } else { FilterType::Bilinear };
    // Both images are RGB8 of the sizes given, so neither constructor nor resizer can refuse.
    let src = ImageRef::new(w, h, rgb.as_raw(), PixelType::U8x3).expect("w × h × 3 bytes of RGB8");
    let mut dst = Image::new(nw, nh, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter));
    Resizer::new().resize(&src, &mut dst, &options).expect("RGB8 to RGB8, both non-empty");
    RgbImage::from_raw(nw, nh, dst.into_vec()).expect("nw × nh × 3 bytes of RGB8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_aspect_ratio_and_the_colours_both_ways() {
        let fit_long_side = |rgb: &RgbImage, side| {
            let (w, h) = fit_size(rgb.width(), rgb.height(), side);
            to_size(rgb, w, h)
        };
        let img = RgbImage::from_fn(1000, 600, |x, _| image::Rgb([if x < 500 { 200 } else { 20 }, 120, 40]));
        let small = fit_long_side(&img, 250);
        assert_eq!(small.dimensions(), (250, 150));
        assert_eq!(small.get_pixel(10, 75).0, [200, 120, 40]);
        assert_eq!(small.get_pixel(240, 75).0, [20, 120, 40]);
        let big = fit_long_side(&RgbImage::from_pixel(40, 30, image::Rgb([9, 99, 199])), 512);
        assert_eq!(big.dimensions(), (512, 384));
        assert_eq!(big.get_pixel(300, 200).0, [9, 99, 199]);
        assert_eq!(fit_long_side(&img, 1000).dimensions(), (1000, 600));
    }
}
