//! QR codes in photos (a label on the bench naming its location), read with `rqrr` (pure Rust).

use image::{DynamicImage, GrayImage};

use crate::decode::Decoded;

/// QR codes are searched on the photo shrunk to this long side: a label of 5 % of the picture
/// width still has ~100 px, plenty for a version-1–4 code, at a fraction of the cost.
pub const SEARCH_SIDE: u32 = 2048;

/// The photo in grey at the search size; keep this instead of the full photo until the
/// location stage.
pub fn search_image(img: &DynamicImage) -> GrayImage {
    if img.width().max(img.height()) > SEARCH_SIDE {
        img.thumbnail(SEARCH_SIDE, SEARCH_SIDE).to_luma8()
    } else {
        img.to_luma8()
    }
}

/// [`search_image`] of a photo from [`crate::decode_for`], made before the photo is turned
/// upright (only the grey copy is turned).
pub fn search_image_of(photo: &Decoded) -> GrayImage {
    photo.derive(|img| DynamicImage::ImageLuma8(search_image(img))).into_luma8()
}

/// The texts of the QR codes that decode, in the order found. Unreadable codes are skipped.
pub fn read(grey: &GrayImage) -> Vec<String> {
    let (w, h) = (grey.width() as usize, grey.height() as usize);
    let mut prepared =
        rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| grey.get_pixel(x as u32, y as u32).0[0]);
    prepared.detect_grids().into_iter().filter_map(|g| g.decode().ok().map(|(_, text)| text)).collect()
}
