//! From a model's output to individual plants, the tray they grow in, and whether to trust the
//! count.
//!
//! 1. **Mask** ([`threshold`]): with a vegetation index and adaptive rules, the mask and seed
//!    thresholds follow the photo's own strongest green and darkness; otherwise the model's mask.
//! 2. **Candidates** ([`blobs`]): connected components with a green core, not tiny next to the
//!    photo's largest plant, with leaves cut off at their stalks merged back.
//! 3. **Grid** ([`grid`]): when the candidates stand on a lattice (a plug tray, pots in rows),
//!    each candidate goes to its cell; everything in one cell is one plant unless it falls into
//!    clearly separate groups; components spanning several cells are divided between them; and
//!    nothing outside the grid (a label, a tag, the bench edge) is counted.
//! 4. **No grid**: a plant must be a sizeable share of the largest one (moss, weeds and card
//!    patches next to a plant are not plants), pieces nearby join it, and a component much larger
//!    than the median is split at its cores.
//! 5. **Trust**: no plants, a closed canopy, crowded cells, or a count that rests on splitting
//!    touching plants is flagged, never silently given as a confident number.
//!
//! Every rule is relative to the photo's own plants, cells or colour levels, never in pixels of
//! the original photo or in absolute colour, so counts do not move with the camera.

mod blobs;
pub mod grid;
pub mod threshold;

use demeter_domain::TrustReason;
use serde::Deserialize;

use blobs::{label, median_area, merge_fragments, split_touching, Blob};

/// One plant (or connected component), in mask coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// `[x, y, width, height]`.
    pub bbox: [u32; 4],
    pub centroid: [f64; 2],
    pub area: u64,
}

/// How the model's output becomes plants; the `[detection]` table of a model's manifest. The
/// defaults switch every step off, so a manifest without the table keeps plain connected
/// components of the model's mask.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// A plant must contain a pixel whose vegetation index reaches the seed; this is the seed's
    /// upper bound (with `seed_fraction`) or its fixed value (without). `None`: no check.
    pub seed_vegetation: Option<f32>,
    /// Adaptive seed: this share of the photo's `seed_quantile` vegetation index, at least
    /// `seed_min` and at most `seed_vegetation`. `0` keeps the seed fixed.
    pub seed_fraction: f64,
    pub seed_quantile: f64,
    pub seed_min: f32,
    /// Adaptive mask: the index must exceed `mask_ratio × seed` (at least `mask_min`) instead of
    /// the model's own mask. `0` keeps the model's mask.
    pub mask_ratio: f64,
    pub mask_min: f32,
    /// Pixels darker than this share of the photo's 99th-percentile brightness are never plant
    /// (needs the model's `brightness` output). `0`: off.
    pub dark_fraction: f64,
    /// Components smaller than this share of the photo's largest plant are dropped.
    pub relative_min_area: f64,
    /// A component at most `merge_max_ratio` of a larger one joins it when it is within
    /// `merge_gap × sqrt(larger area)` pixels of it, or its centre is within that distance of
    /// the larger one's box. `0` switches merging off.
    pub merge_gap: f64,
    pub merge_max_ratio: f64,
    /// A component at least this many times the median plant is split (at its cores, or by the
    /// cells it spans). `0` switches splitting off.
    pub split_min_median: f64,
    /// Look for a grid of cells or pots and count per cell.
    pub grid: bool,
    /// Within a cell, groups further apart than this share of the cell pitch are separate plants.
    pub cell_gap: f64,
    /// Without a grid: a plant is at least this share of the largest, and pieces join a plant
    /// as with `merge_gap` / `merge_max_ratio`, with these values.
    pub isolated_min_area: f64,
    pub isolated_merge_gap: f64,
    pub isolated_merge_max_ratio: f64,
    /// Plant cover of the growing area (the grid, or the photo) from which the canopy is closed.
    /// `0`: never flagged.
    pub canopy_cover: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            seed_vegetation: None,
            seed_fraction: 0.0,
            seed_quantile: 0.995,
            seed_min: 0.0,
            mask_ratio: 0.0,
            mask_min: 0.0,
            dark_fraction: 0.0,
            relative_min_area: 0.0,
            merge_gap: 0.0,
            merge_max_ratio: 0.0,
            split_min_median: 0.0,
            grid: false,
            cell_gap: 0.25,
            isolated_min_area: 0.0,
            isolated_merge_gap: 0.0,
            isolated_merge_max_ratio: 0.0,
            canopy_cover: 0.0,
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
        unit(self.isolated_min_area, "isolated_min_area")?;
        unit(self.isolated_merge_max_ratio, "isolated_merge_max_ratio")?;
        unit(self.seed_fraction, "seed_fraction")?;
        unit(self.seed_quantile, "seed_quantile")?;
        unit(self.mask_ratio, "mask_ratio")?;
        unit(self.dark_fraction, "dark_fraction")?;
        unit(self.cell_gap, "cell_gap")?;
        unit(self.canopy_cover, "canopy_cover")?;
        for (v, key) in [(self.merge_gap, "merge_gap"), (self.isolated_merge_gap, "isolated_merge_gap")] {
            if !(0.0..=10.0).contains(&v) {
                return Err(format!("detection.{key} must be in 0..10"));
            }
        }
        if self.split_min_median != 0.0 && !(1.0..=100.0).contains(&self.split_min_median) {
            return Err("detection.split_min_median must be 0 (off) or in 1..100".into());
        }
        if self.seed_fraction > 0.0 && self.seed_vegetation.is_none() {
            return Err("detection.seed_fraction needs detection.seed_vegetation (the seed's upper bound)".into());
        }
        Ok(())
    }

    /// Every value, by its manifest key, for a result's provenance.
    pub fn values(&self) -> Vec<(&'static str, f64)> {
        let mut v = vec![
            ("seed_fraction", self.seed_fraction),
            ("seed_quantile", self.seed_quantile),
            ("seed_min", f64::from(self.seed_min)),
            ("mask_ratio", self.mask_ratio),
            ("mask_min", f64::from(self.mask_min)),
            ("dark_fraction", self.dark_fraction),
            ("relative_min_area", self.relative_min_area),
            ("merge_gap", self.merge_gap),
            ("merge_max_ratio", self.merge_max_ratio),
            ("split_min_median", self.split_min_median),
            ("grid", if self.grid { 1.0 } else { 0.0 }),
            ("cell_gap", self.cell_gap),
            ("isolated_min_area", self.isolated_min_area),
            ("isolated_merge_gap", self.isolated_merge_gap),
            ("isolated_merge_max_ratio", self.isolated_merge_max_ratio),
            ("canopy_cover", self.canopy_cover),
        ];
        if let Some(seed) = self.seed_vegetation {
            v.push(("seed_vegetation", f64::from(seed)));
        }
        v
    }

    /// Whether every rule is off (a manifest without a `[detection]` table).
    pub fn is_plain(&self) -> bool {
        *self == Self::default()
    }

    /// The seed follows the photo (else it is `seed_vegetation`, fixed).
    fn adaptive_seed(&self) -> bool {
        self.seed_fraction > 0.0
    }

    /// The mask is Demeter's own threshold of the index (else the model's mask).
    fn adaptive_mask(&self) -> bool {
        self.mask_ratio > 0.0
    }
}

/// What the model produced for one photo, at the prepared image's size (row-major).
#[derive(Debug, Clone, Copy)]
pub struct Maps<'a> {
    pub width: usize,
    pub height: usize,
    /// The model's own plant mask.
    pub mask: &'a [bool],
    /// Its vegetation index and brightness, when it has those outputs.
    pub vegetation: Option<&'a [f32]>,
    pub brightness: Option<&'a [f32]>,
}

/// A plant found, in mask coordinates, with its cell when there is a grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub component: Component,
    /// `(row, col)`.
    pub cell: Option<(u32, u32)>,
}

/// The grid, in mask coordinates (its rows and columns are the lattice's), with plants per cell
/// (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct CellGrid {
    pub lattice: grid::Lattice,
    pub plants_per_cell: Vec<u32>,
}

/// Everything counting says about a photo.
#[derive(Debug, Clone, PartialEq)]
pub struct Count {
    /// Largest first.
    pub plants: Vec<Found>,
    pub grid: Option<CellGrid>,
    pub reasons: Vec<TrustReason>,
    /// Plant pixels in the mask the count used.
    pub plant_pixels: u64,
}

/// The 8-connected components of `mask` with at least `min_area` pixels, largest first.
pub fn components(mask: &[bool], width: usize, height: usize, min_area: u64) -> Vec<Component> {
    let mut out: Vec<Component> = label(mask, width, height)
        .into_iter()
        .filter(|b| b.area() as u64 >= min_area)
        .map(|b| b.component(width))
        .collect();
    out.sort_by(largest_first);
    out
}

/// Largest first; equal areas by box, so the order is the same on every run.
fn largest_first(a: &Component, b: &Component) -> std::cmp::Ordering {
    b.area.cmp(&a.area).then(a.bbox.cmp(&b.bbox))
}

/// Counts the plants in a model's output. `min_area`: the floor in pixels against specks.
pub fn count(maps: Maps<'_>, min_area: u64, rules: &Rules, layout: Option<grid::Layout>) -> Count {
    let Maps { width, height, .. } = maps;
    // The seed and the mask, each adaptive when the rules ask and the model gives its index.
    let (own_mask, seed) = match maps.vegetation {
        Some(veg) if rules.adaptive_seed() || rules.adaptive_mask() => {
            let t = threshold::thresholds(veg, maps.brightness, rules);
            let mask = rules.adaptive_mask().then(|| threshold::mask(veg, maps.brightness, width, height, &t));
            (mask, Some(t.seed))
        }
        _ => (None, rules.seed_vegetation),
    };
    let mask = own_mask.as_deref().unwrap_or(maps.mask);
    let plant_pixels = mask.iter().filter(|m| **m).count() as u64;

    let mut blobs: Vec<Blob> = label(mask, width, height).into_iter().filter(|b| b.area() as u64 >= min_area).collect();
    if let (Some(seed), Some(veg)) = (seed, maps.vegetation) {
        blobs.retain(|b| b.pixels.iter().any(|&i| veg.get(i).is_some_and(|v| *v >= seed)));
    }
    retain_relative(&mut blobs, rules.relative_min_area);
    if rules.merge_gap > 0.0 {
        blobs = merge_fragments(blobs, width, rules.merge_gap, rules.merge_max_ratio);
    }

    // A tray the grower configured for the location: the lattice found, cut or extended to its
    // rows and columns, or its cells spread over the plants when none stands out.
    let lattice = if rules.grid || layout.is_some() {
        let points: Vec<[f64; 2]> = blobs.iter().map(|b| b.centre(width)).collect();
        let found = find_lattice(&blobs, &points);
        match layout {
            Some(layout) => match found {
                Some(l) => Some(l.fitted(layout, &points, width as f64, height as f64)),
                None => extent(&blobs).and_then(|e| grid::spread(layout, e)),
            },
            None => found,
        }
    } else {
        None
    };
    let mut reasons = Vec::new();
    let (mut plants, grid) = match lattice {
        Some(lattice) => {
            let (plants, grid) = per_cell(blobs, lattice, width, rules);
            let occupied = grid.plants_per_cell.iter().filter(|n| **n > 0).count();
            let crowded = grid.plants_per_cell.iter().filter(|n| **n > 1).count();
            if occupied > 0 && crowded * 4 > occupied {
                reasons.push(TrustReason::CrowdedCells);
            }
            (plants, Some(grid))
        }
        None => {
            retain_relative(&mut blobs, rules.isolated_min_area);
            if rules.isolated_merge_gap > 0.0 {
                blobs = merge_fragments(blobs, width, rules.isolated_merge_gap, rules.isolated_merge_max_ratio);
            }
            if rules.split_min_median > 0.0 && blobs.len() >= 3 {
                let (split, happened) = split_touching(blobs, width, rules.split_min_median);
                blobs = split;
                if happened {
                    reasons.push(TrustReason::TouchingPlants);
                }
            }
            (blobs.iter().map(|b| Found { component: b.component(width), cell: None }).collect(), None)
        }
    };
    if rules.canopy_cover > 0.0 {
        let area = match &grid {
            Some(g) => {
                let cells = (g.lattice.n_rows() * g.lattice.n_cols()) as f64;
                (g.lattice.pitch[0] * g.lattice.pitch[1] * cells).min((width * height) as f64)
            }
            None => (width * height) as f64,
        };
        if plant_pixels as f64 >= rules.canopy_cover * area {
            reasons.push(TrustReason::ClosedCanopy);
        }
    }
    plants.sort_by(|a, b| largest_first(&a.component, &b.component));
    if plants.is_empty() {
        reasons.insert(0, TrustReason::NoPlants);
    }
    Count { plants, grid, reasons, plant_pixels }
}

/// The bounds of all candidates together (`[x0, y0, x1, y1]`, to the far edge of the last
/// pixel), when there are at least two.
fn extent(blobs: &[Blob]) -> Option<[f64; 4]> {
    if blobs.len() < 2 {
        return None;
    }
    let mut e = [f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY];
    for b in blobs {
        let [x0, y0, x1, y1] = b.bounds.map(|v| v as f64);
        e = [e[0].min(x0), e[1].min(y0), e[2].max(x1 + 1.0), e[3].max(y1 + 1.0)];
    }
    Some(e)
}

fn retain_relative(blobs: &mut Vec<Blob>, share: f64) {
    let largest = blobs.iter().map(Blob::area).max().unwrap_or(0) as f64;
    blobs.retain(|b| b.area() as f64 >= share * largest);
}

/// The largest plant of a tray covers at most this many cells (leaves overhang their cell, two
/// neighbours may touch); a "lattice" under a much larger plant is its own fragments.
const MAX_CELLS_PER_PLANT: f64 = 3.0;

/// In a tray the plants are of one kind and age: the median candidate is at least this share of
/// the largest (about half on the dev trays). Pieces of one large plant (an oblique stem broken
/// up by JPEG compression) are far smaller than it, and may still fall on a lattice by chance.
const MIN_MEDIAN_SHARE: f64 = 0.05;

/// The lattice the candidates stand on: cells at least half as wide as the largest plant, no
/// plant much larger than a cell, and candidates of comparable size.
fn find_lattice(blobs: &[Blob], points: &[[f64; 2]]) -> Option<grid::Lattice> {
    let largest = blobs.iter().map(Blob::area).max().unwrap_or(0) as f64;
    if median_area(blobs) < MIN_MEDIAN_SHARE * largest {
        return None;
    }
    grid::find(points, (0.5 * largest.sqrt()).max(8.0))
        .filter(|l| largest <= MAX_CELLS_PER_PLANT * l.pitch[0] * l.pitch[1])
}

/// Assigns the candidates to cells and counts the plants in each.
fn per_cell(blobs: Vec<Blob>, lattice: grid::Lattice, width: usize, rules: &Rules) -> (Vec<Found>, CellGrid) {
    let (cols, rows) = (lattice.n_cols(), lattice.n_rows());
    let cell_of = |p: [f64; 2]| -> Option<(usize, usize)> {
        let ((c, r), _) = lattice.locate(p);
        (c >= 0 && r >= 0 && (c as usize) < cols && (r as usize) < rows).then_some((r as usize, c as usize))
    };
    // A component much larger than the median candidate that spans cells (rosettes of
    // neighbouring cells grown into each other) is divided between the cells it covers.
    let median = median_area(&blobs);
    let mut pieces: Vec<Blob> = Vec::with_capacity(blobs.len());
    for b in blobs {
        if rules.split_min_median > 0.0 && b.area() as f64 >= rules.split_min_median * median {
            pieces.extend(divide_by_cells(b, width, &cell_of, 0.35 * median));
        } else {
            pieces.push(b);
        }
    }
    // Each piece to the cell of its centre; outside the grid, it is not a plant of this tray.
    let mut in_cell: Vec<Vec<Blob>> = vec![Vec::new(); rows * cols];
    for b in pieces {
        if let Some((r, c)) = cell_of(b.centre(width)) {
            in_cell[r * cols + c].push(b);
        }
    }
    let reach = rules.cell_gap * lattice.pitch[0].min(lattice.pitch[1]);
    let mut plants = Vec::new();
    let mut per_cell = vec![0u32; rows * cols];
    for (k, cell) in in_cell.into_iter().enumerate() {
        let groups = group_in_cell(cell, width, reach);
        per_cell[k] = groups.len() as u32;
        let (r, c) = (k / cols, k % cols);
        plants.extend(groups.iter().map(|g| Found { component: g.component(width), cell: Some((r as u32, c as u32)) }));
    }
    (plants, CellGrid { lattice, plants_per_cell: per_cell })
}

/// The pieces of `b` in each cell it covers, when at least two are `min_piece` pixels or more;
/// smaller pieces go to the largest. `b` itself otherwise.
fn divide_by_cells(
    b: Blob,
    width: usize,
    cell_of: &impl Fn([f64; 2]) -> Option<(usize, usize)>,
    min_piece: f64,
) -> Vec<Blob> {
    let mut by_cell: std::collections::BTreeMap<Option<(usize, usize)>, Vec<usize>> = Default::default();
    for &i in &b.pixels {
        by_cell.entry(cell_of([(i % width) as f64, (i / width) as f64])).or_default().push(i);
    }
    let big = by_cell.iter().filter(|(c, p)| c.is_some() && p.len() as f64 >= min_piece).count();
    if big < 2 {
        return vec![b];
    }
    let mut parts: Vec<Vec<usize>> = by_cell.into_values().collect();
    parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let (mut keep, rest): (Vec<_>, Vec<_>) = parts.into_iter().partition(|p| p.len() as f64 >= min_piece);
    for p in rest {
        keep[0].extend(p);
    }
    keep.into_iter().map(|p| Blob::new(p, width)).collect()
}

/// The plants in one cell: pieces closer than `reach` (box gap) are one plant, and groups
/// smaller than a tenth of the cell's largest join it (a leaf, not a second plant).
fn group_in_cell(pieces: Vec<Blob>, width: usize, reach: f64) -> Vec<Blob> {
    if pieces.len() <= 1 {
        return pieces;
    }
    // Single linkage by box gap, with a union-find over the pieces.
    let n = pieces.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..n {
        for j in i + 1..n {
            let (gx, gy) = pieces[i].box_gap(&pieces[j]);
            if gx.hypot(gy) <= reach {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a] = b;
            }
        }
    }
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, p) in pieces.into_iter().enumerate() {
        groups.entry(root(&mut parent, i)).or_default().extend(p.pixels);
    }
    let mut groups: Vec<Vec<usize>> = groups.into_values().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
    let largest = groups[0].len() as f64;
    let (mut keep, rest): (Vec<_>, Vec<_>) = groups.into_iter().partition(|g| g.len() as f64 >= 0.1 * largest);
    for g in rest {
        keep[0].extend(g);
    }
    keep.into_iter().map(|g| Blob::new(g, width)).collect()
}

#[cfg(test)]
mod tests;
