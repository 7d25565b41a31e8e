//! Medians and spreads of repeated measurements.

/// A set of measurements of one quantity.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The `q` quantile (nearest rank), `q` in 0..=1.
    pub fn quantile(&self, q: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() - 1) as f64 * q).round() as usize]
    }

    pub fn median(&self) -> f64 {
        self.quantile(0.5)
    }

    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// "median (min–max)" with `digits` decimals.
    pub fn spread(&self, digits: usize) -> String {
        if self.0.len() == 1 {
            return format!("{:.*}", digits, self.0[0]);
        }
        format!("{:.*} ({:.*}–{:.*})", digits, self.median(), digits, self.min(), digits, self.max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let s = Samples(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((s.median(), s.min(), s.max(), s.quantile(1.0)), (3.0, 1.0, 5.0, 5.0));
        assert_eq!(s.spread(1), "3.0 (1.0–5.0)");
        assert_eq!(Samples(vec![2.5]).spread(2), "2.50");
    }
}
