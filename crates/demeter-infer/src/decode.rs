//! Decoding photos safely: format by content, a pixel budget checked before any allocation,
//! EXIF orientation applied.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

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
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    img.apply_orientation(orientation);
    Ok(img)
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
                        if i + 1 >= b.len() {
                            return false;
                        }
                        if b[i] == 0xFF && b[i + 1] != 0x00 && !(0xD0..=0xD7).contains(&b[i + 1]) {
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

    #[test]
    fn oversized_images_are_refused_before_decoding() {
        let e = decode(&jpeg(200, 100), DecodeLimits { max_pixels: 10_000 }).unwrap_err();
        assert!(matches!(e, DecodeError::TooLarge { width: 200, height: 100, .. }), "{e}");
        assert!(e.to_string().contains("megapixels"));
    }
}
