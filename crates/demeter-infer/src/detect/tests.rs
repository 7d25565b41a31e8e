//! Counting on generated masks: every rule on a scene made for it.

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

/// Today's fixed-threshold rules without a grid (the model's mask as given).
fn fixed() -> Rules {
    Rules {
        seed_vegetation: Some(0.25),
        relative_min_area: 0.005,
        merge_gap: 0.35,
        merge_max_ratio: 0.3,
        split_min_median: 1.8,
        ..Rules::default()
    }
}

/// Plants in a mask, largest first, as components.
fn plants(m: &[bool], veg: Option<&[f32]>, w: usize, h: usize, min_area: u64, rules: &Rules) -> Vec<Component> {
    let maps = Maps { width: w, height: h, mask: m, vegetation: veg, brightness: None };
    count(maps, min_area, rules, None).plants.into_iter().map(|f| f.component).collect()
}

#[test]
fn pale_components_need_a_green_core() {
    let (w, h) = (60, 30);
    let m = discs(w, h, &[(12.0, 15.0, 8.0), (45.0, 15.0, 8.0)]);
    // The right disc is only faintly green: above the mask threshold, below the seed.
    let veg: Vec<f32> = (0..w * h).map(|i| if i % w < 30 { 0.4 } else { 0.18 }).collect();
    assert_eq!(plants(&m, Some(&veg), w, h, 1, &fixed()).len(), 1);
    assert_eq!(plants(&m, None, w, h, 1, &fixed()).len(), 2, "no index, no seed check");
}

#[test]
fn specks_next_to_a_big_plant_are_dropped_but_seedlings_among_plants_are_not() {
    let (w, h) = (400, 200);
    // One big plant and a 3-pixel-radius patch: 0.3 % of it (a colour-card square).
    let m = discs(w, h, &[(100.0, 100.0, 60.0), (300.0, 100.0, 3.0)]);
    assert_eq!(plants(&m, None, w, h, 1, &fixed()).len(), 1);
    // A seedling of the same size among plants of radius 20: 2.5 % of the largest.
    let m = discs(w, h, &[(50.0, 50.0, 20.0), (150.0, 50.0, 20.0), (250.0, 50.0, 20.0), (350.0, 150.0, 3.0)]);
    assert_eq!(plants(&m, None, w, h, 1, &fixed()).len(), 4);
}

#[test]
fn fragments_join_their_plant_and_neighbours_stay_apart() {
    let (w, h) = (300, 120);
    // A plant with two detached leaves close by, and a separate plant further away.
    let m = discs(w, h, &[(60.0, 60.0, 30.0), (100.0, 60.0, 6.0), (60.0, 102.0, 5.0), (200.0, 60.0, 30.0)]);
    let p = plants(&m, None, w, h, 1, &fixed());
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
    let p = plants(&m, None, w, h, 1, &fixed());
    assert_eq!(p.len(), 4, "{p:?}");
    // A single plant is never split, however large: there is no median of three.
    let one = discs(w, h, &[(150.0, 60.0, 25.0), (197.0, 60.0, 25.0)]);
    assert_eq!(plants(&one, None, w, h, 1, &fixed()).len(), 1);
}

#[test]
fn counts_do_not_depend_on_the_scale() {
    for scale in [1.0, 1.5, 2.5] {
        let (w, h) = ((300.0 * scale) as usize, (120.0 * scale) as usize);
        let d = |x: f64, y: f64, r: f64| (x * scale, y * scale, r * scale);
        let m = discs(w, h, &[d(60.0, 60.0, 30.0), d(100.0, 60.0, 6.0), d(200.0, 60.0, 30.0), d(280.0, 20.0, 4.0)]);
        assert_eq!(plants(&m, None, w, h, 1, &fixed()).len(), 3, "scale {scale}");
    }
}

#[test]
fn the_distance_transform_measures_depth() {
    let (w, h) = (11, 11);
    let m = discs(w, h, &[(5.0, 5.0, 4.0)]);
    let d = blobs::distance_transform(&m, w, h);
    assert_eq!(d[0], 0.0);
    // The nearest background pixels are the diagonal ones at (2, 2) etc.: √18 ≈ 4.24 away.
    assert!((d[5 * w + 5] - 18f32.sqrt()).abs() < 0.5, "centre depth {}", d[5 * w + 5]);
    assert!(d[5 * w + 1] <= 1.0 + 1e-6, "edge depth {}", d[5 * w + 1]);
}

/// The built-in model's rules (as in its manifest).
fn builtin() -> Rules {
    crate::Model::builtin().manifest.detection
}

/// A vegetation map that is `v` on the mask and soil (0.0) elsewhere.
fn index_of(m: &[bool], v: f32) -> Vec<f32> {
    m.iter().map(|p| if *p { v } else { 0.0 }).collect()
}

fn count_discs(w: usize, h: usize, d: &[(f64, f64, f64)], rules: &Rules) -> Count {
    count_discs_in(w, h, d, rules, None)
}

fn count_discs_in(w: usize, h: usize, d: &[(f64, f64, f64)], rules: &Rules, layout: Option<grid::Layout>) -> Count {
    let m = discs(w, h, d);
    let veg = index_of(&m, 0.45);
    let maps = Maps { width: w, height: h, mask: &m, vegetation: Some(&veg), brightness: None };
    count(maps, 1, rules, layout)
}

/// A seedling of two cotyledons (two discs side by side with a gap for the hidden stem) at each
/// centre, `r` their radius.
fn seedlings(centres: &[(f64, f64)], r: f64) -> Vec<(f64, f64, f64)> {
    centres.iter().flat_map(|&(x, y)| [(x - 1.3 * r, y, r), (x + 1.3 * r, y, r)]).collect()
}

/// Cell centres of a `rows × cols` tray with `pitch`, tilted by `deg` about the image centre,
/// minus `empty` cells.
fn tray_centres(
    rows: usize,
    cols: usize,
    pitch: f64,
    deg: f64,
    w: usize,
    h: usize,
    empty: &[(usize, usize)],
) -> Vec<(f64, f64)> {
    let (s, c) = deg.to_radians().sin_cos();
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let mut out = Vec::new();
    for r in 0..rows {
        for k in 0..cols {
            if empty.contains(&(r, k)) {
                continue;
            }
            let (u, v) = ((k as f64 - (cols - 1) as f64 / 2.0) * pitch, (r as f64 - (rows - 1) as f64 / 2.0) * pitch);
            out.push((cx + u * c - v * s, cy + u * s + v * c));
        }
    }
    out
}

#[test]
fn a_seedlings_cotyledons_are_one_plant_in_its_cell() {
    // 3 × 6 cells, one seedling each, every seedling two separate leaves: 18 plants, not 36.
    let (w, h) = (512, 384);
    let centres = tray_centres(3, 6, 70.0, 0.0, w, h, &[]);
    let c = count_discs(w, h, &seedlings(&centres, 7.0), &builtin());
    assert_eq!(c.plants.len(), 18, "{:?}", c.plants.len());
    let g = c.grid.expect("the tray is found");
    assert_eq!((g.lattice.n_rows(), g.lattice.n_cols()), (3, 6));
    assert!(g.plants_per_cell.iter().all(|n| *n == 1));
    assert!(c.reasons.is_empty(), "{:?}", c.reasons);
}

#[test]
fn a_tilted_tray_with_empty_cells_reports_its_germination() {
    let (w, h) = (512, 384);
    for deg in [0.0, 7.0, -10.0] {
        let empty = [(0, 1), (2, 3), (1, 5)];
        let centres = tray_centres(4, 6, 62.0, deg, w, h, &empty);
        let c = count_discs(w, h, &seedlings(&centres, 6.0), &builtin());
        let g = c.grid.as_ref().unwrap_or_else(|| panic!("tilt {deg}: no grid"));
        assert_eq!((g.lattice.n_rows(), g.lattice.n_cols()), (4, 6), "tilt {deg}");
        assert_eq!(c.plants.len(), 21, "tilt {deg}");
        let empties: Vec<usize> = (0..24).filter(|k| g.plants_per_cell[*k] == 0).collect();
        assert_eq!(empties, vec![1, 11, 15], "tilt {deg}: row-major empty cells");
        assert!((g.lattice.angle.to_degrees() - deg).abs() <= 1.5, "tilt {deg}");
    }
}

#[test]
fn the_same_tray_turned_or_flipped_counts_the_same() {
    let (w, h) = (512, 384);
    let d = seedlings(&tray_centres(3, 5, 70.0, 0.0, w, h, &[(1, 2)]), 7.0);
    let base = count_discs(w, h, &d, &builtin());
    // Turned by 90° (x, y) → (h - y, x) on an h × w image, and flipped left-right.
    let turned: Vec<_> = d.iter().map(|&(x, y, r)| (h as f64 - y, x, r)).collect();
    let flipped: Vec<_> = d.iter().map(|&(x, y, r)| (w as f64 - x, y, r)).collect();
    let t = count_discs(h, w, &turned, &builtin());
    let f = count_discs(w, h, &flipped, &builtin());
    assert_eq!(base.plants.len(), 14);
    assert_eq!(t.plants.len(), 14);
    assert_eq!(f.plants.len(), 14);
    let tg = t.grid.unwrap();
    assert_eq!((tg.lattice.n_rows(), tg.lattice.n_cols()), (5, 3), "rows and columns swap");
}

#[test]
fn a_configured_tray_counts_its_empty_edge_row_as_empty_cells() {
    let (w, h) = (512, 384);
    // A 4 × 6 tray whose last row has not germinated: the photo alone shows 3 × 6.
    let empty: Vec<(usize, usize)> = (0..6).map(|k| (3, k)).collect();
    let d = seedlings(&tray_centres(4, 6, 62.0, 5.0, w, h, &empty), 6.0);
    let found = count_discs(w, h, &d, &builtin());
    assert_eq!(found.grid.as_ref().map(|g| (g.lattice.n_rows(), g.lattice.n_cols())), Some((3, 6)));
    let layout = grid::Layout { rows: 4, cols: 6 };
    let told = count_discs_in(w, h, &d, &builtin(), Some(layout));
    let g = told.grid.as_ref().expect("the configured tray");
    assert_eq!((g.lattice.n_rows(), g.lattice.n_cols()), (4, 6));
    assert_eq!(told.plants.len(), 18, "the same plants");
    assert_eq!(g.plants_per_cell.iter().filter(|n| **n == 0).count(), 6, "germination 18 of 24");
    // The same tray given as 6 × 4 (the grower holds the camera the other way): same cells.
    let swapped = count_discs_in(w, h, &d, &builtin(), Some(grid::Layout { rows: 6, cols: 4 }));
    assert_eq!(swapped.grid.as_ref().unwrap().plants_per_cell.len(), 24);
    assert_eq!(swapped.plants.len(), 18);
    // A configured grid still keeps a label off the tray out of the count.
    let mut with_label = d.clone();
    with_label.push((30.0, 370.0, 9.0));
    assert_eq!(count_discs_in(w, h, &with_label, &builtin(), Some(layout)).plants.len(), 18);
}

#[test]
fn a_configured_tray_with_too_few_plants_for_a_lattice_is_spread_over_them() {
    // Three seedlings of a 2 × 3 tray (too few to find a lattice): the cells span their extent.
    let (w, h) = (512, 384);
    let d = seedlings(&[(100.0, 100.0), (400.0, 100.0), (250.0, 300.0)], 8.0);
    assert!(count_discs(w, h, &d, &builtin()).grid.is_none());
    let c = count_discs_in(w, h, &d, &builtin(), Some(grid::Layout { rows: 2, cols: 3 }));
    let g = c.grid.as_ref().expect("spread grid");
    assert_eq!((g.lattice.n_rows(), g.lattice.n_cols()), (2, 3));
    assert_eq!(c.plants.len(), 3);
    let cells: Vec<_> = c.plants.iter().map(|p| p.cell.unwrap()).collect();
    for cell in [(0, 0), (0, 2), (1, 1)] {
        assert!(cells.contains(&cell), "{cells:?}");
    }
}

#[test]
fn a_label_outside_the_tray_is_not_a_plant() {
    let (w, h) = (512, 384);
    let centres = tray_centres(3, 5, 60.0, 0.0, w, 300, &[]);
    let mut d = seedlings(&centres, 6.0);
    // A green label lying off the tray, off its lattice, below it.
    d.push((90.0, 350.0, 9.0));
    let c = count_discs(w, h, &d, &builtin());
    assert_eq!(c.plants.len(), 15);
    assert!(c.plants.iter().all(|p| p.cell.is_some()));
}

#[test]
fn two_plants_far_apart_in_one_cell_are_two() {
    let (w, h) = (512, 384);
    let mut centres = tray_centres(3, 4, 100.0, 0.0, w, h, &[]);
    // The first cell holds a second seedling in its far corner (36 px away, cell gap 25 px).
    let (x, y) = centres[0];
    centres[0] = (x - 22.0, y - 22.0);
    centres.push((x + 22.0, y + 22.0));
    let c = count_discs(w, h, &seedlings(&centres, 5.0), &builtin());
    let g = c.grid.unwrap();
    assert_eq!(g.plants_per_cell[0], 2);
    assert_eq!(c.plants.len(), 13);
}

#[test]
fn without_a_grid_moss_next_to_a_plant_is_not_a_plant() {
    let (w, h) = (512, 384);
    // One rosette and scattered moss patches of 2-4 % of it, none on a lattice.
    let mut d = vec![(250.0, 200.0, 60.0)];
    for k in 0..9 {
        let k = k as f64;
        d.push((40.0 + 47.0 * k, 30.0 + 35.0 * (k * 1.7).sin().abs(), 9.0 + (k % 3.0)));
    }
    let c = count_discs(w, h, &d, &builtin());
    assert!(c.grid.is_none());
    assert_eq!(c.plants.len(), 1);
}

#[test]
fn the_trust_flag_says_why() {
    let rules = builtin();
    let (w, h) = (400, 300);
    // Nothing green: no plants.
    let none = count_discs(w, h, &[], &rules);
    assert_eq!(none.reasons, vec![TrustReason::NoPlants]);
    // A canopy covering most of the photo: closed.
    let canopy = count_discs(w, h, &[(120.0, 150.0, 130.0), (300.0, 150.0, 120.0)], &rules);
    assert!(canopy.reasons.contains(&TrustReason::ClosedCanopy), "{:?}", canopy.reasons);
    // A tray where 4 of 12 cells hold two seedlings (24 px either side of the centre, 48 px
    // apart on a 120 px pitch): crowded, and counted as two in each of those cells.
    let mut centres = tray_centres(3, 4, 120.0, 0.0, 600, 400, &[]);
    let crowded_cells = [0, 5, 6, 11];
    let extra: Vec<(f64, f64)> = crowded_cells.iter().map(|&k| (centres[k].0 + 24.0, centres[k].1)).collect();
    for &k in &crowded_cells {
        centres[k].0 -= 24.0;
    }
    centres.extend(extra);
    let crowded = count_discs(600, 400, &seedlings(&centres, 3.0), &rules);
    assert!(crowded.reasons.contains(&TrustReason::CrowdedCells), "{:?}", crowded.reasons);
    assert_eq!(crowded.plants.len(), 16);
    assert_eq!(crowded.grid.as_ref().unwrap().plants_per_cell.iter().filter(|n| **n == 2).count(), 4);
    // Separate plants in a clear tray: trusted.
    let clear = count_discs(512, 384, &seedlings(&tray_centres(3, 4, 100.0, 0.0, 512, 384, &[]), 5.0), &rules);
    assert!(clear.reasons.is_empty(), "{:?}", clear.reasons);
}

#[test]
fn the_adaptive_seed_and_mask_are_separate_switches() {
    let (w, h) = (200, 100);
    // The model's mask holds one disc; the index is 0.3 on a second, larger disc too.
    let model_mask = discs(w, h, &[(50.0, 50.0, 12.0)]);
    let both = discs(w, h, &[(50.0, 50.0, 12.0), (150.0, 50.0, 20.0)]);
    let veg = index_of(&both, 0.3);
    let maps = Maps { width: w, height: h, mask: &model_mask, vegetation: Some(&veg), brightness: None };
    let base = Rules { seed_vegetation: Some(0.25), ..Rules::default() };
    // Adaptive seed only: the model's mask is kept (one plant), the seed follows the photo.
    let seed_only = Rules { seed_fraction: 0.4, seed_min: 0.1, ..base };
    assert_eq!(count(maps, 1, &seed_only, None).plants.len(), 1);
    // Adaptive mask only: Demeter's mask (two plants), with the fixed seed 0.25 they both reach.
    let mask_only = Rules { mask_ratio: 0.65, mask_min: 0.09, ..base };
    assert_eq!(count(maps, 1, &mask_only, None).plants.len(), 2);
    // A fixed seed above the index rejects both, whichever mask is used.
    let high = Rules { seed_vegetation: Some(0.35), mask_ratio: 0.65, mask_min: 0.09, ..Rules::default() };
    assert!(count(maps, 1, &high, None).plants.is_empty());
}
