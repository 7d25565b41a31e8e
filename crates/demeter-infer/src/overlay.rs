//! The overlay a person checks a count with: the photo, downscaled, with every detected plant
//! boxed and numbered (numbers match the order of `plants` in the result, largest first), and,
//! when the tray's grid was found, its cells outlined and the empty ones crossed out.

use image::{Rgb, RgbImage};

use demeter_domain::{Grid, JobResult, Plant};

/// 3×5 bitmaps of the digits 0–9, one row per `u8` (low 3 bits, left to right).
const DIGITS: [[u8; 5]; 10] = [
    [0b111, 0b101, 0b101, 0b101, 0b111],
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b111, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
    [0b111, 0b100, 0b111, 0b101, 0b111],
    [0b111, 0b001, 0b010, 0b010, 0b010],
    [0b111, 0b101, 0b111, 0b101, 0b111],
    [0b111, 0b101, 0b111, 0b001, 0b111],
];

const BOX: Rgb<u8> = Rgb([255, 0, 200]);
/// Cell outlines, and the cross on an empty cell.
const CELL: Rgb<u8> = Rgb([0, 220, 255]);
const EMPTY: Rgb<u8> = Rgb([255, 140, 0]);
const LABEL_BG: Rgb<u8> = Rgb([255, 255, 255]);
const LABEL_FG: Rgb<u8> = Rgb([0, 0, 0]);
/// Long side of an overlay drawn from the photo, in pixels: sharp on a phone held upright
/// (about 400 CSS pixels at 3× density), and a 12 MP JPEG decodes at half scale for it.
pub const OVERLAY_SIDE: u32 = 1024;

/// Pixels per font dot and box line width for an image with this long side: 2 at 512 px, so
/// the numbers stay readable whatever size the image is shown at.
fn dot_for(long_side: u32) -> u32 {
    (long_side / 256).max(1)
}

fn fill(img: &mut RgbImage, x0: u32, y0: u32, w: u32, h: u32, c: Rgb<u8>) {
    for y in y0..(y0 + h).min(img.height()) {
        for x in x0..(x0 + w).min(img.width()) {
            img.put_pixel(x, y, c);
        }
    }
}

fn rect(img: &mut RgbImage, [x, y, w, h]: [u32; 4], c: Rgb<u8>, line: u32) {
    let (w, h) = (w.max(1), h.max(1));
    for t in 0..line {
        fill(img, x, y.saturating_add(t), w, 1, c);
        fill(img, x, (y + h).saturating_sub(1 + t), w, 1, c);
        fill(img, x.saturating_add(t), y, 1, h, c);
        fill(img, (x + w).saturating_sub(1 + t), y, 1, h, c);
    }
}

fn label(img: &mut RgbImage, x: u32, y: u32, n: usize, dot: u32) {
    let text = n.to_string();
    let w = text.len() as u32 * 4 * dot + dot;
    let h = 5 * dot + 2 * dot;
    fill(img, x, y, w, h, LABEL_BG);
    for (i, ch) in text.bytes().enumerate() {
        let glyph = DIGITS[usize::from(ch - b'0')];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..3 {
                if bits & (0b100 >> col) != 0 {
                    let px = x + dot + (i as u32 * 4 + col) * dot;
                    let py = y + dot + row as u32 * dot;
                    fill(img, px, py, dot, dot, LABEL_FG);
                }
            }
        }
    }
}

/// A straight line `width` pixels thick from `a` to `b` (any direction; clipped to the image).
fn line(img: &mut RgbImage, a: [f32; 2], b: [f32; 2], c: Rgb<u8>, width: u32) {
    let steps = (b[0] - a[0]).abs().max((b[1] - a[1]).abs()).ceil().max(1.0) as u32;
    let half = (width / 2) as f32;
    for k in 0..=steps {
        let t = k as f32 / steps as f32;
        let (x, y) = (a[0] + (b[0] - a[0]) * t - half, a[1] + (b[1] - a[1]) * t - half);
        if x >= 0.0 && y >= 0.0 {
            fill(img, x as u32, y as u32, width, width, c);
        }
    }
}

/// Outlines every cell of `grid` and crosses out the empty ones; `s` maps photo pixels to `img`.
fn cells(img: &mut RgbImage, grid: &Grid, s: f32, dot: u32) {
    let thin = (dot / 2).max(1);
    for row in 0..grid.rows {
        for col in 0..grid.cols {
            let corners = grid.cell_corners(row, col).map(|[x, y]| [x * s, y * s]);
            for k in 0..4 {
                line(img, corners[k], corners[(k + 1) % 4], CELL, thin);
            }
            if grid.plants_per_cell.get((row * grid.cols + col) as usize) == Some(&0) {
                // An X over the middle half of the cell.
                let [cx, cy] = grid.cell_centre(row, col).map(|v| v * s);
                let inner = corners.map(|[x, y]| [cx + (x - cx) / 2.0, cy + (y - cy) / 2.0]);
                line(img, inner[0], inner[2], EMPTY, dot);
                line(img, inner[1], inner[3], EMPTY, dot);
            }
        }
    }
}

/// Draws the result's plants (numbered, in the original photo's coordinates), a multi-class
/// model's other objects (boxed, not numbered), each class in its colour
/// ([`JobResult::class_colour`]; a mask model's plants in magenta), and the tray's grid onto `img`
/// (the photo at any size), lines and numbers sized to it.
pub fn draw_result(img: RgbImage, result: &JobResult) -> RgbImage {
    let colour = |p: &Plant| p.class.as_deref().and_then(|c| result.class_colour(c)).map_or(BOX, Rgb);
    let objects: Vec<(&Plant, Rgb<u8>)> = result.objects.iter().map(|p| (p, colour(p))).collect();
    let plants: Vec<(&Plant, Rgb<u8>)> = result.plants.iter().map(|p| (p, colour(p))).collect();
    draw_coloured(img, result.width, &plants, &objects, result.grid.as_ref())
}

fn draw_coloured(
    mut img: RgbImage,
    orig_width: u32,
    plants: &[(&Plant, Rgb<u8>)],
    objects: &[(&Plant, Rgb<u8>)],
    grid: Option<&Grid>,
) -> RgbImage {
    let dot = dot_for(img.width().max(img.height()));
    let s = f64::from(img.width()) / f64::from(orig_width.max(1));
    let scale = |v: u32| (f64::from(v) * s).round() as u32;
    if let Some(g) = grid {
        cells(&mut img, g, s as f32, dot);
    }
    for (p, colour) in objects.iter().chain(plants) {
        rect(&mut img, [scale(p.bbox[0]), scale(p.bbox[1]), scale(p.bbox[2]), scale(p.bbox[3])], *colour, dot);
    }
    // Labels last, so no box is drawn over a number.
    for (i, (p, _)) in plants.iter().enumerate() {
        label(&mut img, scale(p.bbox[0]), scale(p.bbox[1]), i + 1, dot);
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mask model's result with `plants` in a photo `orig_width` wide, drawn onto `img`.
    fn draw(img: RgbImage, orig_width: u32, plants: &[Plant], grid: Option<&Grid>) -> RgbImage {
        let result =
            JobResult { width: orig_width, plants: plants.to_vec(), grid: grid.cloned(), ..Default::default() };
        draw_result(img, &result)
    }

    #[test]
    fn boxes_and_numbers_are_drawn_where_the_plants_are() {
        let preview = RgbImage::from_pixel(100, 50, Rgb([0, 128, 0]));
        let plants = vec![
            Plant { bbox: [20, 20, 60, 40], centroid: [50.0, 40.0], area_px: 100, ..Default::default() },
            Plant { bbox: [120, 40, 40, 40], centroid: [140.0, 60.0], area_px: 50, ..Default::default() },
        ];
        let out = draw(preview, 200, &plants, None); // photo twice the preview's size
        assert_eq!(out.dimensions(), (100, 50));
        // The first box's right edge at x = (20 + 60) / 2 - 1, halfway down, one pixel wide
        // on an image this small.
        assert_eq!(out.get_pixel(39, 15), &BOX);
        assert_eq!(out.get_pixel(38, 15), &Rgb([0, 128, 0]));
        // Its label's white background at its top-left corner.
        assert_eq!(out.get_pixel(10, 10), &LABEL_BG);
        // Outside every box the photo is untouched.
        assert_eq!(out.get_pixel(99, 0), &Rgb([0, 128, 0]));
    }

    #[test]
    fn lines_and_numbers_grow_with_the_image() {
        let plants =
            [Plant { bbox: [100, 100, 400, 300], centroid: [300.0, 250.0], area_px: 1000, ..Default::default() }];
        let line_width = |side: u32| {
            let out = draw(RgbImage::from_pixel(side, side * 3 / 4, Rgb([0, 0, 0])), 1024, &plants, None);
            let s = side / 4; // mid-box; only the left edge (x = 100 * side / 1024) is left of 0.3 side
            (0..side * 3 / 10).filter(|&x| out.get_pixel(x, s) == &BOX).count() as u32
        };
        assert_eq!([line_width(256), line_width(512), line_width(1024)], [1, 2, 4]);
    }

    #[test]
    fn multi_digit_labels_fit() {
        let preview = RgbImage::from_pixel(40, 20, Rgb([0, 0, 0]));
        let plants: Vec<_> = (0..12)
            .map(|_| Plant { bbox: [0, 0, 10, 10], centroid: [5.0, 5.0], area_px: 1, ..Default::default() })
            .collect();
        let out = draw(preview, 40, &plants, None);
        assert_eq!(out.dimensions(), (40, 20));
    }

    #[test]
    fn each_class_is_boxed_in_its_own_colour() {
        let at = |x: u32, class: &str| Plant { bbox: [x, 10, 20, 20], class: Some(class.into()), ..Default::default() };
        let result = JobResult {
            width: 100,
            plants: vec![at(10, "seedling")],
            objects: vec![at(60, "weed")],
            class_counts: [("seedling".to_owned(), 1), ("weed".to_owned(), 1), ("empty".to_owned(), 0)].into(),
            ..Default::default()
        };
        let out = draw_result(RgbImage::from_pixel(100, 50, Rgb([0, 0, 0])), &result);
        // the right edges, clear of the number labels; classes sorted: empty, seedling, weed
        assert_eq!(out.get_pixel(29, 25).0, demeter_domain::CLASS_COLOURS[1], "seedling");
        assert_eq!(out.get_pixel(79, 25).0, demeter_domain::CLASS_COLOURS[2], "weed");
        assert_eq!(result.class_colour("empty"), Some(demeter_domain::CLASS_COLOURS[0]));
        assert_eq!(out.get_pixel(11, 16), &LABEL_BG, "plants are numbered (the label's margin)");
        assert_eq!(out.get_pixel(61, 16), &Rgb([0, 0, 0]), "objects are not");
    }

    #[test]
    fn cells_are_outlined_and_empty_ones_crossed_out() {
        // A 2 × 3 grid of 100-px cells from (50, 50), photo 400 × 300 drawn at the same size.
        let grid = Grid {
            rows: 2,
            cols: 3,
            origin: [100.0, 100.0],
            pitch: [100.0, 100.0],
            angle_deg: 0.0,
            plants_per_cell: vec![1, 0, 1, 1, 1, 1],
        };
        let out = draw(RgbImage::from_pixel(400, 300, Rgb([0, 0, 0])), 400, &[], Some(&grid));
        assert_eq!(out.get_pixel(150, 120), &CELL, "the wall between cells [0,0] and [0,1]");
        assert_eq!(out.get_pixel(200, 100), &EMPTY, "the centre of the empty cell [0,1]");
        assert_eq!(out.get_pixel(100, 100), &Rgb([0, 0, 0]), "an occupied cell's centre is untouched");
    }
}
