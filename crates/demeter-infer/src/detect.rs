//! From a plant mask to plants. Connected components are the starting point; then, with the
//! model's [`Rules`]: components without a clearly green core or too small next to the photo's
//! plants are dropped (hysteresis against soil, moss, colour-card patches), fragments of one
//! plant (leaves cut off at their stalks, an oblique stem) are merged into it, and a component
//! much larger than the photo's typical plant is split at its distance-transform cores (touching
//! rosettes). Every rule is relative to the image or to the photo's own plants, so counts do not
//! depend on the photo's resolution.

use std::collections::VecDeque;

use serde::Deserialize;

/// One plant (or connected component), in mask coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// `[x, y, width, height]`.
    pub bbox: [u32; 4],
    pub centroid: [f64; 2],
    pub area: u64,
}

/// How components become plants; the `[detection]` table of a model's manifest. The defaults
/// switch every step off, so a manifest without the table keeps plain connected components.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// A plant must contain a pixel whose vegetation index reaches this (the mask's own, lower
    /// threshold decides the extent). `None`: no check.
    pub seed_vegetation: Option<f32>,
    /// Components smaller than this share of the photo's largest plant are dropped.
    pub relative_min_area: f64,
    /// A component at most `merge_max_ratio` of a larger one joins it when it is within
    /// `merge_gap × sqrt(larger area)` pixels of it, or its centre is within that distance of
    /// the larger one's box. `0` switches merging off.
    pub merge_gap: f64,
    pub merge_max_ratio: f64,
    /// A component at least this many times the median plant is split at its cores (when there
    /// are at least three plants to take a median of). `0` switches splitting off.
    pub split_min_median: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            seed_vegetation: None,
            relative_min_area: 0.0,
            merge_gap: 0.0,
            merge_max_ratio: 0.0,
            split_min_median: 0.0,
        }
    }
}

impl Rules {
    /// Why a value cannot be used, naming the key.
    pub fn check(&self) -> Result<(), String> {
        let unit = |v: f64, key: &str| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("detection.{key} must be in 0..1"))
            }
        };
        unit(self.relative_min_area, "relative_min_area")?;
        unit(self.merge_max_ratio, "merge_max_ratio")?;
        if !(0.0..=10.0).contains(&self.merge_gap) {
            return Err("detection.merge_gap must be in 0..10".into());
        }
        if self.split_min_median != 0.0 && !(1.0..=100.0).contains(&self.split_min_median) {
            return Err("detection.split_min_median must be 0 (off) or in 1..100".into());
        }
        Ok(())
    }
}

/// Pixels (row-major indices) of one candidate plant.
#[derive(Debug, Clone)]
struct Blob {
    pixels: Vec<usize>,
    /// `[x0, y0, x1, y1]`, inclusive.
    bounds: [usize; 4],
}

impl Blob {
    fn new(pixels: Vec<usize>, width: usize) -> Self {
        let mut b = [usize::MAX, usize::MAX, 0, 0];
        for &i in &pixels {
            let (x, y) = (i % width, i / width);
            b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
        }
        Self { pixels, bounds: b }
    }

    fn area(&self) -> usize {
        self.pixels.len()
    }

    fn centre(&self, width: usize) -> [f64; 2] {
        let n = self.pixels.len().max(1) as f64;
        let (sx, sy) =
            self.pixels.iter().fold((0.0, 0.0), |(sx, sy), &i| (sx + (i % width) as f64, sy + (i / width) as f64));
        [sx / n, sy / n]
    }

    fn component(&self, width: usize) -> Component {
        let [x0, y0, x1, y1] = self.bounds;
        Component {
            bbox: [x0 as u32, y0 as u32, (x1 - x0 + 1) as u32, (y1 - y0 + 1) as u32],
            centroid: self.centre(width),
            area: self.pixels.len() as u64,
        }
    }

    /// Gap between the two boxes (0 when they overlap), per axis.
    fn box_gap(&self, other: &Blob) -> (f64, f64) {
        let gap = |a0: usize, a1: usize, b0: usize, b1: usize| {
            if a1 < b0 {
                (b0 - a1) as f64
            } else if b1 < a0 {
                (a0 - b1) as f64
            } else {
                0.0
            }
        };
        (
            gap(self.bounds[0], self.bounds[2], other.bounds[0], other.bounds[2]),
            gap(self.bounds[1], self.bounds[3], other.bounds[1], other.bounds[3]),
        )
    }
}

/// Labels the 8-connected components of `mask` (row-major, `width × height`). Iterative
/// (explicit stack): no recursion depth to overflow on a mask that is one big plant.
fn label(mask: &[bool], width: usize, height: usize) -> Vec<Blob> {
    assert_eq!(mask.len(), width * height, "mask size");
    let mut visited = vec![false; mask.len()];
    let mut stack = Vec::new();
    let mut out = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || visited[start] {
            continue;
        }
        visited[start] = true;
        stack.push(start);
        let mut pixels = Vec::new();
        while let Some(i) = stack.pop() {
            pixels.push(i);
            let (x, y) = (i % width, i / width);
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let j = ny * width + nx;
                    if mask[j] && !visited[j] {
                        visited[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        out.push(Blob::new(pixels, width));
    }
    out
}

fn sorted(mut out: Vec<Component>) -> Vec<Component> {
    out.sort_by(|a, b| b.area.cmp(&a.area).then(a.bbox.cmp(&b.bbox)));
    out
}

/// The 8-connected components of `mask` with at least `min_area` pixels, largest first.
pub fn components(mask: &[bool], width: usize, height: usize, min_area: u64) -> Vec<Component> {
    sorted(
        label(mask, width, height)
            .into_iter()
            .filter(|b| b.area() as u64 >= min_area)
            .map(|b| b.component(width))
            .collect(),
    )
}

/// Plants in `mask`, largest first: components of at least `min_area` pixels, then `rules`.
/// `vegetation` is the model's index at the same size, when it has one.
pub fn plants(
    mask: &[bool],
    vegetation: Option<&[f32]>,
    width: usize,
    height: usize,
    min_area: u64,
    rules: &Rules,
) -> Vec<Component> {
    let mut blobs: Vec<Blob> = label(mask, width, height).into_iter().filter(|b| b.area() as u64 >= min_area).collect();
    if let (Some(seed), Some(veg)) = (rules.seed_vegetation, vegetation) {
        blobs.retain(|b| b.pixels.iter().any(|&i| veg.get(i).is_some_and(|v| *v >= seed)));
    }
    let largest = blobs.iter().map(Blob::area).max().unwrap_or(0) as f64;
    blobs.retain(|b| b.area() as f64 >= rules.relative_min_area * largest);
    if rules.merge_gap > 0.0 {
        blobs = merge_fragments(blobs, width, rules);
    }
    if rules.split_min_median > 0.0 && blobs.len() >= 3 {
        blobs = split_touching(blobs, width, rules);
    }
    sorted(blobs.iter().map(|b| b.component(width)).collect())
}

/// Merges small components into larger ones nearby, smallest first; a plant grows as its
/// fragments join, so a leaf beyond another leaf still finds it.
fn merge_fragments(mut blobs: Vec<Blob>, width: usize, rules: &Rules) -> Vec<Blob> {
    blobs.sort_by_key(|b| std::cmp::Reverse(b.area()));
    let mut alive = vec![true; blobs.len()];
    for j in (1..blobs.len()).rev() {
        let into = (0..j).find(|&i| alive[i] && belongs_to(&blobs[j], &blobs[i], width, rules));
        if let Some(i) = into {
            alive[j] = false;
            let fragment = std::mem::take(&mut blobs[j].pixels);
            let mut pixels = std::mem::take(&mut blobs[i].pixels);
            pixels.extend(fragment);
            blobs[i] = Blob::new(pixels, width);
        }
    }
    blobs.into_iter().zip(alive).filter(|(_, a)| *a).map(|(b, _)| b).collect()
}

/// Whether `small` is a fragment of `big`.
fn belongs_to(small: &Blob, big: &Blob, width: usize, rules: &Rules) -> bool {
    if small.area() as f64 > rules.merge_max_ratio * big.area() as f64 {
        return false;
    }
    let reach = rules.merge_gap * (big.area() as f64).sqrt();
    let (gx, gy) = small.box_gap(big);
    if gx > reach || gy > reach {
        return false;
    }
    let [cx, cy] = small.centre(width);
    let [x0, y0, x1, y1] = big.bounds.map(|v| v as f64);
    if cx >= x0 - reach && cx <= x1 + reach && cy >= y0 - reach && cy <= y1 + reach {
        return true;
    }
    // The nearest pair of pixels; only pixels of `big` inside `small`'s box grown by `reach`
    // can be that near, which keeps this cheap for a big plant.
    let near = |i: &usize| {
        let (x, y) = ((i % width) as f64, (i / width) as f64);
        x >= small.bounds[0] as f64 - reach
            && x <= small.bounds[2] as f64 + reach
            && y >= small.bounds[1] as f64 - reach
            && y <= small.bounds[3] as f64 + reach
    };
    let candidates: Vec<(f64, f64)> =
        big.pixels.iter().filter(|i| near(i)).map(|&i| ((i % width) as f64, (i / width) as f64)).collect();
    let reach2 = reach * reach;
    small.pixels.iter().any(|&i| {
        let (x, y) = ((i % width) as f64, (i / width) as f64);
        candidates.iter().any(|(bx, by)| (bx - x).powi(2) + (by - y).powi(2) <= reach2)
    })
}

/// Splits components much larger than the median plant at their distance-transform cores.
fn split_touching(blobs: Vec<Blob>, width: usize, rules: &Rules) -> Vec<Blob> {
    let mut areas: Vec<usize> = blobs.iter().map(Blob::area).collect();
    areas.sort_unstable();
    let median = areas[areas.len() / 2] as f64;
    let mut out = Vec::with_capacity(blobs.len());
    for b in blobs {
        if (b.area() as f64) < rules.split_min_median * median {
            out.push(b);
            continue;
        }
        let parts = split_at_cores(&b, width, median);
        if parts.len() >= 2 {
            out.extend(parts);
        } else {
            out.push(b);
        }
    }
    out
}

/// A core is where the distance to the background is at least half the blob's maximum; a
/// rosette has one, two touching rosettes have two joined by a thinner neck. Each core with a
/// deep enough peak and a territory (pixels nearest to it along the blob) of at least 35 % of
/// the median plant becomes a plant.
fn split_at_cores(b: &Blob, width: usize, median: f64) -> Vec<Blob> {
    let [x0, y0, x1, y1] = b.bounds;
    let (w, h) = (x1 - x0 + 3, y1 - y0 + 3);
    let local = |i: usize| (i / width - y0 + 1) * w + (i % width - x0 + 1);
    let mut inside = vec![false; w * h];
    for &i in &b.pixels {
        inside[local(i)] = true;
    }
    let dist = distance_transform(&inside, w, h);
    let max = dist.iter().copied().fold(0.0f32, f32::max);
    let core_mask: Vec<bool> = dist.iter().map(|d| *d >= 0.5 * max).collect();
    let mut cores = label(&core_mask, w, h);
    let peak = |c: &Blob| c.pixels.iter().map(|&i| dist[i]).fold(0.0f32, f32::max);
    let biggest = cores.iter().map(Blob::area).max().unwrap_or(0) as f64;
    cores.retain(|c| peak(c) >= 0.7 * max && c.area() as f64 >= 0.2 * biggest);
    if cores.len() < 2 {
        return Vec::new();
    }
    // Geodesic territories: breadth-first from every core at once, through the blob only.
    let mut owner = vec![usize::MAX; w * h];
    let mut queue = VecDeque::new();
    for (k, c) in cores.iter().enumerate() {
        for &i in &c.pixels {
            owner[i] = k;
            queue.push_back(i);
        }
    }
    while let Some(i) = queue.pop_front() {
        let (x, y) = (i % w, i / w);
        for (nx, ny) in [(x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)] {
            let j = ny * w + nx;
            if inside[j] && owner[j] == usize::MAX {
                owner[j] = owner[i];
                queue.push_back(j);
            }
        }
    }
    let global = |j: usize| (j / w + y0 - 1) * width + (j % w + x0 - 1);
    let mut parts: Vec<Vec<usize>> = vec![Vec::new(); cores.len()];
    for (j, o) in owner.iter().enumerate() {
        if *o != usize::MAX {
            parts[*o].push(global(j));
        }
    }
    if parts.iter().filter(|p| p.len() as f64 >= 0.35 * median).count() < 2 {
        return Vec::new();
    }
    // Small territories (a leaf's own core) go back to the neighbouring part they touch most:
    // here, simply to the largest part, which keeps the count right and the areas close.
    parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let (keep, rest): (Vec<_>, Vec<_>) = parts.into_iter().partition(|p| p.len() as f64 >= 0.35 * median);
    let mut keep = keep;
    for p in rest {
        keep[0].extend(p);
    }
    keep.into_iter().map(|p| Blob::new(p, width)).collect()
}

/// Distance from each pixel to the nearest background pixel (0 on background), by the 3-4
/// chamfer metric in two passes: within 8 % of Euclidean, plenty for "at least half the
/// deepest". The border of the grid must be background (the caller pads by one pixel).
fn distance_transform(inside: &[bool], w: usize, h: usize) -> Vec<f32> {
    let mut d: Vec<u32> = inside.iter().map(|v| if *v { u32::MAX / 2 } else { 0 }).collect();
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let i = y * w + x;
            if d[i] > 0 {
                d[i] = d[i].min(d[i - 1] + 3).min(d[i - w] + 3).min(d[i - w - 1] + 4).min(d[i - w + 1] + 4);
            }
        }
    }
    for y in (1..h - 1).rev() {
        for x in (1..w - 1).rev() {
            let i = y * w + x;
            if d[i] > 0 {
                d[i] = d[i].min(d[i + 1] + 3).min(d[i + w] + 3).min(d[i + w + 1] + 4).min(d[i + w - 1] + 4);
            }
        }
    }
    d.iter().map(|v| *v as f32 / 3.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(rows: &[&str]) -> (Vec<bool>, usize, usize) {
        let w = rows[0].len();
        (rows.iter().flat_map(|r| r.chars().map(|c| c == '#')).collect(), w, rows.len())
    }

    #[test]
    fn counts_separate_blobs_and_joins_diagonals() {
        let (m, w, h) = parse(&["##....#", "##.....", "..#....", ".....##", ".....##"]);
        let c = components(&m, w, h, 1);
        assert_eq!(c.len(), 3, "{c:?}");
        assert_eq!(c[0].area, 5, "the diagonal pixel joins the top-left blob");
        assert_eq!(c[0].bbox, [0, 0, 3, 3]);
        assert_eq!(c[1].bbox, [5, 3, 2, 2]);
        assert_eq!(c[1].centroid, [5.5, 3.5]);
    }

    #[test]
    fn small_components_are_dropped() {
        let (m, w, h) = parse(&["#...###", "....###"]);
        let c = components(&m, w, h, 2);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].area, 6);
    }

    #[test]
    fn one_huge_component_does_not_overflow() {
        let (w, h) = (1000, 1000);
        let c = components(&vec![true; w * h], w, h, 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].area, (w * h) as u64);
    }

    /// A `w × h` mask with filled discs `(cx, cy, r)`.
    fn discs(w: usize, h: usize, discs: &[(f64, f64, f64)]) -> Vec<bool> {
        (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f64, (i / w) as f64);
                discs.iter().any(|(cx, cy, r)| (x - cx).powi(2) + (y - cy).powi(2) <= r * r)
            })
            .collect()
    }

    const RULES: Rules = Rules {
        seed_vegetation: Some(0.25),
        relative_min_area: 0.005,
        merge_gap: 0.35,
        merge_max_ratio: 0.3,
        split_min_median: 1.8,
    };

    #[test]
    fn pale_components_need_a_green_core() {
        let (w, h) = (60, 30);
        let m = discs(w, h, &[(12.0, 15.0, 8.0), (45.0, 15.0, 8.0)]);
        // The right disc is only faintly green: above the mask threshold, below the seed.
        let veg: Vec<f32> = (0..w * h).map(|i| if i % w < 30 { 0.4 } else { 0.18 }).collect();
        assert_eq!(plants(&m, Some(&veg), w, h, 1, &RULES).len(), 1);
        assert_eq!(plants(&m, None, w, h, 1, &RULES).len(), 2, "no index, no seed check");
    }

    #[test]
    fn specks_next_to_a_big_plant_are_dropped_but_seedlings_among_plants_are_not() {
        let (w, h) = (400, 200);
        // One big plant and a 3-pixel-radius patch: 0.3 % of it (a colour-card square).
        let m = discs(w, h, &[(100.0, 100.0, 60.0), (300.0, 100.0, 3.0)]);
        assert_eq!(plants(&m, None, w, h, 1, &RULES).len(), 1);
        // A seedling of the same size among plants of radius 20: 2.5 % of the largest.
        let m = discs(w, h, &[(50.0, 50.0, 20.0), (150.0, 50.0, 20.0), (250.0, 50.0, 20.0), (350.0, 150.0, 3.0)]);
        assert_eq!(plants(&m, None, w, h, 1, &RULES).len(), 4);
    }

    #[test]
    fn fragments_join_their_plant_and_neighbours_stay_apart() {
        let (w, h) = (300, 120);
        // A plant with two detached leaves close by, and a separate plant further away.
        let m = discs(w, h, &[(60.0, 60.0, 30.0), (100.0, 60.0, 6.0), (60.0, 102.0, 5.0), (200.0, 60.0, 30.0)]);
        let p = plants(&m, None, w, h, 1, &RULES);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().any(|c| c.bbox[2] >= 70), "the leaves widen their plant's box: {p:?}");
        assert_eq!(plants(&m, None, w, h, 1, &Rules::default()).len(), 4, "rules off: plain components");
    }

    #[test]
    fn touching_plants_are_split_and_single_ones_are_not() {
        let (w, h) = (420, 120);
        // Three plants, two of which touch through a narrow neck.
        let m = discs(w, h, &[(40.0, 60.0, 25.0), (150.0, 60.0, 25.0), (197.0, 60.0, 25.0), (320.0, 60.0, 25.0)]);
        assert_eq!(components(&m, w, h, 1).len(), 3);
        let p = plants(&m, None, w, h, 1, &RULES);
        assert_eq!(p.len(), 4, "{p:?}");
        // A single plant is never split, however large: there is no median of three.
        let one = discs(w, h, &[(150.0, 60.0, 25.0), (197.0, 60.0, 25.0)]);
        assert_eq!(plants(&one, None, w, h, 1, &RULES).len(), 1);
    }

    #[test]
    fn counts_do_not_depend_on_the_scale() {
        for scale in [1.0, 1.5, 2.5] {
            let (w, h) = ((300.0 * scale) as usize, (120.0 * scale) as usize);
            let d = |x: f64, y: f64, r: f64| (x * scale, y * scale, r * scale);
            let m = discs(w, h, &[d(60.0, 60.0, 30.0), d(100.0, 60.0, 6.0), d(200.0, 60.0, 30.0), d(280.0, 20.0, 4.0)]);
            assert_eq!(plants(&m, None, w, h, 1, &RULES).len(), 3, "scale {scale}");
        }
    }

    #[test]
    fn the_distance_transform_measures_depth() {
        let (w, h) = (11, 11);
        let m = discs(w, h, &[(5.0, 5.0, 4.0)]);
        let d = distance_transform(&m, w, h);
        assert_eq!(d[0], 0.0);
        // The nearest background pixels are the diagonal ones at (2, 2) etc.: √18 ≈ 4.24 away.
        assert!((d[5 * w + 5] - 18f32.sqrt()).abs() < 0.5, "centre depth {}", d[5 * w + 5]);
        assert!(d[5 * w + 1] <= 1.0 + 1e-6, "edge depth {}", d[5 * w + 1]);
    }
}
