//! Which storage location (bench, shelf, room) a photo shows. Rules, tried in order: a QR code
//! in the photo whose text names a configured location; the photo's top-level subfolder; a
//! filename pattern; the default. The result records which rule matched.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `[locations]` in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocationsConfig {
    /// The known locations (`[[locations.list]]`). With none, the subfolder and filename rules
    /// report what they find as it is, and QR codes are not looked for (they could be anything).
    pub list: Vec<Location>,
    /// A regular expression with a named group `location`, searched in the file name, e.g.
    /// `"^(?P<location>B\d+)_"` for `B12_2026-11-29.jpg`.
    pub filename_pattern: Option<String>,
    /// The location id when no rule matches.
    pub default: Option<String>,
    /// Look for QR codes in photos (when locations are listed). Costs some time per photo.
    pub qr: bool,
}

impl Default for LocationsConfig {
    fn default() -> Self {
        Self { list: Vec::new(), filename_pattern: None, default: None, qr: true }
    }
}

/// A storage location: a stable id (what results and exports carry) and a name for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub id: String,
    pub name: String,
    /// The tray its photos show, when the grower knows it (`tray = { rows = 4, cols = 5 }`): the
    /// count then uses exactly these cells, as PlantCV's multi-plant workflow does, instead of
    /// the grid found in the photo (which leaves out an entirely empty edge row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tray: Option<TrayLayout>,
}

/// Rows and columns of cells or pots, as the grower sees the tray in the photo (the count accepts
/// the photo turned by 90°, too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrayLayout {
    pub rows: u32,
    pub cols: u32,
}

impl TrayLayout {
    /// The most rows or columns a tray may have (a 2,048-cell flat is already far beyond any
    /// plug tray sold).
    pub const MAX_SIDE: u32 = 64;
}

/// Which rule found a photo's location.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationRule {
    QrCode,
    Subfolder,
    FilenamePattern,
    Default,
}

impl LocationRule {
    /// The rule's name, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            LocationRule::QrCode => "qr_code",
            LocationRule::Subfolder => "subfolder",
            LocationRule::FilenamePattern => "filename_pattern",
            LocationRule::Default => "default",
        }
    }
}

/// A photo's location and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationMatch {
    pub id: String,
    /// The configured name, when the id is a listed location.
    pub name: Option<String>,
    pub rule: LocationRule,
    /// The listed location's tray, when configured.
    pub tray: Option<TrayLayout>,
}

/// The rules, ready to use (the pattern compiled once).
#[derive(Debug, Clone)]
pub struct Locator {
    config: LocationsConfig,
    pattern: Option<regex::Regex>,
}

/// A location's id, its name when listed, and its tray when configured.
type Resolved = (String, Option<String>, Option<TrayLayout>);

/// Folder of photos uploaded from the page; it is not a location.
const UPLOADS: &str = crate::session::UPLOADS_DIR;

impl Locator {
    /// Checks the configuration: ids unique and not empty, the pattern valid with a
    /// `location` group, the default a listed location (when there is a list).
    pub fn new(config: &LocationsConfig) -> Result<Self, ConfigError> {
        let invalid = |field, reason: String| ConfigError::Invalid { field, reason };
        let mut seen = std::collections::HashSet::new();
        for l in &config.list {
            if l.id.trim().is_empty() {
                return Err(invalid("locations.list", "a location has an empty id".into()));
            }
            if !seen.insert(l.id.to_lowercase()) {
                return Err(invalid("locations.list", format!("the id {:?} appears twice", l.id)));
            }
            if let Some(t) = l.tray {
                let side = 1..=TrayLayout::MAX_SIDE;
                if !side.contains(&t.rows) || !side.contains(&t.cols) || t.rows * t.cols < 2 {
                    return Err(invalid(
                        "locations.list.tray",
                        format!(
                            "location {:?} has a {} x {} tray; rows and cols must be 1 to {} and make at least 2 cells",
                            l.id,
                            t.rows,
                            t.cols,
                            TrayLayout::MAX_SIDE
                        ),
                    ));
                }
            }
        }
        let pattern = match &config.filename_pattern {
            Some(p) => {
                let re = regex::Regex::new(p).map_err(|e| invalid("locations.filename_pattern", e.to_string()))?;
                if !re.capture_names().any(|n| n == Some("location")) {
                    return Err(invalid(
                        "locations.filename_pattern",
                        "needs a named group `location`, e.g. ^(?P<location>B\\d+)_".into(),
                    ));
                }
                Some(re)
            }
            None => None,
        };
        if let Some(d) = &config.default {
            if !config.list.is_empty() && !config.list.iter().any(|l| l.id == *d) {
                return Err(invalid("locations.default", format!("{d:?} is not the id of a listed location")));
            }
        }
        Ok(Self { config: config.clone(), pattern })
    }

    /// Whether the pipeline should read QR codes at all.
    pub fn wants_qr(&self) -> bool {
        self.config.qr && !self.config.list.is_empty()
    }

    /// A listed location named by `text` (its id or name, any case); with no list, the text.
    fn resolve(&self, text: &str) -> Option<Resolved> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        if self.config.list.is_empty() {
            return Some((text.to_owned(), None, None));
        }
        self.config
            .list
            .iter()
            .find(|l| l.id.eq_ignore_ascii_case(text) || l.name.eq_ignore_ascii_case(text))
            .map(|l| (l.id.clone(), Some(l.name.clone()), l.tray))
    }

    /// Applies the rules in order. `qr_texts`: what the QR codes in the photo say;
    /// `rel_path`: the photo's path below the watched folder, `/`-separated.
    pub fn locate(&self, qr_texts: &[String], rel_path: &str) -> Option<LocationMatch> {
        let found = |(id, name, tray): Resolved, rule| LocationMatch { id, name, rule, tray };
        if self.wants_qr() {
            if let Some(hit) = qr_texts.iter().find_map(|t| self.resolve(t)) {
                return Some(found(hit, LocationRule::QrCode));
            }
        }
        let mut parts = rel_path.split('/');
        let first = parts.next().unwrap_or("");
        let file = rel_path.rsplit('/').next().unwrap_or(rel_path);
        if parts.next().is_some() && first != UPLOADS {
            if let Some(hit) = self.resolve(first) {
                return Some(found(hit, LocationRule::Subfolder));
            }
        }
        if let Some(re) = &self.pattern {
            if let Some(hit) = re.captures(file).and_then(|c| c.name("location")).and_then(|m| self.resolve(m.as_str()))
            {
                return Some(found(hit, LocationRule::FilenamePattern));
            }
        }
        let default = self.config.default.as_ref()?;
        let listed = self.config.list.iter().find(|l| l.id == *default);
        Some(found(
            (default.clone(), listed.map(|l| l.name.clone()), listed.and_then(|l| l.tray)),
            LocationRule::Default,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn benches() -> LocationsConfig {
        LocationsConfig {
            list: vec![
                Location { id: "B1".into(), name: "Bench 1".into(), tray: Some(TrayLayout { rows: 4, cols: 5 }) },
                Location { id: "B2".into(), name: "Bench 2".into(), tray: None },
                Location { id: "cold".into(), name: "Cold room".into(), tray: None },
            ],
            filename_pattern: Some(r"^(?P<location>B\d+)_".into()),
            default: Some("cold".into()),
            qr: true,
        }
    }

    #[test]
    fn rules_apply_in_order_and_say_which_matched() {
        let l = Locator::new(&benches()).unwrap();
        let qr = |t: &str| vec!["https://example.org/not-a-location".to_owned(), t.to_owned()];
        let m = l.locate(&qr("bench 2"), "B1/B1_0001.jpg").unwrap();
        assert_eq!((m.id.as_str(), m.name.as_deref(), m.rule), ("B2", Some("Bench 2"), LocationRule::QrCode));
        let m = l.locate(&[], "B1/B2_0001.jpg").unwrap();
        assert_eq!((m.id.as_str(), m.rule), ("B1", LocationRule::Subfolder));
        assert_eq!(m.tray, Some(TrayLayout { rows: 4, cols: 5 }), "the listed location's tray comes with it");
        let m = l.locate(&[], "unknown-folder/B2_0001.jpg").unwrap();
        assert_eq!(
            (m.id.as_str(), m.rule),
            ("B2", LocationRule::FilenamePattern),
            "an unknown subfolder falls through"
        );
        let m = l.locate(&qr("nonsense"), "IMG_0001.jpg").unwrap();
        assert_eq!((m.id.as_str(), m.name.as_deref(), m.rule), ("cold", Some("Cold room"), LocationRule::Default));
        let m = l.locate(&[], "uploads/0192/B9_x.jpg").unwrap();
        assert_eq!(m.rule, LocationRule::Default, "uploads are no location; B9 is not listed");
    }

    #[test]
    fn without_a_list_the_subfolder_is_the_location_and_qr_codes_are_ignored() {
        let l = Locator::new(&LocationsConfig::default()).unwrap();
        assert!(!l.wants_qr());
        let m = l.locate(&["B1".into()], "bench-7/a.jpg").unwrap();
        assert_eq!((m.id.as_str(), m.name, m.rule), ("bench-7", None, LocationRule::Subfolder));
        assert_eq!(l.locate(&[], "a.jpg"), None);
        assert_eq!(l.locate(&[], "bench-3/a/b.jpg").unwrap().id, "bench-3", "the top-level folder");
        assert_eq!(l.locate(&[], "uploads/0192f5d2-0000-7000-8000-000000000000/tray.jpg"), None, "uploads");
    }

    #[test]
    fn bad_configurations_name_the_key() {
        let mut c = benches();
        c.filename_pattern = Some("(unclosed".into());
        assert!(Locator::new(&c).unwrap_err().to_string().contains("locations.filename_pattern"));
        c.filename_pattern = Some(r"B\d+".into());
        assert!(Locator::new(&c).unwrap_err().to_string().contains("named group `location`"));
        let mut c = benches();
        c.default = Some("attic".into());
        assert!(Locator::new(&c).unwrap_err().to_string().contains("locations.default"));
        let mut c = benches();
        c.list.push(Location { id: "b1".into(), name: "again".into(), tray: None });
        assert!(Locator::new(&c).unwrap_err().to_string().contains("appears twice"));
        for (rows, cols) in [(0, 5), (4, 65), (1, 1)] {
            let mut c = benches();
            c.list[1].tray = Some(TrayLayout { rows, cols });
            let e = Locator::new(&c).unwrap_err().to_string();
            assert!(e.contains("locations.list.tray") && e.contains("\"B2\""), "{e}");
        }
    }

    #[test]
    fn a_tray_reads_from_toml() {
        let c: LocationsConfig =
            toml::from_str("[[list]]\nid = \"B1\"\nname = \"Bench 1\"\ntray = { rows = 4, cols = 5 }\n").unwrap();
        assert_eq!(c.list[0].tray, Some(TrayLayout { rows: 4, cols: 5 }));
        assert!(
            toml::from_str::<LocationsConfig>("[[list]]\nid = \"B1\"\nname = \"x\"\ntray = { rows = 4 }\n").is_err()
        );
    }
}
