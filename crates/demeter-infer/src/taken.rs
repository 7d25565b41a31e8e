//! When a photo was taken, from its EXIF metadata.

use chrono::{DateTime, NaiveDateTime, Utc};

/// The photo's EXIF `DateTimeOriginal` (else `DateTimeDigitized`), as UTC: cameras record local
/// time and rarely their zone (`OffsetTimeOriginal`, when present, is applied). `None` when the
/// file has no EXIF block, no such date, or one that does not parse (a camera with its clock
/// unset writes `0000:00:00 00:00:00`).
pub fn taken_at(bytes: &[u8]) -> Option<DateTime<Utc>> {
    let exif = ::exif::Reader::new().read_from_container(&mut std::io::Cursor::new(bytes)).ok()?;
    let text = |tag: ::exif::Tag| {
        exif.get_field(tag, ::exif::In::PRIMARY).and_then(|f| match &f.value {
            ::exif::Value::Ascii(v) => v.first().map(|s| String::from_utf8_lossy(s).trim().to_owned()),
            _ => None,
        })
    };
    let (date, offset) = [
        (::exif::Tag::DateTimeOriginal, ::exif::Tag::OffsetTimeOriginal),
        (::exif::Tag::DateTimeDigitized, ::exif::Tag::OffsetTimeDigitized),
    ]
    .into_iter()
    .find_map(|(date, offset)| Some((text(date)?, text(offset))))?;
    let local = NaiveDateTime::parse_from_str(&date, "%Y:%m:%d %H:%M:%S").ok()?;
    let utc = match offset.and_then(|o| o.parse::<chrono::FixedOffset>().ok()) {
        Some(zone) => local.and_local_timezone(zone).single()?.with_timezone(&Utc),
        None => local.and_utc(),
    };
    Some(utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG holding only an EXIF block with the given ASCII tags (tag, value) in its 0th IFD's
    /// Exif sub-IFD: enough for the reader.
    fn jpeg_with_exif(tags: &[(u16, &str)]) -> Vec<u8> {
        // TIFF header (little endian), IFD0 with one entry: ExifIFDPointer.
        let mut tiff = vec![b'I', b'I', 42, 0, 8, 0, 0, 0];
        tiff.extend_from_slice(&1u16.to_le_bytes());
        let exif_ifd = 8 + 2 + 12 + 4;
        tiff.extend_from_slice(&0x8769u16.to_le_bytes());
        tiff.extend_from_slice(&4u16.to_le_bytes());
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&(exif_ifd as u32).to_le_bytes());
        tiff.extend_from_slice(&0u32.to_le_bytes());
        // The Exif IFD, its values after it.
        let mut values_at = exif_ifd + 2 + 12 * tags.len() + 4;
        let mut values = Vec::new();
        tiff.extend_from_slice(&(tags.len() as u16).to_le_bytes());
        for (tag, value) in tags {
            let mut v = value.as_bytes().to_vec();
            v.push(0);
            tiff.extend_from_slice(&tag.to_le_bytes());
            tiff.extend_from_slice(&2u16.to_le_bytes());
            tiff.extend_from_slice(&(v.len() as u32).to_le_bytes());
            tiff.extend_from_slice(&(values_at as u32).to_le_bytes());
            values_at += v.len();
            values.extend(v);
        }
        tiff.extend_from_slice(&0u32.to_le_bytes());
        tiff.extend(values);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(tiff);
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1];
        jpeg.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        jpeg.extend(app1);
        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        jpeg
    }

    #[test]
    fn the_original_date_is_read_with_its_offset_when_there_is_one() {
        let plain = jpeg_with_exif(&[(0x9003, "2026:05:04 07:30:00")]);
        assert_eq!(taken_at(&plain).unwrap().to_rfc3339(), "2026-05-04T07:30:00+00:00");
        let zoned = jpeg_with_exif(&[(0x9003, "2026:05:04 07:30:00"), (0x9011, "+02:00")]);
        assert_eq!(taken_at(&zoned).unwrap().to_rfc3339(), "2026-05-04T05:30:00+00:00");
        let digitized = jpeg_with_exif(&[(0x9004, "2025:12:31 23:59:59")]);
        assert_eq!(taken_at(&digitized).unwrap().to_rfc3339(), "2025-12-31T23:59:59+00:00");
    }

    #[test]
    fn no_exif_or_an_unset_clock_is_none() {
        assert_eq!(taken_at(&jpeg_with_exif(&[(0x9003, "0000:00:00 00:00:00")])), None);
        assert_eq!(taken_at(b"\xFF\xD8\xFF\xD9"), None);
        assert_eq!(taken_at(b"not an image"), None);
    }
}
