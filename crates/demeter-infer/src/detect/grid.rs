//! Finding the tray: the lattice of cells or pots that the plants stand on.
//!
//! Plants in a plug tray, a flat or pots in rows sit on a lattice; leaves and stray objects do
//! not. Along each axis, the centres `x` of the candidate plants are periodic with the cell pitch
//! `P`, so the coherence `|Σ exp(2πi·x/P)| / n` is high at `P` (and at `P/2`, `P/3`, …, which
//! fit too) and falls at any longer period. The pitch is the longest peak of coherence that is
//! high in absolute terms ([`MIN_COHERENCE`]) and not far below the best ([`NEAR_BEST`]): a
//! harmonic can be the most coherent of all, e.g. when each seedling shows as two cotyledons
//! either side of its cell's centre. Its phase gives the offset, and small tilts are found by
//! trying angles. Nothing here depends on the photo's size, colour or the kind of tray: only on
//! the plants' positions, so it carries to trays, cameras and species we have not seen.
//!
//! A lattice is accepted only when it explains the plants: most of them near cell centres, at
//! least two rows and two columns, enough occupied cells, and cells no smaller than half a plant.

/// Frequencies tried per coherence peak's width, and at most in all, per axis.
const SAMPLES_PER_PEAK: f64 = 8.0;
const MAX_STEPS: f64 = 4096.0;
/// A peak can be the pitch when its coherence is at least this, and this share of the best.
const MIN_COHERENCE: f64 = 0.5;
const NEAR_BEST: f64 = 0.6;
/// Tilts tried, in degrees: −21° to 21° in 3° steps, then 1.5° either side of the best.
/// Larger tilts are not looked for.
const MAX_TILT_DEG: f64 = 21.0;
const TILT_STEP_DEG: f64 = 3.0;
/// A point is on the lattice when it is within this share of a pitch of a cell centre, per axis.
const INLIER: f64 = 0.3;
/// Acceptance: share of points on the lattice, joint coherence, occupied share of the cells.
const MIN_INLIERS: f64 = 0.75;
const MIN_SCORE: f64 = 0.5;
const MIN_OCCUPIED_SHARE: f64 = 0.4;
/// Fewest points (candidate plants) and occupied cells a grid is looked for with.
const MIN_POINTS: usize = 6;
const MIN_OCCUPIED: usize = 4;

/// A lattice in the mask's pixels: rows run along the direction `angle` (radians, clockwise from
/// the x axis, as y points down); cell `(col, row)` is centred at `offset + (col·pitch[0],
/// row·pitch[1])` in the rotated frame ([`Lattice::to_frame`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lattice {
    pub angle: f64,
    pub pitch: [f64; 2],
    pub offset: [f64; 2],
    /// First and last column and row indices that hold plants.
    pub cols: (i64, i64),
    pub rows: (i64, i64),
}

impl Lattice {
    /// A point in the lattice's frame: `u` along the rows, `v` down the columns.
    pub fn to_frame(&self, p: [f64; 2]) -> [f64; 2] {
        rotate(p, self.angle)
    }

    /// The cell a point falls in (`col`, `row`, counted from the grid's first), and how far from
    /// the cell centre it lies, as a share of the pitch, per axis.
    pub fn locate(&self, p: [f64; 2]) -> ((i64, i64), [f64; 2]) {
        let ((i, j), off) = node(self, p);
        ((i - self.cols.0, j - self.rows.0), off)
    }

    pub fn n_cols(&self) -> usize {
        (self.cols.1 - self.cols.0 + 1) as usize
    }

    pub fn n_rows(&self) -> usize {
        (self.rows.1 - self.rows.0 + 1) as usize
    }

    /// The centre of cell `(col, row)` (counted from the grid's first) in mask pixels.
    pub fn centre(&self, col: i64, row: i64) -> [f64; 2] {
        let u = self.offset[0] + (col + self.cols.0) as f64 * self.pitch[0];
        let v = self.offset[1] + (row + self.rows.0) as f64 * self.pitch[1];
        rotate([u, v], -self.angle)
    }
}

/// Rows and columns of the tray as the grower configured them for a storage location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub rows: usize,
    pub cols: usize,
}

impl Lattice {
    /// This lattice cut or extended to exactly `layout`'s rows and columns (or columns and rows,
    /// when the photo shows the tray turned by 90°: whichever needs fewer changes). A missing row
    /// or column (an entirely empty edge row leaves none of its plants to find) is added on the
    /// side that keeps the cells inside the `width × height` image, else towards the image's
    /// centre; extra ones are dropped from the side with fewer `points`.
    pub fn fitted(mut self, layout: Layout, points: &[[f64; 2]], width: f64, height: f64) -> Lattice {
        let (n_rows, n_cols) = (self.n_rows() as i64, self.n_cols() as i64);
        let (r, c) = (layout.rows as i64, layout.cols as i64);
        let (rows, cols) = if (n_rows - c).abs() + (n_cols - r).abs() < (n_rows - r).abs() + (n_cols - c).abs() {
            (c, r)
        } else {
            (r, c)
        };
        let nodes: Vec<(i64, i64)> = points.iter().map(|p| node(&self, *p).0).collect();
        // Windows that contain the found block or lie inside it, per axis.
        let starts = |(a0, a1): (i64, i64), n: i64| if a1 - a0 < n { (a1 - n + 1)..=a0 } else { a0..=(a1 - n + 1) };
        // (points held, cells in the image, −distance from the centre) and the window's start.
        type Scored = ((usize, usize, i64), (i64, i64));
        let mut best: Option<Scored> = None;
        for c0 in starts(self.cols, cols) {
            for r0 in starts(self.rows, rows) {
                let inside_window = |(i, j): &(i64, i64)| (c0..c0 + cols).contains(i) && (r0..r0 + rows).contains(j);
                let held = nodes.iter().filter(|n| inside_window(n)).count();
                let probe = Lattice { cols: (c0, c0 + cols - 1), rows: (r0, r0 + rows - 1), ..self };
                let mut in_image = 0;
                for j in 0..rows {
                    for i in 0..cols {
                        let [x, y] = probe.centre(i, j);
                        in_image += usize::from((0.0..width).contains(&x) && (0.0..height).contains(&y));
                    }
                }
                let [cx, cy] = probe.centre(cols - 1, rows - 1);
                let [ox, oy] = probe.centre(0, 0);
                let off_centre = ((cx + ox) / 2.0 - width / 2.0).hypot((cy + oy) / 2.0 - height / 2.0);
                // Most points held, then most cells in the image, then nearest the centre
                // (rounded to a pixel so float noise cannot decide).
                let score = (held, in_image, -(off_centre.round() as i64));
                if best.is_none_or(|(b, _)| score > b) {
                    best = Some((score, (c0, r0)));
                }
            }
        }
        if let Some((_, (c0, r0))) = best {
            self.cols = (c0, c0 + cols - 1);
            self.rows = (r0, r0 + rows - 1);
        }
        self
    }
}

/// `layout` laid evenly over `extent` (`[x0, y0, x1, y1]`, the candidates' bounds), as
/// PlantCV's `auto_grid` does: for a configured tray when no lattice stands out in the photo (too
/// few plants yet). `None` when the extent is too small to hold a pixel per cell.
pub fn spread(layout: Layout, extent: [f64; 4]) -> Option<Lattice> {
    let [x0, y0, x1, y1] = extent;
    let pitch = [(x1 - x0) / layout.cols as f64, (y1 - y0) / layout.rows as f64];
    (pitch[0] >= 1.0 && pitch[1] >= 1.0).then(|| Lattice {
        angle: 0.0,
        pitch,
        offset: [x0 + pitch[0] / 2.0, y0 + pitch[1] / 2.0],
        cols: (0, layout.cols as i64 - 1),
        rows: (0, layout.rows as i64 - 1),
    })
}

fn rotate([x, y]: [f64; 2], a: f64) -> [f64; 2] {
    let (s, c) = a.sin_cos();
    [x * c + y * s, -x * s + y * c]
}

/// Coherence and phase of `xs` at frequency `f` (cycles per unit).
fn coherence_at(xs: &[f64], f: f64) -> (f64, f64) {
    let (c, s) = xs.iter().fold((0.0, 0.0), |(c, s), x| {
        let (sin, cos) = (std::f64::consts::TAU * x * f).sin_cos();
        (c + cos, s + sin)
    });
    (c.hypot(s) / xs.len() as f64, s.atan2(c))
}

/// The pitch, coherence and offset of the strongest lattice along one axis, if the points span
/// at least one `min_pitch`.
///
/// Frequencies are spaced evenly, `SAMPLES_PER_PEAK` to a coherence peak (a peak is about
/// `1 / span` wide in frequency), so each point's phasor advances by one complex multiplication
/// per step instead of a `sin_cos`; the chosen peak is then refined with exact evaluations. This
/// runs for every tilt tried, on every photo with a few plants.
fn axis(xs: &[f64], min_pitch: f64) -> Option<(f64, f64, f64)> {
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = hi - lo;
    if span < min_pitch {
        return None;
    }
    // Relative to the lowest point, phases stay small; the offset is shifted back at the end.
    let rel: Vec<f64> = xs.iter().map(|x| x - lo).collect();
    let (f_lo, f_hi) = (1.0 / (span * 1.05), 1.0 / min_pitch);
    let steps = ((f_hi - f_lo) * span * SAMPLES_PER_PEAK).ceil().clamp(16.0, MAX_STEPS) as usize;
    let df = (f_hi - f_lo) / steps as f64;
    let turn = |x: f64, f: f64| {
        let (s, c) = (std::f64::consts::TAU * x * f).sin_cos();
        (c, s)
    };
    let mut phasor: Vec<(f64, f64)> = rel.iter().map(|x| turn(*x, f_lo)).collect();
    let step: Vec<(f64, f64)> = rel.iter().map(|x| turn(*x, df)).collect();
    let n = rel.len() as f64;
    // Coherence by frequency, lowest first (the longest period first).
    let mut coherence = Vec::with_capacity(steps + 1);
    for _ in 0..=steps {
        let (mut c, mut s) = (0.0, 0.0);
        for (z, d) in phasor.iter_mut().zip(&step) {
            c += z.0;
            s += z.1;
            *z = (z.0 * d.0 - z.1 * d.1, z.0 * d.1 + z.1 * d.0);
        }
        coherence.push(c.hypot(s) / n);
    }
    let best = coherence.iter().copied().fold(0.0, f64::max);
    // The fundamental: the lowest frequency coherent enough (its harmonics fit as well). That
    // lands on the flank of its peak; climb to the top, then refine between the neighbours.
    let floor = MIN_COHERENCE.max(NEAR_BEST * best);
    let mut k = coherence.iter().position(|c| *c >= floor)?;
    while k < steps && coherence[k + 1] >= coherence[k] {
        k += 1;
    }
    let (f, (r, phase)) = (0..=16)
        .map(|i| f_lo + df * (k as f64 - 1.0 + i as f64 / 8.0))
        .filter(|f| *f > 0.0)
        .map(|f| (f, coherence_at(&rel, f)))
        .max_by(|a, b| a.1 .0.total_cmp(&b.1 .0))?;
    let p = 1.0 / f;
    Some((p, r, (phase / std::f64::consts::TAU * p + lo).rem_euclid(p)))
}

/// The lattice the points stand on, if there is one. `min_pitch`: the smallest cell to consider,
/// in the points' units. Of the tilts tried, the most coherent lattice that passes acceptance
/// wins (a fine harmonic lattice can be more coherent, with most of its cells empty).
pub fn find(points: &[[f64; 2]], min_pitch: f64) -> Option<Lattice> {
    if points.len() < MIN_POINTS {
        return None;
    }
    let steps = (MAX_TILT_DEG / TILT_STEP_DEG).round() as i64;
    let mut best: Option<(f64, Lattice)> = None;
    let try_tilt = |deg: f64, best: &mut Option<(f64, Lattice)>| {
        if let Some((score, lattice)) = fit(points, deg.to_radians(), min_pitch) {
            if best.as_ref().is_none_or(|(s, _)| score > s + 1e-9) {
                *best = Some((score, lattice));
            }
        }
    };
    // From no tilt outwards, so that equal scores keep the smaller tilt; then half a step either
    // side of the best.
    for step in (0..=steps).flat_map(|s| if s == 0 { vec![0] } else { vec![s, -s] }) {
        try_tilt(step as f64 * TILT_STEP_DEG, &mut best);
    }
    let coarse = best.as_ref()?.1.angle.to_degrees();
    for deg in [coarse - TILT_STEP_DEG / 2.0, coarse + TILT_STEP_DEG / 2.0] {
        try_tilt(deg, &mut best);
    }
    best.map(|(_, l)| l)
}

/// Where a point falls against a lattice's nodes: the node's indices and the offset from it, as
/// a share of the pitch, per axis.
fn node(l: &Lattice, p: [f64; 2]) -> ((i64, i64), [f64; 2]) {
    let [u, v] = l.to_frame(p);
    let fu = (u - l.offset[0]) / l.pitch[0];
    let fv = (v - l.offset[1]) / l.pitch[1];
    ((fu.round() as i64, fv.round() as i64), [(fu - fu.round()).abs(), (fv - fv.round()).abs()])
}

/// The run of consecutive indices (by `index`) holding the most cells.
fn block(cells: &std::collections::BTreeSet<(i64, i64)>, index: impl Fn(&(i64, i64)) -> i64) -> Option<(i64, i64)> {
    let mut counts = std::collections::BTreeMap::new();
    for c in cells {
        *counts.entry(index(c)).or_insert(0usize) += 1;
    }
    let mut best: Option<(usize, i64, i64)> = None;
    let mut run: Option<(usize, i64, i64)> = None;
    for (&i, &n) in &counts {
        run = match run {
            Some((total, start, end)) if end + 1 == i => Some((total + n, start, i)),
            _ => Some((n, i, i)),
        };
        if best.is_none_or(|b| run.is_some_and(|r| r.0 > b.0)) {
            best = run;
        }
    }
    best.map(|(_, a, b)| (a, b))
}

/// The lattice at tilt `angle` with its score, if it passes acceptance.
fn fit(points: &[[f64; 2]], angle: f64, min_pitch: f64) -> Option<(f64, Lattice)> {
    let frame: Vec<[f64; 2]> = points.iter().map(|p| rotate(*p, angle)).collect();
    let us: Vec<f64> = frame.iter().map(|p| p[0]).collect();
    let vs: Vec<f64> = frame.iter().map(|p| p[1]).collect();
    let (pu, ru, ou) = axis(&us, min_pitch)?;
    let (pv, rv, ov) = axis(&vs, min_pitch)?;
    let score = ru * rv;
    if score < MIN_SCORE {
        return None;
    }
    let mut lattice = Lattice { angle, pitch: [pu, pv], offset: [ou, ov], cols: (0, 0), rows: (0, 0) };
    // The grid spans the cells of the points that sit on it.
    let on: Vec<(i64, i64)> = points
        .iter()
        .map(|p| node(&lattice, *p))
        .filter(|(_, d)| d[0] < INLIER && d[1] < INLIER)
        .map(|(n, _)| n)
        .collect();
    let mut cells: std::collections::BTreeSet<(i64, i64)> = on.iter().copied().collect();
    // Something beyond an entirely empty row or column (a label lying off the tray that happens
    // to sit near a node) does not extend the grid: keep the largest block of consecutive rows,
    // then of consecutive columns.
    let (c0, c1) = block(&cells, |c| c.0)?;
    cells.retain(|c| (c0..=c1).contains(&c.0));
    let (r0, r1) = block(&cells, |c| c.1)?;
    cells.retain(|c| (r0..=r1).contains(&c.1));
    let (c0, c1) = block(&cells, |c| c.0)?;
    cells.retain(|c| (c0..=c1).contains(&c.0));
    lattice.cols = (c0, c1);
    lattice.rows = (r0, r1);
    let n_cells = (lattice.n_cols() * lattice.n_rows()) as f64;
    let on = on.iter().filter(|c| cells.contains(c)).count();
    let accepted = on as f64 >= MIN_INLIERS * points.len() as f64
        && lattice.n_cols() >= 2
        && lattice.n_rows() >= 2
        && cells.len() >= MIN_OCCUPIED
        && cells.len() as f64 >= MIN_OCCUPIED_SHARE * n_cells;
    accepted.then_some((score, lattice))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Centres of a `rows × cols` tray with pitch `p`, tilted by `deg`, jittered by up to
    /// `jitter × p` (deterministic), without the cells in `empty`.
    pub fn tray(rows: i64, cols: i64, p: f64, deg: f64, jitter: f64, empty: &[(i64, i64)]) -> Vec<[f64; 2]> {
        let a = deg.to_radians();
        let mut out = Vec::new();
        for r in 0..rows {
            for c in 0..cols {
                if empty.contains(&(r, c)) {
                    continue;
                }
                let k = (r * cols + c) as f64;
                let (jx, jy) = ((k * 2.399).sin() * jitter * p, (k * 1.731).cos() * jitter * p);
                let [x, y] = rotate([40.0 + c as f64 * p + jx, 30.0 + r as f64 * p * 1.1 + jy], -a);
                out.push([x + 100.0, y + 100.0]);
            }
        }
        out
    }

    #[test]
    fn finds_a_tray_with_empty_cells() {
        let pts = tray(4, 6, 80.0, 0.0, 0.08, &[(0, 2), (2, 5), (3, 0)]);
        let l = find(&pts, 20.0).expect("a 4 × 6 tray");
        assert_eq!((l.n_rows(), l.n_cols()), (4, 6));
        assert!((l.pitch[0] - 80.0).abs() < 2.0 && (l.pitch[1] - 88.0).abs() < 2.0, "{l:?}");
        // Every point lies in its own cell.
        let cells: std::collections::BTreeSet<_> = pts.iter().map(|p| l.locate(*p).0).collect();
        assert_eq!(cells.len(), pts.len());
        assert!(!cells.contains(&(2, 0)) && !cells.contains(&(5, 2)), "empty cells stay empty");
    }

    #[test]
    fn finds_a_tilted_tray_and_a_turned_one() {
        for deg in [-9.0, 4.5, 12.0] {
            let l = find(&tray(3, 6, 70.0, deg, 0.05, &[(1, 1)]), 20.0).expect("tilted tray");
            assert_eq!((l.n_rows(), l.n_cols()), (3, 6), "tilt {deg}");
            assert!((l.angle.to_degrees() - deg).abs() <= 1.5, "tilt {deg}: found {}", l.angle.to_degrees());
        }
        // The same tray turned by 90°: rows become columns.
        let turned: Vec<[f64; 2]> = tray(3, 6, 70.0, 0.0, 0.05, &[]).iter().map(|[x, y]| [1000.0 - y, *x]).collect();
        let l = find(&turned, 20.0).expect("turned tray");
        assert_eq!((l.n_rows(), l.n_cols()), (6, 3));
    }

    #[test]
    fn scattered_points_and_too_few_points_have_no_grid() {
        // A few leaves of one plant, and points with no common spacing.
        assert!(find(&tray(2, 2, 50.0, 0.0, 0.0, &[]), 10.0).is_none(), "fewer than six points");
        let scattered: Vec<[f64; 2]> = (0..14)
            .map(|k| {
                let k = k as f64;
                [500.0 + 300.0 * (k * 2.1).sin() * (k * 0.37).cos(), 400.0 + 260.0 * (k * 1.3).cos()]
            })
            .collect();
        assert!(find(&scattered, 30.0).is_none(), "{:?}", find(&scattered, 30.0));
    }

    #[test]
    fn the_pitch_is_the_fundamental_not_a_harmonic() {
        let l = find(&tray(4, 5, 90.0, 0.0, 0.02, &[]), 10.0).unwrap();
        assert!((l.pitch[0] - 90.0).abs() < 2.0, "{l:?}");
        assert_eq!(l.n_cols(), 5);
    }

    #[test]
    fn centres_map_back_to_the_points() {
        let pts = tray(3, 4, 60.0, 6.0, 0.0, &[]);
        let l = find(&pts, 15.0).unwrap();
        for p in &pts {
            let ((c, r), _) = l.locate(*p);
            let [x, y] = l.centre(c, r);
            assert!((x - p[0]).abs() < 3.0 && (y - p[1]).abs() < 3.0, "{p:?} vs {x},{y}");
        }
    }

    #[test]
    fn a_configured_layout_restores_an_empty_edge_row_and_drops_a_stray_one() {
        // A 4 × 5 tray whose bottom row is entirely empty: the photo shows 3 rows of plants.
        let empty_row: Vec<(i64, i64)> = (0..5).map(|c| (3, c)).collect();
        let pts = tray(4, 5, 80.0, 0.0, 0.05, &empty_row);
        let found = find(&pts, 20.0).unwrap();
        assert_eq!((found.n_rows(), found.n_cols()), (3, 5));
        // The tray sits near the image's top: the missing row goes below, where there is room.
        let l = found.fitted(Layout { rows: 4, cols: 5 }, &pts, 700.0, 700.0);
        assert_eq!((l.n_rows(), l.n_cols()), (4, 5));
        let cells: std::collections::BTreeSet<_> = pts.iter().map(|p| l.locate(*p).0).collect();
        assert!(cells.iter().all(|(_, r)| *r <= 2), "the plants keep rows 0-2: {cells:?}");
        // The same layout, given as the grower sees it, for the photo turned by 90°.
        let turned: Vec<[f64; 2]> = pts.iter().map(|[x, y]| [700.0 - y, *x]).collect();
        let l = find(&turned, 20.0).unwrap().fitted(Layout { rows: 4, cols: 5 }, &turned, 700.0, 700.0);
        assert_eq!((l.n_rows(), l.n_cols()), (5, 4));
        // Told 2 × 5, the lattice keeps the two rows that hold the most plants.
        let pts = tray(3, 5, 80.0, 0.0, 0.0, &[(0, 1), (0, 2), (0, 3)]);
        let l = find(&pts, 20.0).unwrap().fitted(Layout { rows: 2, cols: 5 }, &pts, 700.0, 700.0);
        assert_eq!((l.n_rows(), l.n_cols()), (2, 5));
        let kept = pts.iter().filter(|p| l.locate(**p).0 .1 >= 0 && l.locate(**p).0 .1 < 2).count();
        assert_eq!(kept, 10, "rows 1 and 2 (5 plants each), not row 0 (2 plants)");
    }

    #[test]
    fn a_layout_spreads_over_the_plants_when_no_lattice_is_found() {
        let l = spread(Layout { rows: 2, cols: 3 }, [0.0, 0.0, 300.0, 100.0]).unwrap();
        assert_eq!((l.n_rows(), l.n_cols()), (2, 3));
        assert_eq!(l.centre(0, 0), [50.0, 25.0]);
        assert_eq!(l.locate([250.0, 90.0]).0, (2, 1));
        assert!(spread(Layout { rows: 2, cols: 3 }, [0.0, 0.0, 2.0, 100.0]).is_none(), "cells under a pixel");
    }
}
