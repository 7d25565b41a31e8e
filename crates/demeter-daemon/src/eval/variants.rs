//! Camera variants of a photo: the same tray as another camera, light or file would show it.
//! `demeter eval --variants` judges every photo with ground truth in each of them, so a count
//! that moves with the camera fails `make eval`, not a grower's unseen tray.
//!
//! Every variant is deterministic (the noise is seeded) and is stored as a camera stores photos,
//! a JPEG of quality 95 with full-resolution colour, except `jpeg35` (quality 35, 4:2:0) and
//! `png` (lossless). The truth is the photo's own: none of these changes what is in the tray.

use std::{fmt, str::FromStr};

use image::{imageops, Rgb, RgbImage};

/// One way of changing a photo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Variant {
    Rotate90,
    Rotate180,
    Flip,
    /// Resized by this factor (bilinear; averaging when shrinking).
    Scale(f32),
    /// Every channel multiplied by this.
    Brightness(f32),
    /// Pulled towards the photo's mean grey by this factor (PIL's `ImageEnhance.Contrast`).
    Contrast(f32),
    /// Channels multiplied by `[r, 1, b]`: a warm or cool white balance.
    WhiteBalance(f32, f32),
    /// Gaussian blur of this σ, in pixels.
    Blur(f32),
    /// Gaussian noise of this σ, in grey levels, per channel.
    Noise(f32),
    /// Stored as JPEG of this quality with 4:2:0 chroma.
    Jpeg(i32),
    /// The photo in the middle of a canvas this many times its size, filled with the median
    /// colour of the photo's border (the bench seen by a wider lens).
    Wider(f32),
    /// Stored losslessly as PNG.
    Png,
}

/// Every variant `make eval` judges, as the issue lists them: turned, flipped, rescaled from
/// 0.5× to 10× (within `max_pixels`), lighter and darker, lower contrast, warm and cool, blurred,
/// noisy, compressed, wider and lossless.
pub const ALL: [Variant; 17] = [
    Variant::Rotate90,
    Variant::Rotate180,
    Variant::Flip,
    Variant::Scale(0.5),
    Variant::Scale(2.0),
    Variant::Scale(4.0),
    Variant::Scale(10.0),
    Variant::Brightness(0.65),
    Variant::Brightness(1.3),
    Variant::Contrast(0.7),
    Variant::WhiteBalance(1.12, 0.82),
    Variant::WhiteBalance(0.85, 1.15),
    Variant::Blur(1.2),
    Variant::Noise(10.0),
    Variant::Jpeg(35),
    Variant::Wider(1.6),
    Variant::Png,
];

impl Variant {
    /// The variant kind this one reports under (the rows of the per-kind table).
    pub fn kind(&self) -> &'static str {
        match self {
            Variant::Rotate90 | Variant::Rotate180 | Variant::Flip => "orientation",
            Variant::Scale(_) => "scale",
            Variant::Brightness(_) => "brightness",
            Variant::Contrast(_) => "contrast",
            Variant::WhiteBalance(..) => "white balance",
            Variant::Blur(_) => "blur",
            Variant::Noise(_) => "noise",
            Variant::Jpeg(_) => "jpeg",
            Variant::Wider(_) => "wider view",
            Variant::Png => "png",
        }
    }

    /// The variant applied to an upright photo, and the file it is stored as.
    /// `None` when it would exceed `max_pixels`.
    pub fn apply(&self, img: &RgbImage, max_pixels: u64) -> Option<Result<(Vec<u8>, &'static str), String>> {
        let (w, h) = img.dimensions();
        let out = match *self {
            Variant::Rotate90 => imageops::rotate90(img),
            Variant::Rotate180 => imageops::rotate180(img),
            Variant::Flip => imageops::flip_horizontal(img),
            Variant::Scale(f) => {
                let (nw, nh) = ((w as f32 * f).round().max(1.0) as u32, (h as f32 * f).round().max(1.0) as u32);
                if u64::from(nw) * u64::from(nh) > max_pixels {
                    return None;
                }
                imageops::resize(img, nw, nh, imageops::FilterType::Triangle)
            }
            Variant::Brightness(f) => map(img, |_, v| v * f),
            Variant::Contrast(f) => {
                let n = f64::from(w) * f64::from(h);
                let mean = img.pixels().map(luma).sum::<f64>() / n;
                map(img, |_, v| mean as f32 + (v - mean as f32) * f)
            }
            Variant::WhiteBalance(r, b) => map(img, |c, v| v * [r, 1.0, b][c]),
            Variant::Blur(sigma) => imageops::blur(img, sigma),
            Variant::Noise(sigma) => {
                let mut rng = Gaussian::new(0x5eed_u64);
                map(img, |_, v| v + sigma * rng.next())
            }
            Variant::Wider(f) => {
                let (nw, nh) = ((w as f32 * f).round() as u32, (h as f32 * f).round() as u32);
                if u64::from(nw) * u64::from(nh) > max_pixels {
                    return None;
                }
                let mut canvas = RgbImage::from_pixel(nw, nh, border_median(img));
                imageops::replace(&mut canvas, img, i64::from((nw - w) / 2), i64::from((nh - h) / 2));
                canvas
            }
            Variant::Jpeg(q) => {
                return Some(
                    demeter_infer::thumbnail::jpeg_with(img, q, false).map(|b| (b, "jpg")).map_err(|e| e.to_string()),
                )
            }
            Variant::Png => {
                let mut bytes = Vec::new();
                return Some(
                    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
                        .map(|()| (bytes, "png"))
                        .map_err(|e| e.to_string()),
                );
            }
        };
        Some(demeter_infer::thumbnail::jpeg_with(&out, 95, true).map(|b| (b, "jpg")).map_err(|e| e.to_string()))
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Variant::Rotate90 => write!(f, "rotate90"),
            Variant::Rotate180 => write!(f, "rotate180"),
            Variant::Flip => write!(f, "flip"),
            Variant::Scale(x) => write!(f, "scale{x}"),
            Variant::Brightness(x) if *x < 1.0 => write!(f, "darker{x}"),
            Variant::Brightness(x) => write!(f, "brighter{x}"),
            Variant::Contrast(x) => write!(f, "contrast{x}"),
            Variant::WhiteBalance(r, _) if *r > 1.0 => write!(f, "warm"),
            Variant::WhiteBalance(..) => write!(f, "cool"),
            Variant::Blur(s) => write!(f, "blur{s}"),
            Variant::Noise(s) => write!(f, "noise{s}"),
            Variant::Jpeg(q) => write!(f, "jpeg{q}"),
            Variant::Wider(x) => write!(f, "wider{x}"),
            Variant::Png => write!(f, "png"),
        }
    }
}

/// `all`, or a comma-separated list of names as [`Variant`] prints them.
pub fn parse_list(s: &str) -> Result<Vec<Variant>, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(ALL.to_vec());
    }
    s.split(',').map(|name| name.trim().parse()).collect()
}

impl FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.iter()
            .find(|v| v.to_string() == s)
            .copied()
            .ok_or_else(|| format!("unknown variant {s:?}; one of: all, {}", ALL.map(|v| v.to_string()).join(", ")))
    }
}

fn luma(p: &Rgb<u8>) -> f64 {
    0.299 * f64::from(p.0[0]) + 0.587 * f64::from(p.0[1]) + 0.114 * f64::from(p.0[2])
}

/// Each channel value `v` (0..255) of each pixel through `f(channel, v)`, rounded and clamped.
fn map(img: &RgbImage, mut f: impl FnMut(usize, f32) -> f32) -> RgbImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        for c in 0..3 {
            p.0[c] = f(c, f32::from(p.0[c])).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// The per-channel median of the photo's outermost pixels.
fn border_median(img: &RgbImage) -> Rgb<u8> {
    let (w, h) = img.dimensions();
    let mut border: Vec<Rgb<u8>> = (0..w).flat_map(|x| [*img.get_pixel(x, 0), *img.get_pixel(x, h - 1)]).collect();
    border.extend((0..h).flat_map(|y| [*img.get_pixel(0, y), *img.get_pixel(w - 1, y)]));
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let mut v: Vec<u8> = border.iter().map(|p| p.0[c]).collect();
        v.sort_unstable();
        *o = v[v.len() / 2];
    }
    Rgb(out)
}

/// Standard normal numbers from a seeded xorshift generator (Box–Muller): the same noise on
/// every run and machine.
struct Gaussian {
    state: u64,
    spare: Option<f32>,
}

impl Gaussian {
    fn new(seed: u64) -> Self {
        Self { state: seed.max(1), spare: None }
    }

    fn uniform(&mut self) -> f64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        ((self.state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn next(&mut self) -> f32 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u, v) = (self.uniform(), self.uniform());
        let r = (-2.0 * u.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * v).sin_cos();
        self.spare = Some((r * s) as f32);
        (r * c) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo() -> RgbImage {
        RgbImage::from_fn(40, 30, |x, y| Rgb([(x * 6) as u8, 120, (y * 8) as u8]))
    }

    fn decoded(bytes: &[u8]) -> RgbImage {
        image::load_from_memory(bytes).unwrap().to_rgb8()
    }

    #[test]
    fn names_round_trip_and_all_parses() {
        for v in ALL {
            assert_eq!(v.to_string().parse::<Variant>(), Ok(v));
        }
        assert_eq!(parse_list("all").unwrap().len(), ALL.len());
        assert_eq!(parse_list("flip,png").unwrap(), vec![Variant::Flip, Variant::Png]);
        assert!(parse_list("sepia").unwrap_err().contains("unknown variant"));
    }

    #[test]
    fn geometry_changes_the_size_as_named() {
        let p = photo();
        let size = |v: Variant| decoded(&v.apply(&p, 1_000_000).unwrap().unwrap().0).dimensions();
        assert_eq!(size(Variant::Rotate90), (30, 40));
        assert_eq!(size(Variant::Scale(0.5)), (20, 15));
        assert_eq!(size(Variant::Scale(10.0)), (400, 300));
        assert_eq!(size(Variant::Wider(1.6)), (64, 48));
        assert!(Variant::Scale(10.0).apply(&p, 100_000).is_none(), "beyond max_pixels: skipped");
    }

    #[test]
    fn colour_changes_do_what_they_say() {
        let p = RgbImage::from_pixel(16, 16, Rgb([100, 100, 100]));
        let px = |v: Variant| *decoded(&v.apply(&p, 1_000_000).unwrap().unwrap().0).get_pixel(8, 8);
        let near = |a: Rgb<u8>, b: [u8; 3]| a.0.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 2);
        assert!(near(px(Variant::Brightness(0.65)), [65, 65, 65]));
        assert!(near(px(Variant::WhiteBalance(1.12, 0.82)), [112, 100, 82]));
        assert!(near(px(Variant::Contrast(0.7)), [100, 100, 100]), "a flat photo has no contrast to lose");
        // The PNG is lossless.
        let png = Variant::Png.apply(&photo(), 1_000_000).unwrap().unwrap();
        assert_eq!(png.1, "png");
        assert_eq!(decoded(&png.0), photo());
    }

    #[test]
    fn noise_has_the_sigma_asked_and_is_the_same_every_time() {
        let p = RgbImage::from_pixel(100, 100, Rgb([128, 128, 128]));
        let a = Variant::Noise(10.0).apply(&p, 1_000_000).unwrap().unwrap().0;
        let b = Variant::Noise(10.0).apply(&p, 1_000_000).unwrap().unwrap().0;
        assert_eq!(a, b, "seeded");
        let mut g = Gaussian::new(1);
        let xs: Vec<f32> = (0..20_000).map(|_| g.next()).collect();
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / xs.len() as f32).sqrt();
        assert!(mean.abs() < 0.03 && (sd - 1.0).abs() < 0.03, "{mean} {sd}");
    }
}
