//! The small preview the status page shows for each photo, and JPEG encoding for it and the
//! overlay.

use image::RgbImage;

/// Long side of stored thumbnails, in pixels.
pub const THUMBNAIL_SIDE: u32 = 256;

/// Downscales `rgb` (already upright) so its long side is at most [`THUMBNAIL_SIDE`] and encodes
/// it as JPEG.
pub fn thumbnail_jpeg(rgb: &RgbImage) -> Result<Vec<u8>, jpeg_encoder::EncodingError> {
    let (w, h) = rgb.dimensions();
    if w.max(h) <= THUMBNAIL_SIDE {
        return jpeg(rgb);
    }
    let ratio = f64::from(THUMBNAIL_SIDE) / f64::from(w.max(h));
    let (nw, nh) = (((f64::from(w) * ratio).round() as u32).max(1), ((f64::from(h) * ratio).round() as u32).max(1));
    jpeg(&image::imageops::thumbnail(rgb, nw, nh))
}

/// Encodes an image as a JPEG of web quality (80), with `jpeg-encoder`'s AVX2 paths where the
/// CPU has them: several times faster than `image`'s scalar encoder, which took a tenth of a
/// photo's processing time for the thumbnail and the overlay.
pub fn jpeg(rgb: &RgbImage) -> Result<Vec<u8>, jpeg_encoder::EncodingError> {
    let (w, h) = rgb.dimensions();
    let too_big = |_| jpeg_encoder::EncodingError::BadImageData { length: 0, required: 0 };
    let (w16, h16) = (u16::try_from(w).map_err(too_big)?, u16::try_from(h).map_err(too_big)?);
    let mut out = Vec::with_capacity(rgb.as_raw().len() / 8);
    jpeg_encoder::Encoder::new(&mut out, 80).encode(rgb.as_raw(), w16, h16, jpeg_encoder::ColorType::Rgb)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_are_small_jpegs_that_decode() {
        let img = RgbImage::from_fn(512, 384, |x, y| image::Rgb([(x / 2) as u8, (y / 2) as u8, 60]));
        let bytes = thumbnail_jpeg(&img).unwrap();
        let back = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (256, 192));
        let overlay = image::load_from_memory(&jpeg(&img).unwrap()).unwrap();
        assert_eq!((overlay.width(), overlay.height()), (512, 384));
        // Colours survive (JPEG noise aside).
        let px = back.to_rgb8().get_pixel(128, 96).0;
        assert!(px[0].abs_diff(128) < 8 && px[1].abs_diff(96) < 8 && px[2].abs_diff(60) < 8, "{px:?}");
    }
}
