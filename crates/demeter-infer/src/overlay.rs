//! The overlay a person checks a count with: the photo, downscaled, with every detected plant
//! boxed and numbered (numbers match the order of `plants` in the result, largest first).

use image::{Rgb, RgbImage};

use demeter_domain::Plant;

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

/// Draws `plants` (in the original photo's coordinates, `orig_width` wide) onto `img` (the
/// photo at any size), lines and numbers sized to it.
pub fn draw(mut img: RgbImage, orig_width: u32, plants: &[Plant]) -> RgbImage {
    let dot = dot_for(img.width().max(img.height()));
    let s = f64::from(img.width()) / f64::from(orig_width.max(1));
    let scale = |v: u32| (f64::from(v) * s).round() as u32;
    for p in plants {
        rect(&mut img, [scale(p.bbox[0]), scale(p.bbox[1]), scale(p.bbox[2]), scale(p.bbox[3])], BOX, dot);
    }
    // Labels last, so no box is drawn over a number.
    for (i, p) in plants.iter().enumerate() {
        label(&mut img, scale(p.bbox[0]), scale(p.bbox[1]), i + 1, dot);
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_and_numbers_are_drawn_where_the_plants_are() {
        let preview = RgbImage::from_pixel(100, 50, Rgb([0, 128, 0]));
        let plants = vec![
            Plant { bbox: [20, 20, 60, 40], centroid: [50.0, 40.0], area_px: 100 },
            Plant { bbox: [120, 40, 40, 40], centroid: [140.0, 60.0], area_px: 50 },
        ];
        let out = draw(preview, 200, &plants); // photo twice the preview's size
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
        let plants = [Plant { bbox: [100, 100, 400, 300], centroid: [300.0, 250.0], area_px: 1000 }];
        let line_width = |side: u32| {
            let out = draw(RgbImage::from_pixel(side, side * 3 / 4, Rgb([0, 0, 0])), 1024, &plants);
            let s = side / 4; // mid-box; only the left edge (x = 100 * side / 1024) is left of 0.3 side
            (0..side * 3 / 10).filter(|&x| out.get_pixel(x, s) == &BOX).count() as u32
        };
        assert_eq!([line_width(256), line_width(512), line_width(1024)], [1, 2, 4]);
    }

    #[test]
    fn multi_digit_labels_fit() {
        let preview = RgbImage::from_pixel(40, 20, Rgb([0, 0, 0]));
        let plants: Vec<_> =
            (0..12).map(|_| Plant { bbox: [0, 0, 10, 10], centroid: [5.0, 5.0], area_px: 1 }).collect();
        let out = draw(preview, 40, &plants);
        assert_eq!(out.dimensions(), (40, 20));
    }
}
