//! The pixel machinery under counting: connected components, merging a plant's fragments into
//! it, and splitting touching plants at their distance-transform cores.

use std::collections::VecDeque;

use super::Component;

/// Pixels (row-major indices) of one candidate plant.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    pub pixels: Vec<usize>,
    /// `[x0, y0, x1, y1]`, inclusive.
    pub bounds: [usize; 4],
}

impl Blob {
    pub fn new(pixels: Vec<usize>, width: usize) -> Self {
        let mut b = [usize::MAX, usize::MAX, 0, 0];
        for &i in &pixels {
            let (x, y) = (i % width, i / width);
            b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
        }
        Self { pixels, bounds: b }
    }

    pub fn area(&self) -> usize {
        self.pixels.len()
    }

    pub fn centre(&self, width: usize) -> [f64; 2] {
        let n = self.pixels.len().max(1) as f64;
        let (sx, sy) =
            self.pixels.iter().fold((0.0, 0.0), |(sx, sy), &i| (sx + (i % width) as f64, sy + (i / width) as f64));
        [sx / n, sy / n]
    }

    pub fn component(&self, width: usize) -> Component {
        let [x0, y0, x1, y1] = self.bounds;
        Component {
            bbox: [x0 as u32, y0 as u32, (x1 - x0 + 1) as u32, (y1 - y0 + 1) as u32],
            centroid: self.centre(width),
            area: self.pixels.len() as u64,
        }
    }

    /// Gap between the two boxes (0 when they overlap), per axis.
    pub fn box_gap(&self, other: &Blob) -> (f64, f64) {
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
pub(crate) fn label(mask: &[bool], width: usize, height: usize) -> Vec<Blob> {
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

/// Merges small components into larger ones nearby, smallest first; a plant grows as its
/// fragments join, so a leaf beyond another leaf still finds it.
pub(crate) fn merge_fragments(mut blobs: Vec<Blob>, width: usize, gap: f64, max_ratio: f64) -> Vec<Blob> {
    blobs.sort_by_key(|b| std::cmp::Reverse(b.area()));
    let mut alive = vec![true; blobs.len()];
    for j in (1..blobs.len()).rev() {
        let into = (0..j).find(|&i| alive[i] && belongs_to(&blobs[j], &blobs[i], width, gap, max_ratio));
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
fn belongs_to(small: &Blob, big: &Blob, width: usize, gap: f64, max_ratio: f64) -> bool {
    if small.area() as f64 > max_ratio * big.area() as f64 {
        return false;
    }
    let reach = gap * (big.area() as f64).sqrt();
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

/// The median area of `blobs` (0 when there are none).
pub(crate) fn median_area(blobs: &[Blob]) -> f64 {
    let mut areas: Vec<usize> = blobs.iter().map(Blob::area).collect();
    areas.sort_unstable();
    areas.get(areas.len() / 2).copied().unwrap_or(0) as f64
}

/// Splits components much larger than the median plant at their distance-transform cores.
pub(crate) fn split_touching(blobs: Vec<Blob>, width: usize, min_median: f64) -> (Vec<Blob>, bool) {
    let median = median_area(&blobs);
    let mut out = Vec::with_capacity(blobs.len());
    let mut split = false;
    for b in blobs {
        if (b.area() as f64) < min_median * median {
            out.push(b);
            continue;
        }
        let parts = split_at_cores(&b, width, median);
        if parts.len() >= 2 {
            split = true;
            out.extend(parts);
        } else {
            out.push(b);
        }
    }
    (out, split)
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
pub(crate) fn distance_transform(inside: &[bool], w: usize, h: usize) -> Vec<f32> {
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
