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

/// The `q`-quantile (0..=1) of `values`, by selection (no full sort).
fn quantile(values: &mut [f32], q: f64) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    let k = ((values.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    let (_, v, _) = values.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    *v
}

/// Thresholds for a photo from its vegetation index and brightness (same size, row-major).
pub fn thresholds(vegetation: &[f32], brightness: Option<&[f32]>, rules: &Rules) -> Thresholds {
    let dark = match brightness {
        Some(b) if rules.dark_fraction > 0.0 => {
            let mut copy = b.to_vec();
            (rules.dark_fraction * f64::from(quantile(&mut copy, 0.99))) as f32
        }
        _ => f32::NEG_INFINITY,
    };
    let mut lit: Vec<f32> = match brightness {
        Some(b) => vegetation.iter().zip(b).filter(|(_, b)| **b > dark).map(|(v, _)| *v).collect(),
        None => vegetation.to_vec(),
    };
    let max_seed = rules.seed_vegetation.unwrap_or(f32::INFINITY);
    let seed = if rules.seed_fraction > 0.0 {
        let strongest = quantile(&mut lit, rules.seed_quantile);
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
    let raw: Vec<bool> =
        (0..vegetation.len()).map(|i| vegetation[i] > t.mask && brightness.is_none_or(|b| b[i] > t.dark)).collect();
    // Erosion treats the border as plant (as the graph's padded min-pool does), dilation as not.
    let eroded = morph3(&raw, width, height, Morph::Erode);
    morph3(&eroded, width, height, Morph::Dilate)
}

#[derive(Clone, Copy, PartialEq)]
enum Morph {
    /// A pixel stays when its whole 3 × 3 neighbourhood is set (outside the image counts as set).
    Erode,
    /// A pixel is set when any of its 3 × 3 neighbourhood is (outside counts as unset).
    Dilate,
}

fn morph3(m: &[bool], w: usize, h: usize, op: Morph) -> Vec<bool> {
    let mut out = vec![false; m.len()];
    for y in 0..h {
        for x in 0..w {
            let mut any = false;
            let mut all = true;
            for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let v = m[ny * w + nx];
                    any |= v;
                    all &= v;
                }
            }
            out[y * w + x] = match op {
                Morph::Erode => all,
                Morph::Dilate => any,
            };
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
    fn quantiles_select_without_sorting_the_caller() {
        let mut v: Vec<f32> = (0..101).map(|i| i as f32).collect();
        v.reverse();
        assert_eq!(quantile(&mut v, 0.5), 50.0);
        assert_eq!(quantile(&mut v, 0.99), 99.0);
        assert_eq!(quantile(&mut [], 0.5), 0.0);
    }

    #[test]
    fn the_seed_follows_the_photos_green_within_its_band() {
        let r = rules();
        // Plants at 0.5 on 1 % of the pixels: seed 0.4 × 0.5 = 0.2, mask 0.13.
        let veg: Vec<f32> = (0..10_000).map(|i| if i % 100 == 0 { 0.5 } else { 0.0 }).collect();
        let t = thresholds(&veg, None, &r);
        assert!((t.seed - 0.2).abs() < 1e-6 && (t.mask - 0.13).abs() < 1e-6, "{t:?}");
        // The same photo at 0.7 contrast: thresholds scale with it.
        let low: Vec<f32> = veg.iter().map(|v| v * 0.7).collect();
        let t = thresholds(&low, None, &r);
        assert!((t.seed - 0.14).abs() < 1e-6, "{t:?}");
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
}
