//! The plant mask from the model's vegetation index, with thresholds taken from the photo itself.
//!
//! A fixed threshold on a colour index does not survive the camera: lowering the contrast by 0.7
//! scales the chromatic excess-green index by 0.7 or less, JPEG compression and the 5 × 5
//! smoothing dilute a small seedling's peak, and a dark, noisy photo lifts its shadows. So the
//! seed (the green a plant must reach somewhere) is a share of the photo's own strongest green,
//! clamped to a band so that a photo with no plants cannot lower it to the soil; the mask
//! threshold follows the seed; and pixels darker than a share of the photo's own bright level
//! are never plants (their chromaticity is noise).

use super::Rules;

/// The thresholds chosen for one photo, kept for the result's provenance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// A plant must contain a pixel at least this green.
    pub seed: f32,
    /// Pixels above this (and lit) are plant.
    pub mask: f32,
    /// Pixels with brightness below this are never plant.
    pub dark: f32,
}

/// Bins of a [`Histogram`]: the index (−1..2) is resolved to 0.0007, a thousandth of any
/// threshold it sets.
const BINS: usize = 4096;

/// Quantiles of values in a known range: one pass, no copy and no sort (every photo pays for
/// two of them).
struct Histogram {
    lo: f32,
    width: f32,
    /// `1 / width`: a multiply per value instead of a divide.
    per_unit: f32,
    counts: Vec<u32>,
    n: u64,
}

impl Histogram {
    fn new(lo: f32, hi: f32) -> Self {
        let width = (hi - lo) / BINS as f32;
        Self { lo, width, per_unit: 1.0 / width, counts: vec![0; BINS], n: 0 }
    }

    /// Counts `v`; values outside the range count in the first or last bin.
    fn add(&mut self, v: f32) {
        let i = ((v - self.lo) * self.per_unit).clamp(0.0, (BINS - 1) as f32) as usize;
        self.counts[i] += 1;
        self.n += 1;
    }

    /// The `q`-quantile (0..=1), as the centre of its bin; 0 when nothing was counted.
    fn quantile(&self, q: f64) -> f32 {
        if self.n == 0 {
            return 0.0;
        }
        let rank = ((self.n - 1) as f64 * q.clamp(0.0, 1.0)).round() as u64;
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen > rank {
                return self.lo + (i as f32 + 0.5) * self.width;
            }
        }
        self.lo + (BINS as f32 - 0.5) * self.width
    }
}

/// Thresholds for a photo from its vegetation index (−1..2) and brightness (0..3), same size,
/// row-major.
pub fn thresholds(vegetation: &[f32], brightness: Option<&[f32]>, rules: &Rules) -> Thresholds {
    let dark = match brightness {
        Some(b) if rules.dark_fraction > 0.0 => {
            let mut h = Histogram::new(0.0, 3.0);
            b.iter().for_each(|v| h.add(*v));
            (rules.dark_fraction * f64::from(h.quantile(0.99))) as f32
        }
        _ => f32::NEG_INFINITY,
    };
    let max_seed = rules.seed_vegetation.unwrap_or(f32::INFINITY);
    let seed = if rules.seed_fraction > 0.0 {
        let mut h = Histogram::new(-1.0, 2.0);
        match brightness {
            Some(b) => vegetation.iter().zip(b).filter(|(_, b)| **b > dark).for_each(|(v, _)| h.add(*v)),
            None => vegetation.iter().for_each(|v| h.add(*v)),
        }
        let strongest = h.quantile(rules.seed_quantile);
        ((rules.seed_fraction * f64::from(strongest)) as f32).clamp(rules.seed_min.min(max_seed), max_seed)
    } else {
        max_seed
    };
    let mask = (rules.mask_ratio as f32 * seed).max(rules.mask_min);
    Thresholds { seed, mask, dark }
}

/// The mask for `t`: index above the mask threshold on lit pixels, then a 3 × 3 opening (erode,
/// dilate) that drops single-pixel specks, as the model's own mask does.
pub fn mask(vegetation: &[f32], brightness: Option<&[f32]>, width: usize, height: usize, t: &Thresholds) -> Vec<bool> {
    let raw: Vec<bool> = match brightness {
        Some(b) => vegetation.iter().zip(b).map(|(v, b)| *v > t.mask && *b > t.dark).collect(),
        None => vegetation.iter().map(|v| *v > t.mask).collect(),
    };
    // Erosion treats the border as plant (as the graph's padded min-pool does), dilation as not.
    let eroded = morph3::<true>(&raw, width, height);
    morph3::<false>(&eroded, width, height)
}

/// A 3 × 3 erosion (`ERODE`) or dilation, as a row pass and a column pass (the square is
/// separable), over slices the compiler can vectorise. Outside the image counts as set for
/// erosion (it cannot erode the border) and unset for dilation.
fn morph3<const ERODE: bool>(m: &[bool], w: usize, h: usize) -> Vec<bool> {
    let f = |a: bool, b: bool, c: bool| if ERODE { a & b & c } else { a | b | c };
    let edge = vec![ERODE; w];
    let mut rows = vec![false; m.len()];
    for (r, o) in m.chunks_exact(w).zip(rows.chunks_exact_mut(w)) {
        o[0] = f(ERODE, r[0], r.get(1).copied().unwrap_or(ERODE));
        for (o, win) in o[1..].iter_mut().zip(r.windows(3)) {
            *o = f(win[0], win[1], win[2]);
        }
        if w > 1 {
            o[w - 1] = f(r[w - 2], r[w - 1], ERODE);
        }
    }
    let mut out = vec![false; m.len()];
    for y in 0..h {
        let up = if y > 0 { &rows[(y - 1) * w..y * w] } else { &edge[..] };
        let down = if y + 1 < h { &rows[(y + 1) * w..(y + 2) * w] } else { &edge[..] };
        let mid = &rows[y * w..(y + 1) * w];
        for (((o, a), b), c) in out[y * w..(y + 1) * w].iter_mut().zip(up).zip(mid).zip(down) {
            *o = f(*a, *b, *c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            seed_vegetation: Some(0.25),
            seed_fraction: 0.4,
            seed_quantile: 0.995,
            seed_min: 0.13,
            mask_ratio: 0.65,
            mask_min: 0.09,
            dark_fraction: 0.12,
            ..Rules::default()
        }
    }

    #[test]
    fn histogram_quantiles_are_within_a_bin() {
        let mut h = Histogram::new(0.0, 100.0);
        (0..=100).rev().for_each(|i| h.add(i as f32));
        let bin = 100.0 / BINS as f32;
        assert!((h.quantile(0.5) - 50.0).abs() <= bin, "{}", h.quantile(0.5));
        assert!((h.quantile(0.99) - 99.0).abs() <= bin, "{}", h.quantile(0.99));
        // Values outside the range land in the end bins; nothing counted reads as 0.
        h.add(-5.0);
        assert!(h.quantile(0.0) < bin);
        assert_eq!(Histogram::new(0.0, 1.0).quantile(0.5), 0.0);
    }

    #[test]
    fn the_seed_follows_the_photos_green_within_its_band() {
        let r = rules();
        // Plants at 0.5 on 1 % of the pixels: seed 0.4 × 0.5 = 0.2, mask 0.13.
        let veg: Vec<f32> = (0..10_000).map(|i| if i % 100 == 0 { 0.5 } else { 0.0 }).collect();
        let t = thresholds(&veg, None, &r);
        // Within half a histogram bin (0.00037) of the index, times 0.4.
        assert!((t.seed - 0.2).abs() < 2e-4 && (t.mask - 0.13).abs() < 2e-4, "{t:?}");
        // The same photo at 0.7 contrast: thresholds scale with it.
        let low: Vec<f32> = veg.iter().map(|v| v * 0.7).collect();
        let t = thresholds(&low, None, &r);
        assert!((t.seed - 0.14).abs() < 2e-4, "{t:?}");
        // No plants: the floor holds, soil never becomes a plant.
        let soil = vec![0.02f32; 10_000];
        let t = thresholds(&soil, None, &r);
        assert_eq!((t.seed, t.mask), (0.13, 0.09));
        // Very green photos cannot raise the seed past the model's own value.
        let t = thresholds(&[0.9f32; 100], None, &r);
        assert_eq!(t.seed, 0.25);
    }

    #[test]
    fn dark_pixels_are_never_plant_whatever_their_chromaticity() {
        let r = rules();
        let (w, h) = (20, 10);
        let veg = vec![0.4f32; w * h];
        // Left half lit (brightness 2.0), right half in deep shadow (0.1 < 0.12 × 2.0).
        let bright: Vec<f32> = (0..w * h).map(|i| if i % w < 10 { 2.0 } else { 0.1 }).collect();
        let t = thresholds(&veg, Some(&bright), &r);
        let m = mask(&veg, Some(&bright), w, h, &t);
        assert!(m[5 * w + 3] && !m[5 * w + 15]);
    }

    #[test]
    fn the_opening_drops_specks_and_keeps_shapes() {
        let (w, h) = (12, 8);
        let mut veg = vec![0.0f32; w * h];
        veg[2 * w + 2] = 0.5; // a speck
        for y in 2..7 {
            for x in 6..11 {
                veg[y * w + x] = 0.5; // a 5 × 5 plant
            }
        }
        let t = Thresholds { seed: 0.2, mask: 0.1, dark: f32::NEG_INFINITY };
        let m = mask(&veg, None, w, h, &t);
        assert!(!m[2 * w + 2]);
        assert_eq!(m.iter().filter(|v| **v).count(), 25);
    }

    #[test]
    fn the_separable_passes_match_the_three_by_three_square() {
        let (w, h) = (37usize, 23usize);
        let mut state = 12345u32;
        let m: Vec<bool> = (0..w * h)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                !(state >> 16).is_multiple_of(3)
            })
            .collect();
        // The square, by definition: neighbours inside the image only.
        let square = |erode: bool| -> Vec<bool> {
            (0..w * h)
                .map(|i| {
                    let (x, y) = (i % w, i / w);
                    let mut vals = Vec::new();
                    for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                        for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                            vals.push(m[ny * w + nx]);
                        }
                    }
                    if erode {
                        vals.iter().all(|v| *v)
                    } else {
                        vals.iter().any(|v| *v)
                    }
                })
                .collect()
        };
        assert_eq!(morph3::<true>(&m, w, h), square(true));
        assert_eq!(morph3::<false>(&m, w, h), square(false));
        assert!(square(true) != m && square(false) != m, "the mask is one the operations change");
    }
}
