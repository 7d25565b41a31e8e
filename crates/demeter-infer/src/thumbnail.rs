//! The small preview the status page shows for each photo.

use std::io::Cursor;

use image::{codecs::jpeg::JpegEncoder, RgbImage};

/// Long side of stored thumbnails, in pixels.
pub const THUMBNAIL_SIDE: u32 = 256;

/// Downscales `rgb` (already upright) so its long side is at most [`THUMBNAIL_SIDE`] and encodes
/// it as JPEG.
pub fn thumbnail_jpeg(rgb: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let thumb = image::DynamicImage::ImageRgb8(rgb.clone()).thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE).to_rgb8();
    jpeg(&thumb)
}

/// Encodes an image as a JPEG of web quality.
pub fn jpeg(rgb: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Cursor::new(Vec::new());
    JpegEncoder::new_with_quality(&mut out, 80).encode_image(rgb)?;
    Ok(out.into_inner())
}
