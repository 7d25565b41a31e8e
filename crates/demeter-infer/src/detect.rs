//! From a plant mask to plants: 8-connected components above a minimum area.

/// One connected component, in mask coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// `[x, y, width, height]`.
    pub bbox: [u32; 4],
    pub centroid: [f64; 2],
    pub area: u64,
}

/// Labels the 8-connected components of `mask` (row-major, `width × height`) and returns those
/// with at least `min_area` pixels, largest first. Iterative (explicit stack): no recursion
/// depth to overflow on a mask that is one big plant.
pub fn components(mask: &[bool], width: usize, height: usize, min_area: u64) -> Vec<Component> {
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
        let (mut area, mut sx, mut sy) = (0u64, 0f64, 0f64);
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % width, i / width);
            area += 1;
            sx += x as f64;
            sy += y as f64;
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
            for dy in -1isize..=1 {
                for dx in -1isize..=1 {
                    let (nx, ny) = (x as isize + dx, y as isize + dy);
                    if nx < 0 || ny < 0 || nx >= width as isize || ny >= height as isize {
                        continue;
                    }
                    let j = ny as usize * width + nx as usize;
                    if mask[j] && !visited[j] {
                        visited[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        if area >= min_area {
            out.push(Component {
                bbox: [x0 as u32, y0 as u32, (x1 - x0 + 1) as u32, (y1 - y0 + 1) as u32],
                centroid: [sx / area as f64, sy / area as f64],
                area,
            });
        }
    }
    out.sort_by(|a, b| b.area.cmp(&a.area).then(a.bbox.cmp(&b.bbox)));
    out
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
}
