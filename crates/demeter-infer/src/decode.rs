//! Decoding photos safely: format by content, a pixel budget checked before any allocation,
//! EXIF orientation applied.

use std::io::Cursor;

use image::{metadata::Orientation, DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};

/// Limits on what a photo may cost to decode.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Width × height above which a photo is refused (decompression bombs).
    pub max_pixels: u64,
}

/// Why a photo could not be decoded. All are permanent: the same bytes fail the same way.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the file is empty")]
    Empty,
    #[error("not a supported image (JPEG, PNG, TIFF or WebP)")]
    UnknownFormat,
    #[error("{0} images are not supported; save the photo as JPEG, PNG, TIFF or WebP")]
    Unsupported(&'static str),
    #[error("image is {width}×{height} = {} megapixels, above the limit of {} megapixels", *width as u64 * *height as u64 / 1_000_000, .max_pixels / 1_000_000)]
    TooLarge { width: u32, height: u32, max_pixels: u64 },
    #[error("image has zero width or height")]
    ZeroSize,
    #[error("corrupt or truncated {format} image: {reason}")]
    Corrupt { format: &'static str, reason: String },
}

fn format_name(f: image::ImageFormat) -> &'static str {
    match f {
        image::ImageFormat::Jpeg => "JPEG",
        image::ImageFormat::Png => "PNG",
        image::ImageFormat::Tiff => "TIFF",
        image::ImageFormat::WebP => "WebP",
        _ => "image",
    }
}

/// Decodes `bytes` into an upright image.
pub fn decode(bytes: &[u8], limits: DecodeLimits) -> Result<DynamicImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    match bytes {
        [b'G', b'I', b'F', b'8', ..] => return Err(DecodeError::Unsupported("GIF")),
        [b'B', b'M', ..] => return Err(DecodeError::Unsupported("BMP")),
        [_, _, _, _, b'f', b't', b'y', b'p', b'h', b'e', b'i', b'c' | b'x', ..] => {
            return Err(DecodeError::Unsupported("HEIC"))
        }
        _ => {}
    }
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|_| DecodeError::UnknownFormat)?;
    let format = match reader.format() {
        Some(
            f @ (image::ImageFormat::Jpeg
            | image::ImageFormat::Png
            | image::ImageFormat::Tiff
            | image::ImageFormat::WebP),
        ) => f,
        _ => return Err(DecodeError::UnknownFormat),
    };
    let name = format_name(format);
    // Decoders fill a truncated JPEG with grey and carry on; a half-copied photo must fail.
    if format == image::ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(DecodeError::Corrupt { format: name, reason: "the file ends before the image data does".into() });
    }
    let corrupt = |e: image::ImageError| DecodeError::Corrupt { format: name, reason: e.to_string() };
    let mut reader = reader;
    let mut l = Limits::default();
    // Headroom over the pixel budget for 16-bit RGBA and decoder scratch space.
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(l);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(DecodeError::ZeroSize);
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(DecodeError::TooLarge { width, height, max_pixels: limits.max_pixels });
    }
    // A broken EXIF block must not cost the photo: fall back to "as stored".
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// A decoded photo, possibly smaller than stored, and the upright size of the original.
///
/// The pixels may still be as stored, with the EXIF turn not yet applied: a phone held upright
/// writes its photos sideways with orientation 6, and a quarter turn of the decoded photo cost
/// more than the model's whole resize (about 3 ms at 1296 × 972 on the bench machine, `perf`
/// in the daemon), where the model's 384 × 512 input has a sixth of the pixels to move. So the
/// turn comes last, in whichever of [`Decoded::into_rgb_sized`], [`Decoded::into_upright`] or
/// [`Decoded::derive`] the caller needs.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// As stored in the file (the EXIF orientation not yet applied).
    stored: DynamicImage,
    /// The turn or flip that makes `stored` upright.
    orientation: Orientation,
    /// The original's upright width and height (what results and boxes refer to).
    pub width: u32,
    pub height: u32,
}

impl Decoded {
    fn new(stored: DynamicImage, orientation: Orientation, width: u32, height: u32) -> Self {
        Self { stored, orientation, width, height }
    }

    /// A photo already upright and at its full size (decoded in full, or made in memory).
    pub fn from_upright(image: DynamicImage) -> Self {
        let (width, height) = (image.width(), image.height());
        Self::new(image, Orientation::NoTransforms, width, height)
    }

    /// The decoded photo's own size once upright (at most the original's).
    pub fn upright_dimensions(&self) -> (u32, u32) {
        let (w, h) = (self.stored.width(), self.stored.height());
        if swaps_axes(self.orientation) {
            (h, w)
        } else {
            (w, h)
        }
    }

    /// The photo upright, at its decoded size.
    pub fn into_upright(self) -> DynamicImage {
        let mut image = self.stored;
        image.apply_orientation(self.orientation);
        image
    }

    /// The photo upright in RGB at exactly `width` × `height` (upright), resized as
    /// [`crate::resize::to_size`] does. Resized in the stored orientation first, then turned:
    /// the same pixels as turning first, at a fraction of the cost.
    pub fn into_rgb_sized(self, width: u32, height: u32) -> RgbImage {
        let (w, h) = if swaps_axes(self.orientation) { (height, width) } else { (width, height) };
        let rgb = self.stored.into_rgb8();
        let rgb = if rgb.dimensions() == (w, h) { rgb } else { crate::resize::to_size(&rgb, w, h) };
        let mut image = DynamicImage::ImageRgb8(rgb);
        image.apply_orientation(self.orientation);
        image.into_rgb8()
    }

    /// `f` of the stored pixels, turned upright: for an image derived from the photo that is
    /// smaller than it (the QR search's grey copy), so only the smaller one is turned.
    pub fn derive(&self, f: impl FnOnce(&DynamicImage) -> DynamicImage) -> DynamicImage {
        let mut image = f(&self.stored);
        image.apply_orientation(self.orientation);
        image
    }
}

/// True for the orientations that are a quarter turn (width and height trade places).
fn swaps_axes(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH
    )
}

/// Decodes `bytes` with at least `long_side` pixels on the long side: a JPEG at least twice
/// that size is decoded at 1/2, 1/4 or 1/8 scale inside the decoder (DCT scaling), several
/// times faster than decoding every pixel of a 12-megapixel photo only to shrink it to the
/// model's 512. Anything else, or anything the scaled path does not handle (CMYK, 12-bit,
/// lossless, a warning or an error from the decoder), is decoded in full by [`decode`], with the
/// same checks and the same errors.
pub fn decode_for(bytes: &[u8], limits: DecodeLimits, long_side: u32) -> Result<Decoded, DecodeError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) && jpeg_is_complete(bytes) {
        if let Some(scaled) = jpeg_scaled(bytes, limits, long_side) {
            return scaled;
        }
    }
    Ok(Decoded::from_upright(decode(bytes, limits)?))
}

/// Progressive scans libjpeg-turbo reads before giving up on a photo (its documented defence
/// against files made of thousands of tiny scans); a real camera writes about ten.
const MAX_SCANS: u32 = 500;

/// The scaled JPEG path (libjpeg-turbo, built from source with its SIMD code: on the dev photos
/// a quarter faster than the pure-Rust decoders at the same scale); `None` when it does not
/// apply.
fn jpeg_scaled(bytes: &[u8], limits: DecodeLimits, long_side: u32) -> Option<Result<Decoded, DecodeError>> {
    use turbojpeg::{Colorspace, PixelFormat, ScalingFactor};
    let mut d = turbojpeg::Decompressor::new().ok()?;
    let header = d.read_header(bytes).ok()?;
    if header.is_lossless || !matches!(header.colorspace, Colorspace::YCbCr | Colorspace::RGB | Colorspace::Gray) {
        return None;
    }
    let (w, h) = (u32::try_from(header.width).ok()?, u32::try_from(header.height).ok()?);
    if w == 0 || h == 0 {
        return None;
    }
    if u64::from(w) * u64::from(h) > limits.max_pixels {
        return Some(Err(DecodeError::TooLarge { width: w, height: h, max_pixels: limits.max_pixels }));
    }
    // The smallest power-of-two scale that still leaves `long_side` pixels on the long side.
    let long = w.max(h);
    let scale = [ScalingFactor::ONE_EIGHTH, ScalingFactor::ONE_QUARTER, ScalingFactor::ONE_HALF]
        .into_iter()
        .find(|s| s.scale(long as usize) >= long_side as usize)?;
    d.set_scaling_factor(scale).ok()?;
    d.set_scan_limit(MAX_SCANS).ok()?;
    let gray = header.colorspace == Colorspace::Gray;
    let format = if gray { PixelFormat::GRAY } else { PixelFormat::RGB };
    let out = header.scaled(scale);
    let mut pixels = vec![0u8; out.width * out.height * format.size()];
    let image = turbojpeg::Image {
        pixels: pixels.as_mut_slice(),
        width: out.width,
        pitch: out.width * format.size(),
        height: out.height,
        format,
    };
    // Any complaint, warnings included (libjpeg-turbo fills damaged data with grey and carries
    // on), sends the photo down the full path, which fails it with a reason or decodes it.
    d.decompress(bytes, image).ok()?;
    let (ow, oh) = (out.width as u32, out.height as u32);
    let image = if gray {
        DynamicImage::ImageLuma8(image::GrayImage::from_raw(ow, oh, pixels)?)
    } else {
        DynamicImage::ImageRgb8(image::RgbImage::from_raw(ow, oh, pixels)?)
    };
    let orientation = jpeg_exif(bytes).and_then(Orientation::from_exif_chunk).unwrap_or(Orientation::NoTransforms);
    let (width, height) = if swaps_axes(orientation) { (h, w) } else { (w, h) };
    Some(Ok(Decoded::new(image, orientation, width, height)))
}

/// The TIFF block of the JPEG's EXIF segment (APP1 starting `Exif\0\0`), if it has one before
/// the image data.
fn jpeg_exif(b: &[u8]) -> Option<&[u8]> {
    let mut i = 2; // after SOI
    while i + 3 < b.len() && b[i] == 0xFF {
        let marker = b[i + 1];
        match marker {
            0xFF => i += 1,
            0xDA | 0xD9 => return None, // the image data (or its end) came first
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
                let payload = b.get(i + 4..i + 2 + len)?;
                if marker == 0xE1 && payload.starts_with(b"Exif\0\0") {
                    return Some(&payload[6..]);
                }
                i += 2 + len;
            }
        }
    }
    None
}

/// True when the JPEG's marker structure reaches its end-of-image marker. Walks the segments
/// (skipping APPn payloads, so an embedded EXIF thumbnail's end marker does not count) and the
/// entropy-coded data after each start-of-scan.
fn jpeg_is_complete(b: &[u8]) -> bool {
    let mut i = 2; // after SOI
    while i + 1 < b.len() {
        if b[i] != 0xFF {
            return false;
        }
        let marker = b[i + 1];
        match marker {
            0xD9 => return true,          // EOI
            0xFF => i += 1,               // fill byte
            0x01 | 0xD0..=0xD7 => i += 2, // markers without a length
            _ => {
                if i + 3 >= b.len() {
                    return false;
                }
                let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
                i += 2 + len;
                if marker == 0xDA {
                    // Entropy-coded data runs to the next marker that is not a stuffed 0xFF00
                    // or a restart marker.
                    loop {
                        // Jump to the next 0xFF (memchr: the scan over megabytes of entropy-coded
                        // data was a few per cent of a photo's whole processing time).
                        match b.get(i..).and_then(|rest| memchr::memchr(0xFF, rest)) {
                            Some(at) => i += at,
                            None => return false,
                        }
                        if i + 1 >= b.len() {
                            return false;
                        }
                        if b[i + 1] != 0x00 && !(0xD0..=0xD7).contains(&b[i + 1]) {
                            break;
                        }
                        i += 1;
                    }
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = DynamicImage::new_rgb8(w, h);
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    const LIMITS: DecodeLimits = DecodeLimits { max_pixels: 100_000_000 };

    #[test]
    fn decodes_a_valid_jpeg() {
        let img = decode(&jpeg(64, 48), LIMITS).unwrap();
        assert_eq!((img.width(), img.height()), (64, 48));
    }

    #[test]
    fn truncated_and_garbage_input_fail_with_reasons() {
        let full = jpeg(64, 48);
        let e = decode(&full[..full.len() / 2], LIMITS).unwrap_err();
        assert!(matches!(e, DecodeError::Corrupt { format: "JPEG", .. }), "{e}");
        // Cut just before the end marker: decoders would accept it, the structure check does not.
        let e = decode(&full[..full.len() - 2], LIMITS).unwrap_err();
        assert!(e.to_string().contains("ends before the image data"), "{e}");
        // Bytes after the end marker (some cameras append data) are fine.
        let mut padded = full.clone();
        padded.extend_from_slice(b"trailing");
        assert!(decode(&padded, LIMITS).is_ok());
        let png = {
            let mut out = Cursor::new(Vec::new());
            DynamicImage::new_rgb8(64, 48).write_to(&mut out, image::ImageFormat::Png).unwrap();
            out.into_inner()
        };
        assert!(matches!(decode(&png[..png.len() / 2], LIMITS), Err(DecodeError::Corrupt { format: "PNG", .. })));
        assert!(matches!(decode(b"this is text, not a photo", LIMITS), Err(DecodeError::UnknownFormat)));
        assert!(matches!(decode(b"", LIMITS), Err(DecodeError::Empty)));
    }

    /// A `w` × `h` JPEG with a gradient (so scaled and full decodes can be compared), with an
    /// EXIF orientation tag when given.
    fn big_jpeg(w: u32, h: u32, orientation: Option<u16>) -> Vec<u8> {
        use image::ImageEncoder;
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 90]));
        let mut out = Vec::new();
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
        if let Some(o) = orientation {
            // A big-endian TIFF header with one IFD entry: Orientation (0x0112), SHORT, 1.
            let mut exif = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
            exif.extend_from_slice(&o.to_be_bytes());
            exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            enc.set_exif_metadata(exif).unwrap();
        }
        enc.write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgb8).unwrap();
        out
    }

    #[test]
    fn large_jpegs_are_decoded_at_reduced_size_keeping_the_original_size() {
        let bytes = big_jpeg(2400, 1600, None);
        let d = decode_for(&bytes, LIMITS, 512).unwrap();
        assert_eq!((d.width, d.height), (2400, 1600), "results refer to the original");
        assert_eq!(d.upright_dimensions(), (600, 400), "1/4 scale: the smallest at least 512 wide");
        // The same picture as a full decode shrunk: the gradient agrees within JPEG noise.
        let full = decode(&bytes, LIMITS).unwrap().resize_exact(600, 400, image::imageops::FilterType::Triangle);
        let (a, b) = (d.into_upright().to_rgb8(), full.to_rgb8());
        let diff: f64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| f64::from(x.abs_diff(*y))).sum::<f64>()
            / a.as_raw().len() as f64;
        assert!(diff < 3.0, "mean difference {diff}");
        // Small enough already, or not a JPEG: decoded in full.
        let small = decode_for(&jpeg(640, 480), LIMITS, 512).unwrap();
        assert_eq!((small.upright_dimensions().0, small.width), (640, 640));
        // The same checks as a full decode.
        assert!(decode_for(&bytes[..bytes.len() - 2], LIMITS, 512).is_err());
        let e = decode_for(&bytes, DecodeLimits { max_pixels: 1_000_000 }, 512).unwrap_err();
        assert!(matches!(e, DecodeError::TooLarge { width: 2400, height: 1600, .. }), "{e}");
    }

    #[test]
    fn damaged_image_data_gets_the_full_paths_verdict() {
        // Bytes flipped in the middle of the entropy-coded data, the marker structure intact:
        // libjpeg-turbo would fill the damage with grey and call it a warning; the scaled path
        // hands such photos to the full decoder instead of returning what it made of them.
        let good = big_jpeg(2400, 1600, None);
        assert!(matches!(jpeg_scaled(&good, LIMITS, 512), Some(Ok(_))));
        let mut checked = 0;
        for at in [good.len() / 3, good.len() / 2, good.len() * 2 / 3] {
            let mut bad = good.clone();
            for b in &mut bad[at..at + 64] {
                *b = if *b == 0xFF { 0x00 } else { 0xD9 ^ *b };
            }
            if !jpeg_is_complete(&bad) {
                continue;
            }
            assert!(jpeg_scaled(&bad, LIMITS, 512).is_none(), "at {at}: the scaled path kept a damaged decode");
            let (scaled, full) = (decode_for(&bad, LIMITS, 512), decode(&bad, LIMITS));
            assert_eq!(scaled.is_ok(), full.is_ok(), "at {at}: {:?} vs {:?}", scaled.err(), full.err());
            checked += 1;
        }
        assert!(checked > 0, "every damaged copy broke the marker structure; nothing was checked");
    }

    #[test]
    fn exif_orientation_is_applied_to_reduced_decodes() {
        let d = decode_for(&big_jpeg(2400, 1600, Some(6)), LIMITS, 512).unwrap();
        assert_eq!((d.width, d.height), (1600, 2400), "rotated 90°: upright size");
        assert_eq!(d.upright_dimensions(), (400, 600));
        let upright = d.into_upright();
        assert_eq!((upright.width(), upright.height()), (400, 600));
        let full = decode(&big_jpeg(2400, 1600, Some(6)), LIMITS).unwrap();
        assert_eq!((full.width(), full.height()), (1600, 2400), "the full path agrees");
    }

    fn mean_difference(a: &RgbImage, b: &RgbImage) -> f64 {
        assert_eq!(a.dimensions(), b.dimensions());
        a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| f64::from(x.abs_diff(*y))).sum::<f64>() / a.as_raw().len() as f64
    }

    #[test]
    fn resizing_before_the_turn_gives_the_picture_turning_first_gives() {
        // Every EXIF orientation (1–8) on a picture that differs along each axis (red grows to
        // the right, green downwards), against the full decoder's upright photo shrunk.
        for o in 1..=8u16 {
            let bytes = big_jpeg(2400, 1600, Some(o));
            let upright = decode(&bytes, LIMITS).unwrap().to_rgb8();
            let d = decode_for(&bytes, LIMITS, 512).unwrap();
            assert_eq!((d.width, d.height), upright.dimensions(), "orientation {o}");
            let (w, h) = (upright.width() / 5, upright.height() / 5);
            let expected = crate::resize::to_size(&upright, w, h);
            let turned_last = d.clone().into_rgb_sized(w, h);
            let turned_first = crate::resize::to_size(&d.clone().into_upright().to_rgb8(), w, h);
            assert!(mean_difference(&turned_last, &expected) < 3.0, "orientation {o}: not the upright picture");
            assert!(mean_difference(&turned_last, &turned_first) < 0.5, "orientation {o}: differs from turning first");
            let grey = d.derive(|img| DynamicImage::ImageLuma8(img.to_luma8())).into_luma8();
            assert_eq!(grey.dimensions(), d.upright_dimensions(), "orientation {o}: derived image upright");
        }
    }

    #[test]
    fn oversized_images_are_refused_before_decoding() {
        let e = decode(&jpeg(200, 100), DecodeLimits { max_pixels: 10_000 }).unwrap_err();
        assert!(matches!(e, DecodeError::TooLarge { width: 200, height: 100, .. }), "{e}");
        assert!(e.to_string().contains("megapixels"));
    }
}
