//! Which files are photos: name filters and content sniffing. One rule for the watcher, a
//! one-shot run over a folder and the upload endpoint: a file is a photo when its name is not
//! junk ([`is_ignored_name`]) and either its extension ([`has_image_extension`]) or its first bytes
//! ([`sniff`]) say so ([`is_photo`]).

use std::{ffi::OsStr, path::Path};

/// Formats the engine can decode, recognised by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
    Tiff,
    WebP,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "JPEG",
            ImageFormat::Png => "PNG",
            ImageFormat::Tiff => "TIFF",
            ImageFormat::WebP => "WebP",
        }
    }
}

/// How many leading bytes [`sniff`] needs.
pub const SNIFF_LEN: usize = 12;

/// Recognises an image by its magic bytes, whatever its name says.
pub fn sniff(head: &[u8]) -> Option<ImageFormat> {
    match head {
        [0xFF, 0xD8, 0xFF, ..] => Some(ImageFormat::Jpeg),
        [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some(ImageFormat::Png),
        [b'I', b'I', 0x2A, 0x00, ..] | [b'M', b'M', 0x00, 0x2A, ..] => Some(ImageFormat::Tiff),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// Files that are never photos: hidden files (and macOS `._*` resource forks), `.DS_Store`,
/// `Thumbs.db`, and partial downloads or editor leftovers (`*.tmp`, `*.part`, `*~`).
pub fn is_ignored_name(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || lower == "thumbs.db"
        || lower == "desktop.ini"
        || lower.ends_with(".tmp")
        || lower.ends_with(".part")
        || lower.ends_with(".crdownload")
        || name.ends_with('~')
}

/// True when any component of `rel` (relative to the watched folder) is ignored, so files in
/// hidden folders (`.thumbnails/`, `.Trash-1000/`) are skipped too.
pub fn is_ignored_path(rel: &Path) -> bool {
    rel.components().any(|c| is_ignored_name(c.as_os_str()))
}

/// Whether the name claims to be a photo (extension, case-insensitive). Formats Demeter cannot
/// read (GIF, BMP, HEIC from phones) count too: such a photo gets a job that fails saying so,
/// rather than being ignored without a word.
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(OsStr::to_str)
        .map(|e| {
            matches!(
                e.to_ascii_lowercase().as_str(),
                "jpg" | "jpeg" | "jpe" | "png" | "tif" | "tiff" | "webp" | "gif" | "bmp" | "heic" | "heif"
            )
        })
        .unwrap_or(false)
}

/// The rule every way in shares: `name` is not junk, and either it has an image extension or
/// `head` (the file's first bytes, at least [`SNIFF_LEN`] when the file has them) is an image.
pub fn is_photo(name: &Path, head: &[u8]) -> bool {
    !is_ignored_path(name) && (has_image_extension(name) || sniff(head).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_content() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]), Some(ImageFormat::Jpeg));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some(ImageFormat::Png));
        assert_eq!(sniff(b"II*\0abcd"), Some(ImageFormat::Tiff));
        assert_eq!(sniff(b"MM\0*abcd"), Some(ImageFormat::Tiff));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(ImageFormat::WebP));
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), None);
        assert_eq!(sniff(b"hello, world"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn junk_names_are_ignored() {
        for junk in
            [".hidden.jpg", "._IMG_1.JPG", ".DS_Store", "Thumbs.db", "THUMBS.DB", "a.tmp", "b.jpg.part", "c.jpg~"]
        {
            assert!(is_ignored_name(OsStr::new(junk)), "{junk}");
        }
        for ok in ["IMG_0001.JPG", "tray 3.png", "x.tiff", "IMG_0002.HEIC", "anim.gif"] {
            assert!(!is_ignored_name(OsStr::new(ok)), "{ok}");
        }
        assert!(is_ignored_path(Path::new(".thumbnails/a.jpg")));
        assert!(!is_ignored_path(Path::new("bench-a/a.jpg")));
    }

    #[test]
    fn extensions_are_case_insensitive() {
        assert!(has_image_extension(Path::new("a.JPG")));
        assert!(has_image_extension(Path::new("a.Jpeg")));
        assert!(has_image_extension(Path::new("a.webp")));
        assert!(!has_image_extension(Path::new("a.txt")));
        assert!(!has_image_extension(Path::new("jpg")));
    }
}
