//! Small types that carry units and meaning: areas, milliseconds, latency windows.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A visual cortical area recorded by the arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Area {
    V1,
    V4,
    IT,
}

impl Area {
    /// All areas in the order used for channels and feature layouts (V1, V4, IT).
    pub const ALL: [Area; 3] = [Area::V1, Area::V4, Area::IT];

    /// Position in [`Area::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Area::V1 => "V1",
            Area::V4 => "V4",
            Area::IT => "IT",
        }
    }

    /// Parses "V1", "V4" or "IT" (case-insensitive).
    pub fn parse(s: &str) -> Option<Area> {
        Area::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A duration or an offset from stimulus onset, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
pub struct Millis(pub f64);

impl Millis {
    pub fn seconds(self) -> f64 {
        self.0 / 1000.0
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

/// A half-open latency window `[start, start + len)` relative to stimulus onset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub start: Millis,
    pub len: Millis,
}

impl Window {
    pub fn new(start_ms: f64, len_ms: f64) -> Self {
        Window {
            start: Millis(start_ms),
            len: Millis(len_ms),
        }
    }

    pub fn end(self) -> Millis {
        Millis(self.start.0 + self.len.0)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{},{}) ms", self.start.0, self.end().0)
    }
}
