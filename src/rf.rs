//! Receptive-field tables: one row per electrode with its RF centre and size in
//! degrees of visual angle (the fixation point is (0, 0), x to the right, y up).
//!
//! File format (CSV, `#` starts a comment line):
//! ```text
//! electrode,x_deg,y_deg,size_deg
//! 1,-1.25,-0.80,0.45
//! ```
//! `electrode` is the 1-based channel number of the MUA stream (as in TVSD).

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use crate::units::Area;

#[derive(Debug, thiserror::Error)]
pub enum RfError {
    #[error("cannot read RF table {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{path}:{line}: {message} (expected `electrode,x_deg,y_deg,size_deg`)")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// What [`RfTable::synthetic`] draws a table for: the image's field of view and the
/// channels of each array. A rig config converts into one
/// (`impl From<&RigConfig> for RfLayout` lives in [`crate::config`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RfLayout {
    /// Image side in pixels; the image centre is the fixation point.
    pub image_size: usize,
    /// Image pixels per degree of visual angle; finite and above zero, as a validated
    /// rig's is.
    pub pixels_per_degree: f64,
    /// Every array, dead ones included (their channels get RFs too).
    pub arrays: Vec<ArrayChannels>,
}

/// One array's area and its zero-based, half-open channel range.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayChannels {
    pub area: Area,
    pub channels: Range<usize>,
}

/// One electrode's receptive field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RfEntry {
    /// Zero-based channel index.
    pub channel: usize,
    pub x_deg: f64,
    pub y_deg: f64,
    /// Gaussian sigma of the RF in degrees.
    pub size_deg: f64,
}

/// The columns of an RF table, in order.
const COLUMNS: [&str; 4] = ["electrode", "x_deg", "y_deg", "size_deg"];

/// One row as written: the electrode 1-based.
#[derive(Debug, serde::Deserialize)]
struct RfRow {
    electrode: usize,
    x_deg: f64,
    y_deg: f64,
    size_deg: f64,
}

impl RfEntry {
    /// A row's entry, or what is wrong with it (naming the column).
    fn from_record(record: &csv::StringRecord) -> Result<RfEntry, String> {
        if record.len() != COLUMNS.len() {
            return Err(format!("{} fields", record.len()));
        }
        let row: RfRow = record.deserialize(None).map_err(|e| {
            let column = match e.kind() {
                csv::ErrorKind::Deserialize { err, .. } => err.field().map_or(0, |f| f as usize),
                _ => 0,
            };
            let value = record.get(column).unwrap_or_default();
            match column {
                0 => format!("electrode {value:?} is not a positive integer"),
                _ => format!("{} {value:?} is not a number", COLUMNS[column]),
            }
        })?;
        if row.electrode == 0 {
            return Err("electrode numbers are 1-based".into());
        }
        for (column, v) in COLUMNS[1..]
            .iter()
            .zip([row.x_deg, row.y_deg, row.size_deg])
        {
            if !v.is_finite() {
                return Err(format!("{column} {v} is not a finite number"));
            }
        }
        if row.size_deg <= 0.0 {
            return Err("size_deg must be > 0".into());
        }
        Ok(RfEntry {
            channel: row.electrode - 1,
            x_deg: row.x_deg,
            y_deg: row.y_deg,
            size_deg: row.size_deg,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RfTable {
    pub entries: Vec<RfEntry>,
}

impl RfTable {
    pub fn load(path: &Path) -> Result<RfTable, RfError> {
        let text = std::fs::read_to_string(path).map_err(|e| RfError::Io(path.to_path_buf(), e))?;
        Self::parse(&text, path)
    }

    /// Reads the table's rows (a header row is optional); an error names the line.
    pub fn parse(text: &str, path: &Path) -> Result<RfTable, RfError> {
        // Comment lines are blanked, and csv skips blank lines.
        let text: String = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with('#') {
                    ""
                } else {
                    l
                }
            })
            .flat_map(|l| [l, "\n"])
            .collect();
        let mut rows = csv::ReaderBuilder::new()
            .has_headers(false)
            .trim(csv::Trim::All)
            .flexible(true)
            .from_reader(text.as_bytes());
        let line_of = |p: Option<&csv::Position>| csv_row_line(&text, p);
        let error = |line, message| RfError::Parse {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut entries = Vec::new();
        for record in rows.records() {
            let record = record.map_err(|e| error(line_of(e.position()), e.to_string()))?;
            let line = line_of(record.position());
            if record.get(0) == Some(COLUMNS[0]) || record.iter().all(str::is_empty) {
                continue;
            }
            let entry = RfEntry::from_record(&record).map_err(|message| error(line, message))?;
            if entries.iter().any(|e: &RfEntry| e.channel == entry.channel) {
                let message = format!("electrode {} listed twice", entry.channel + 1);
                return Err(error(line, message));
            }
            entries.push(entry);
        }
        entries.sort_by_key(|e| e.channel);
        Ok(RfTable { entries })
    }

    pub fn to_csv(&self) -> String {
        let mut s = String::from("electrode,x_deg,y_deg,size_deg\n");
        for e in &self.entries {
            let _ = writeln!(
                s,
                "{},{:.4},{:.4},{:.4}",
                e.channel + 1,
                e.x_deg,
                e.y_deg,
                e.size_deg
            );
        }
        s
    }

    pub fn save(&self, path: &Path) -> Result<(), RfError> {
        std::fs::write(path, self.to_csv()).map_err(|e| RfError::Io(path.to_path_buf(), e))
    }

    pub fn get(&self, channel: usize) -> Option<&RfEntry> {
        self.entries
            .binary_search_by_key(&channel, |e| e.channel)
            .ok()
            .map(|i| &self.entries[i])
    }

    /// A plausible RF table for a rig with none (`layout` is usually `&RigConfig`): RF
    /// centres clustered per array (V1 small and parafoveal, V4 larger, IT large and
    /// central), in the lower-left visual field as for arrays in the right hemisphere,
    /// size growing with eccentricity. Deterministic for a seed.
    pub fn synthetic(layout: impl Into<RfLayout>, seed: u64) -> RfTable {
        let layout = layout.into();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let half_field = layout.image_size as f64 / layout.pixels_per_degree / 2.0;
        let mut entries = Vec::new();
        for array in &layout.arrays {
            // Array centre: eccentricity grows from V1 to V4; IT sits near the fovea.
            let (ecc_range, scatter, size_at_1deg, floor): ((f64, f64), f64, f64, f64) =
                match array.area {
                    Area::V1 => ((0.4, 0.6 * half_field), 0.25, 0.25, 0.12),
                    Area::V4 => ((0.6, 0.8 * half_field), 0.6, 0.55, 0.4),
                    Area::IT => ((0.0, 0.35 * half_field), 1.0, 1.0, 1.2),
                };
            // A rig whose image spans under ~1.5° (a large pixels_per_degree) has no room
            // for the usual minimum eccentricity: start the range at half its end.
            let ecc_range = (ecc_range.0.min(ecc_range.1 / 2.0), ecc_range.1);
            let ecc = rng.random_range(ecc_range.0..ecc_range.1);
            // Lower-left quadrant, angle from 180° to 270°.
            let angle = rng.random_range(std::f64::consts::PI..1.5 * std::f64::consts::PI);
            let (cx, cy) = (ecc * angle.cos(), ecc * angle.sin());
            let jitter = Normal::new(0.0, scatter).expect("positive sigma");
            for channel in array.channels.clone() {
                let x = (cx + jitter.sample(&mut rng)).clamp(-half_field, half_field);
                let y = (cy + jitter.sample(&mut rng)).clamp(-half_field, half_field);
                let e = (x * x + y * y).sqrt();
                let size = (floor + size_at_1deg * e) * rng.random_range(0.85..1.15);
                entries.push(RfEntry {
                    channel,
                    x_deg: x,
                    y_deg: y,
                    size_deg: size,
                });
            }
        }
        entries.sort_by_key(|e| e.channel);
        RfTable { entries }
    }

    /// RF centre and size in image pixels (x right, y down, (0,0) top-left).
    pub fn to_pixels(entry: &RfEntry, image_size: usize, pixels_per_degree: f64) -> [f32; 3] {
        let c = image_size as f64 / 2.0;
        [
            (c + entry.x_deg * pixels_per_degree) as f32,
            (c - entry.y_deg * pixels_per_degree) as f32,
            (entry.size_deg * pixels_per_degree) as f32,
        ]
    }
}

/// The 1-based line of a CSV row of `text` at `position` (0 without one). csv's
/// position is where it began to read the row, before the blank lines it skipped: the
/// row's line is that of its first character.
pub(crate) fn csv_row_line(text: &str, position: Option<&csv::Position>) -> usize {
    position.map_or(0, |p| {
        let bytes = text.as_bytes();
        let from = (p.byte() as usize).min(bytes.len());
        let start = bytes[from..]
            .iter()
            .position(|b| !matches!(b, b'\n' | b'\r'))
            .map_or(bytes.len(), |i| from + i);
        bytes[..start].iter().filter(|&&b| b == b'\n').count() + 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 16 arrays of 64 channels as on the synthetic rig: 8 in V1, 4 in V4, 4 in IT.
    fn sixteen_arrays(image_size: usize, pixels_per_degree: f64) -> RfLayout {
        RfLayout {
            image_size,
            pixels_per_degree,
            arrays: (0..16)
                .map(|i| ArrayChannels {
                    area: match i {
                        0..8 => Area::V1,
                        8..12 => Area::V4,
                        _ => Area::IT,
                    },
                    channels: i * 64..(i + 1) * 64,
                })
                .collect(),
        }
    }

    /// Any positive `pixels_per_degree` gives a table (it once drew eccentricities from
    /// an empty range above ~64 px/° at 96 px), every centre inside the image.
    #[test]
    fn synthetic_tables_fit_any_field_of_view() {
        for ppd in [0.5, 12.0, 64.0, 100.0, 1000.0] {
            let table = RfTable::synthetic(sixteen_arrays(96, ppd), 3);
            let half = 96.0 / ppd / 2.0;
            assert_eq!(table.entries.len(), 1024, "{ppd} px/deg");
            for e in &table.entries {
                assert!(
                    e.x_deg.abs() <= half && e.y_deg.abs() <= half,
                    "{ppd}: {e:?}"
                );
                assert!(e.size_deg > 0.0);
            }
        }
    }

    /// The table reads as CSV: comments, an optional header, quoted fields and spaces;
    /// a bad row is named by its line and what is wrong in it.
    #[test]
    fn rf_tables_read_as_csv_and_bad_rows_name_their_line() {
        let path = Path::new("rf.csv");
        let text =
            "# fitted on day 1\nelectrode,x_deg,y_deg,size_deg\n2, -1.5,\"0.25\", 0.5\n1,0,0,1\n";
        let table = RfTable::parse(text, path).unwrap();
        assert_eq!(
            table.entries,
            vec![
                RfEntry {
                    channel: 0,
                    x_deg: 0.0,
                    y_deg: 0.0,
                    size_deg: 1.0
                },
                RfEntry {
                    channel: 1,
                    x_deg: -1.5,
                    y_deg: 0.25,
                    size_deg: 0.5
                },
            ]
        );
        assert_eq!(RfTable::parse("1,0,0,1\n", path).unwrap().entries.len(), 1);
        for (text, says) in [
            (
                "electrode,x_deg,y_deg,size_deg\n1,0,0,1\n2,abc,0,1\n",
                "rf.csv:3: x_deg \"abc\" is not a number",
            ),
            (
                "1,0,0,1\n# note\n0,0,0,1\n",
                "rf.csv:3: electrode numbers are 1-based",
            ),
            (
                "x,0,0,1\n",
                "rf.csv:1: electrode \"x\" is not a positive integer",
            ),
            ("1,0,0\n", "rf.csv:1: 3 fields"),
            ("1,0,0,1\n1,0,0,2\n", "rf.csv:2: electrode 1 listed twice"),
            ("1,0,0,-1\n", "rf.csv:1: size_deg must be > 0"),
            ("1,inf,0,1\n", "rf.csv:1: x_deg inf is not a finite number"),
        ] {
            let e = RfTable::parse(text, path).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
