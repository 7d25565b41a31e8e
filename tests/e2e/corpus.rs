//! A bad-input corpus of more than 200 generated files through the real pipeline: each one is
//! processed or fails with a readable reason, the process never dies, and a decompression bomb
//! is refused before its pixels are allocated.

use std::{fs, path::Path};

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};

/// A small scene: soil with a few green rosettes, so valid files have something to count.
fn scene(w: u32, h: u32) -> image::RgbImage {
    ImageBuffer::from_fn(w, h, |x, y| {
        let plant = [(0.25, 0.3), (0.5, 0.3), (0.75, 0.3), (0.4, 0.7), (0.6, 0.7)].iter().any(|(cx, cy)| {
            let (dx, dy) = (x as f32 / w as f32 - cx, y as f32 / h as f32 - cy);
            dx * dx + dy * dy < 0.004
        });
        if plant {
            Rgb([70, 170, 60])
        } else {
            Rgb([92, 64, 40])
        }
    })
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), format).unwrap();
    out
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    c.extend_from_slice(&crc32(&crc_input).to_be_bytes());
    c
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { 0xEDB8_8320 ^ (crc >> 1) } else { crc >> 1 };
        }
    }
    !crc
}

/// A PNG whose header claims `w × h` (8-bit RGB), with a token of image data.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut f = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    f.extend(png_chunk(b"IHDR", &ihdr));
    f.extend(png_chunk(b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    f.extend(png_chunk(b"IEND", &[]));
    f
}

/// A JPEG whose frame header claims `w × h`, followed by a real scan of a small image.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut real = encode(&DynamicImage::ImageRgb8(scene(16, 16)), ImageFormat::Jpeg);
    // Patch the dimensions in the baseline SOF0 (FF C0 len P Y X).
    let sof = real.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
    real[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    real[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    real
}

/// A valid JPEG with `n` APP1 (EXIF) segments of garbage, 64 KB each.
fn jpeg_with_huge_exif(n: usize) -> Vec<u8> {
    let real = encode(&DynamicImage::ImageRgb8(scene(64, 48)), ImageFormat::Jpeg);
    let mut out = real[..2].to_vec();
    for i in 0..n {
        out.extend_from_slice(&[0xFF, 0xE1, 0xFF, 0xFF]);
        let mut payload = b"Exif\0\0MM\0\x2a".to_vec();
        payload.resize(0xFFFF - 2, (i % 251) as u8);
        out.extend_from_slice(&payload);
    }
    out.extend_from_slice(&real[2..]);
    out
}

fn write_corpus(dir: &Path) -> usize {
    let mut n = 0;
    let mut put = |name: String, bytes: &[u8]| {
        fs::write(dir.join(name), bytes).unwrap();
        n += 1;
    };
    let good_jpeg = encode(&DynamicImage::ImageRgb8(scene(320, 240)), ImageFormat::Jpeg);
    let good_png = encode(&DynamicImage::ImageRgb8(scene(320, 240)), ImageFormat::Png);
    // Truncated at many offsets.
    for k in 1..=90 {
        put(format!("trunc-jpeg-{k:03}.jpg"), &good_jpeg[..good_jpeg.len() * k / 91]);
    }
    for k in 1..=60 {
        put(format!("trunc-png-{k:03}.png"), &good_png[..good_png.len() * k / 61]);
    }
    // Empty, random bytes under image names, text named .jpg.
    for ext in ["jpg", "png", "tif", "webp"] {
        put(format!("empty.{ext}"), &[]);
    }
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for k in 0..30 {
        let len = 1 + (k * 997) % 40_000;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        put(format!("random-{k:02}.{}", ["jpg", "png", "tiff", "webp", "jpeg"][k % 5]), &bytes);
    }
    for k in 0..5 {
        put(format!("text-{k}.jpg"), format!("this is not a photo, just notes #{k}\n").as_bytes());
    }
    // Lying headers: bombs and zero sizes.
    put("bomb-60000x60000.png".into(), &png_claiming(60_000, 60_000));
    put("bomb-1000000x10.png".into(), &png_claiming(1_000_000, 10));
    put("bomb-65000x65000.jpg".into(), &jpeg_claiming(65_000, 65_000));
    put("zero-width.png".into(), &png_claiming(0, 100));
    put("zero-height.jpg".into(), &jpeg_claiming(100, 0));
    // Unusual but valid: 16-bit, grey, grey+alpha, RGBA, 1×1, TIFF, huge EXIF, and the fixtures
    // (CMYK and progressive JPEG, animated WebP and GIF) from tests/corpus/make-fixtures.py.
    let base = scene(320, 240);
    let rgb16: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_fn(320, 240, |x, y| {
        let p = base.get_pixel(x, y).0;
        Rgb(p.map(|v| u16::from(v) * 257))
    });
    put("rgb16.png".into(), &encode(&DynamicImage::ImageRgb16(rgb16), ImageFormat::Png));
    let grey: ImageBuffer<Luma<u8>, Vec<u8>> = DynamicImage::ImageRgb8(scene(320, 240)).to_luma8();
    put("grey.png".into(), &encode(&DynamicImage::ImageLuma8(grey.clone()), ImageFormat::Png));
    put("grey.jpg".into(), &encode(&DynamicImage::ImageLuma8(grey.clone()), ImageFormat::Jpeg));
    let la: ImageBuffer<LumaA<u8>, Vec<u8>> =
        ImageBuffer::from_fn(320, 240, |x, y| LumaA([grey.get_pixel(x, y).0[0], 200]));
    put("grey-alpha.png".into(), &encode(&DynamicImage::ImageLumaA8(la), ImageFormat::Png));
    let rgba: ImageBuffer<Rgba<u8>, Vec<u8>> = ImageBuffer::from_fn(320, 240, |x, y| {
        let p = base.get_pixel(x, y).0;
        Rgba([p[0], p[1], p[2], (x % 256) as u8])
    });
    put("alpha.png".into(), &encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png));
    put("one-pixel.png".into(), &encode(&DynamicImage::ImageRgb8(scene(1, 1)), ImageFormat::Png));
    put("one-pixel.jpg".into(), &encode(&DynamicImage::ImageRgb8(scene(1, 1)), ImageFormat::Jpeg));
    put("tray.tiff".into(), &encode(&DynamicImage::ImageRgb8(scene(320, 240)), ImageFormat::Tiff));
    put("huge-exif.jpg".into(), &jpeg_with_huge_exif(30));
    let fixtures = demeter_tests::package_dir().join("corpus");
    for f in ["cmyk.jpg", "progressive.jpg", "animated.webp", "animated.gif"] {
        put(f.into(), &fs::read(fixtures.join(f)).unwrap());
    }
    n
}

#[test]
fn every_bad_input_is_processed_or_fails_with_a_reason_and_nothing_dies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("corpus");
    fs::create_dir_all(&dir).unwrap();
    let files = write_corpus(&dir);
    assert!(files >= 200, "{files} files");
    let json = tmp.path().join("out.json");
    let started = std::time::Instant::now();
    let out = std::process::Command::new(demeter_tests::demeter_bin())
        .args(["process", dir.to_str().unwrap(), "--workers", "4", "--json", json.to_str().unwrap()])
        .env("DEMETER_CONFIG", "")
        .output()
        .unwrap();
    // Peak memory of any child this test binary has waited for: bounded, where one bomb
    // decoded for real would need 10.8 GB.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) }, 0);
    let peak_mb = usage.ru_maxrss / 1024;
    assert!(peak_mb < 1024, "peak RSS {peak_mb} MB");
    // Exit 1 ("some photos failed"), never a signal: the process survived every file.
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    let photos = doc["photos"].as_array().unwrap();
    assert_eq!(photos.len(), files, "every file has a report");
    // How busy the four workers were: their summed time per photo over 4 × the wall time
    // (start-up included). Printed for docs/reliability.md, not asserted (noisy machines).
    let busy_ms: u64 = photos.iter().map(|p| p["elapsed_ms"].as_u64().unwrap()).sum();
    let wall_ms = started.elapsed().as_millis() as u64;
    eprintln!(
        "{files} files in {wall_ms} ms with 4 workers: {busy_ms} ms of photo work, utilisation {:.0} %, peak RSS {peak_mb} MB",
        100.0 * busy_ms as f64 / (4 * wall_ms) as f64
    );
    let reason = |name: &str| {
        let p = photos.iter().find(|p| p["path"].as_str().unwrap().ends_with(name)).unwrap();
        (p["status"].as_str().unwrap().to_owned(), p["error_message"].as_str().unwrap_or("").to_owned())
    };
    for p in photos {
        let name = p["path"].as_str().unwrap();
        match p["status"].as_str().unwrap() {
            "completed" => {}
            "failed" => {
                let why = p["error_message"].as_str().unwrap();
                assert!(!why.is_empty() && !why.contains("internal error"), "{name}: {why}");
            }
            other => panic!("{name}: {other}"),
        }
    }
    // Valid if unusual files are processed.
    for ok in [
        "rgb16.png",
        "grey.png",
        "grey.jpg",
        "grey-alpha.png",
        "alpha.png",
        "one-pixel.png",
        "one-pixel.jpg",
        "tray.tiff",
        "huge-exif.jpg",
        "cmyk.jpg",
        "progressive.jpg",
        "animated.webp",
    ] {
        assert_eq!(reason(ok).0, "completed", "{ok}: {}", reason(ok).1);
    }
    // The reasons a person reads.
    assert!(reason("bomb-60000x60000.png").1.contains("above the limit"), "{:?}", reason("bomb-60000x60000.png"));
    assert!(reason("bomb-65000x65000.jpg").1.contains("above the limit"), "{:?}", reason("bomb-65000x65000.jpg"));
    assert_eq!(reason("zero-width.png").0, "failed");
    assert!(reason("trunc-jpeg-045.jpg").1.contains("corrupt or truncated JPEG"), "{:?}", reason("trunc-jpeg-045.jpg"));
    assert!(reason("empty.jpg").1.contains("empty"), "{:?}", reason("empty.jpg"));
    assert!(reason("text-0.jpg").1.contains("not a supported image"), "{:?}", reason("text-0.jpg"));
    assert!(reason("animated.gif").1.contains("GIF images are not supported"), "{:?}", reason("animated.gif"));
}
