//! Location labels: QR codes generated here, pasted onto real greenhouse photos, read back.

use std::path::PathBuf;

use demeter_infer::{decode, decode_for, qr, DecodeLimits};
use image::{DynamicImage, GenericImage, Luma};

fn real(name: &str) -> DynamicImage {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("../../../shared/data/real");
    let bytes = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    decode(&bytes, DecodeLimits { max_pixels: 100_000_000 }).unwrap()
}

/// Pastes a QR code for `text` at (`x`, `y`), `module` pixels per module, with its quiet zone.
fn paste_label(photo: &mut DynamicImage, text: &str, x: u32, y: u32, module: u32) -> u32 {
    let code = qrcode::QrCode::new(text.as_bytes()).unwrap();
    let label = code.render::<Luma<u8>>().module_dimensions(module, module).quiet_zone(true).build();
    let rgba = DynamicImage::ImageLuma8(label).to_rgba8();
    photo.copy_from(&rgba, x, y).unwrap();
    rgba.width()
}

#[test]
fn labels_on_real_photos_are_read_and_photos_without_are_not() {
    let tray = real("01_pcv-tut-arabidopsis-tray__arabidopsis_tray.jpg");
    assert!(qr::read(&qr::search_image(&tray)).is_empty(), "no label, no text");

    // A label on the tray's left edge, ~7 % of the photo's width, as a person would stick it.
    let mut labelled = tray.clone();
    let side = paste_label(&mut labelled, "B2", 40, 1500, 6);
    assert!(side < 200, "{side}");
    assert_eq!(qr::read(&qr::search_image(&labelled)), vec!["B2".to_owned()]);

    // The same through a JPEG round trip (how a camera would store it), and a longer text.
    let mut tobacco = real("05_pcv-workshop__3_wt_891.JPG");
    paste_label(&mut tobacco, "Greenhouse 3 / Bench 12", 3800, 150, 8);
    let mut jpeg = Vec::new();
    tobacco.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    let back = decode(&jpeg, DecodeLimits { max_pixels: 100_000_000 }).unwrap();
    assert_eq!(qr::read(&qr::search_image(&back)), vec!["Greenhouse 3 / Bench 12".to_owned()]);
    // As the pipeline reads it: decoded at the search size, the grey copy turned upright.
    let reduced = decode_for(&jpeg, DecodeLimits { max_pixels: 100_000_000 }, qr::SEARCH_SIDE).unwrap();
    assert_eq!(qr::read(&qr::search_image_of(&reduced)), vec!["Greenhouse 3 / Bench 12".to_owned()]);
}
