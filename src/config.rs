//! Rig configuration (`firmware-config/*.toml`).
//!
//! Parsed in two steps: serde reads the raw TOML into [`raw`] structs, then
//! [`RigConfig::from_toml_str`] checks every invariant once and builds the typed
//! config the rest of the crate uses. Every error names the file, the line (when
//! the key can be found in the text), the key and what to fix.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::rf::{RfError, RfTable};
use crate::units::{Area, Millis, Window};

/// A configuration problem, located as precisely as the text allows.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "{}:{}: `{}`: {}",
                self.file.display(),
                line,
                self.key,
                self.message
            ),
            None => write!(
                f,
                "{}: `{}`: {}",
                self.file.display(),
                self.key,
                self.message
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// How to find one LSL stream. Every given field must match.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamSelector {
    pub name: Option<String>,
    pub stream_type: Option<String>,
    pub source_id: Option<String>,
    /// A raw XPath predicate (from `--mua-query` / `--marker-query`); overrides the fields.
    pub query: Option<String>,
}

impl StreamSelector {
    /// The LSL XPath 1.0 predicate for `lsl_resolve_bypred`.
    pub fn predicate(&self) -> String {
        if let Some(q) = &self.query {
            return q.clone();
        }
        let mut parts = Vec::new();
        if let Some(n) = &self.name {
            parts.push(format!("name='{n}'"));
        }
        if let Some(t) = &self.stream_type {
            parts.push(format!("type='{t}'"));
        }
        if let Some(s) = &self.source_id {
            parts.push(format!("source_id='{s}'"));
        }
        parts.join(" and ")
    }

    /// Why this selector could match a stream it was not meant for, if it could: LSL has
    /// no authentication, and any host on the network can publish a stream with a given
    /// name and type. `None` when it names a `source_id` (or is a query that does).
    pub fn weakness(&self) -> Option<String> {
        let predicate = self.predicate();
        if predicate.contains("source_id") {
            return None;
        }
        Some(format!(
            "the selector {predicate} names no source_id: any host on the network that publishes a stream with that name and type would match it; add the device's source_id to the rig's [streams] section"
        ))
    }
}

/// One Utah array.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayConfig {
    pub id: u32,
    pub area: Area,
    /// Zero-based channel indices into the MUA stream, half-open.
    pub channels: std::ops::Range<usize>,
    pub dead: bool,
}

/// One live electrode: a stream channel on a live array.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Electrode {
    /// Zero-based channel index in the MUA stream.
    pub channel: usize,
    /// Index of its array among the live arrays (0..n_live_arrays).
    pub array: usize,
    pub area: Area,
}

/// Which latency-window set a decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowSetKind {
    /// TW-15: one window per area (spatial, end-to-end and baseline models).
    Tw15,
    /// TW-3: five 27 ms windows per area (spatiotemporal model).
    Tw3,
}

impl WindowSetKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tw15" | "tw-15" => Some(Self::Tw15),
            "tw3" | "tw-3" => Some(Self::Tw3),
            _ => None,
        }
    }
}

/// The latency windows of DESIGN §2.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowConfig {
    /// TW-15 window per area, indexed by [`Area::index`].
    pub tw15: [Window; 3],
    /// TW-3 area offsets (ms after onset), indexed by [`Area::index`].
    pub tw3_offsets: [Millis; 3],
    /// TW-3 window starts relative to the area offset.
    pub tw3_starts: Vec<Millis>,
    pub tw3_len: Millis,
    /// Pre-stimulus baseline window (kept for occlusion analyses).
    pub baseline: Window,
    /// Hop between frames in sliding mode.
    pub sliding_hop: Millis,
}

impl WindowConfig {
    /// The windows an electrode of `area` contributes, in feature order.
    pub fn windows_for(&self, set: WindowSetKind, area: Area) -> Vec<Window> {
        match set {
            WindowSetKind::Tw15 => vec![self.tw15[area.index()]],
            WindowSetKind::Tw3 => self
                .tw3_starts
                .iter()
                .map(|s| Window {
                    start: Millis(self.tw3_offsets[area.index()].0 + s.0),
                    len: self.tw3_len,
                })
                .collect(),
        }
    }

    pub fn windows_per_electrode(&self, set: WindowSetKind) -> usize {
        match set {
            WindowSetKind::Tw15 => 1,
            WindowSetKind::Tw3 => self.tw3_starts.len(),
        }
    }

    /// Latest window end of a set: a frame is complete once data up to here arrived.
    pub fn span_end(&self, set: WindowSetKind) -> Millis {
        let end = Area::ALL
            .iter()
            .flat_map(|&a| self.windows_for(set, a))
            .map(|w| w.end().0)
            .fold(f64::MIN, f64::max);
        Millis(end)
    }

    /// Human-readable names of the windows, per area, in feature order (used to
    /// check that a model was trained on the same windows as the rig uses).
    pub fn window_names(&self, set: WindowSetKind) -> Vec<String> {
        Area::ALL
            .iter()
            .flat_map(|&a| {
                self.windows_for(set, a)
                    .into_iter()
                    .map(move |w| format!("{a} {w}"))
            })
            .collect()
    }
}

/// Receptive-field settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RfConfig {
    pub table: Option<RfTable>,
    pub table_path: Option<PathBuf>,
    /// Image pixels per degree of visual angle; the image centre is the fixation point.
    pub pixels_per_degree: f64,
}

/// Display settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DisplayConfig {
    /// Integer upscaling of the reconstruction in the window.
    pub scale: usize,
    /// Status line period.
    pub status_every: Millis,
}

/// Online normalisation settings (see [`crate::norm`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NormalisationConfig {
    /// Weight of the model's training statistics, in presentations, when the
    /// session's own presentations are pooled with them.
    pub prior_presentations: f64,
    /// When > 0, a calibration block: once this many presentations were seen, the
    /// model's statistics are dropped and the session's own are used.
    pub calibration_presentations: u64,
}

/// A validated rig configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RigConfig {
    pub path: PathBuf,
    pub name: String,
    pub sampling_rate_hz: f64,
    pub channel_count: usize,
    pub arrays: Vec<ArrayConfig>,
    /// The live electrodes (on live arrays), in channel order.
    pub electrodes: Vec<Electrode>,
    pub mua: StreamSelector,
    pub markers: StreamSelector,
    pub windows: WindowConfig,
    /// Samples of history the window stage keeps per channel.
    pub history: Millis,
    pub image_size: usize,
    pub latency_budget: Millis,
    pub rf: RfConfig,
    pub display: DisplayConfig,
    pub normalisation: NormalisationConfig,
}

impl RigConfig {
    /// Reads and validates a rig config file.
    pub fn load(path: &Path) -> Result<RigConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: "(file)".into(),
            message: format!("cannot read the rig config: {e}"),
        })?;
        RigConfig::from_toml_str(&text, path)
    }

    /// Like [`RigConfig::load`] but does not read the RF table (to generate one).
    pub fn load_without_rf_table(path: &Path) -> Result<RigConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: "(file)".into(),
            message: format!("cannot read the rig config: {e}"),
        })?;
        let raw = parse_raw(&text, path)?;
        Validator {
            text: &text,
            path,
            read_rf_table: false,
        }
        .validate(raw)
    }

    /// Parses and validates TOML text; `path` names the file in errors and anchors
    /// relative paths (the RF table).
    pub fn from_toml_str(text: &str, path: &Path) -> Result<RigConfig, ConfigError> {
        let raw = parse_raw(text, path)?;
        Validator {
            text,
            path,
            read_rf_table: true,
        }
        .validate(raw)
    }

    /// Live arrays in order (the decoder's array channels).
    pub fn live_arrays(&self) -> impl Iterator<Item = &ArrayConfig> {
        self.arrays.iter().filter(|a| !a.dead)
    }

    pub fn n_live_arrays(&self) -> usize {
        self.live_arrays().count()
    }

    /// Sampling period in seconds.
    pub fn sample_period(&self) -> f64 {
        1.0 / self.sampling_rate_hz
    }

    /// Live electrodes per area, indexed by [`Area::index`].
    pub fn electrodes_per_area(&self) -> [usize; 3] {
        let mut n = [0; 3];
        for e in &self.electrodes {
            n[e.area.index()] += 1;
        }
        n
    }

    /// The area of every stream channel (dead arrays included), indexed by channel.
    pub fn channel_areas(&self) -> Vec<Option<(Area, u32)>> {
        let mut out = vec![None; self.channel_count];
        for a in &self.arrays {
            for c in a.channels.clone() {
                out[c] = Some((a.area, a.id));
            }
        }
        out
    }
}

/// Most channels a rig's MUA stream may have (as many as an XDF stream header may declare).
const MAX_CHANNELS: usize = 1 << 20;

/// True for a finite number above zero (NaN is not positive).
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

fn parse_raw(text: &str, path: &Path) -> Result<raw::Rig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of_offset(text, s.start));
        ConfigError {
            file: path.to_path_buf(),
            line,
            key: guess_key(e.message()),
            message: e.message().to_string(),
        }
    })
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn guess_key(message: &str) -> String {
    // toml's messages look like "missing field `x`" or "unknown field `x`, expected ...".
    message
        .split('`')
        .nth(1)
        .map(str::to_string)
        .unwrap_or_else(|| "(syntax)".into())
}

/// Finds the line of `key = ...`, optionally inside the `nth` occurrence of a
/// table header such as `[[arrays]]` or `[windows]`.
fn find_key_line(text: &str, table: Option<(&str, usize)>, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0;
    let mut end = lines.len();
    if let Some((header, nth)) = table {
        let mut seen = 0;
        let mut found = None;
        for (i, l) in lines.iter().enumerate() {
            if l.trim() == header {
                if seen == nth {
                    found = Some(i);
                    break;
                }
                seen += 1;
            }
        }
        let h = found?;
        start = h + 1;
        end = lines[start..]
            .iter()
            .position(|l| l.trim_start().starts_with('['))
            .map_or(lines.len(), |p| start + p);
        if key.is_empty() {
            return Some(h + 1);
        }
    }
    for (i, l) in lines[start..end].iter().enumerate() {
        let t = l.trim_start();
        if let Some(rest) = t.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return Some(start + i + 1);
            }
        }
    }
    None
}

struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
    read_rf_table: bool,
}

impl Validator<'_> {
    fn err(
        &self,
        table: Option<(&str, usize)>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        let last = key.rsplit('.').next().unwrap_or(key);
        let last = last.split('[').next().unwrap_or(last);
        ConfigError {
            file: self.path.to_path_buf(),
            line: find_key_line(self.text, table, last),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn window(&self, table: &str, key: &str, v: [f64; 2]) -> Result<Window, ConfigError> {
        if !(v[0].is_finite() && v[1].is_finite()) || v[1] <= v[0] {
            return Err(self.err(
                Some((table, 0)),
                key,
                format!(
                    "a window is [start, end) in ms with end > start; got [{}, {}]",
                    v[0], v[1]
                ),
            ));
        }
        Ok(Window::new(v[0], v[1] - v[0]))
    }

    fn validate(&self, raw: raw::Rig) -> Result<RigConfig, ConfigError> {
        let r = &raw.rig;
        if !(r.sampling_rate_hz.is_finite() && r.sampling_rate_hz > 0.0) {
            return Err(self.err(
                Some(("[rig]", 0)),
                "rig.sampling_rate_hz",
                "must be a positive number of samples per second (e.g. 1000)",
            ));
        }
        if r.channels == 0 || r.channels > MAX_CHANNELS {
            return Err(self.err(
                Some(("[rig]", 0)),
                "rig.channels",
                format!("must be the number of channels in the MUA stream (1 to {MAX_CHANNELS})"),
            ));
        }
        if raw.arrays.is_empty() {
            return Err(self.err(
                None,
                "arrays",
                "no [[arrays]] entries: list every array with its id, area and channel range",
            ));
        }

        let mut arrays = Vec::with_capacity(raw.arrays.len());
        let mut owner: Vec<Option<u32>> = vec![None; r.channels];
        for (i, a) in raw.arrays.iter().enumerate() {
            let here = Some(("[[arrays]]", i));
            let area = Area::parse(&a.area).ok_or_else(|| {
                self.err(
                    here,
                    &format!("arrays[{i}].area"),
                    format!("unknown area {:?}; use \"V1\", \"V4\" or \"IT\"", a.area),
                )
            })?;
            let [first, last] = a.channels;
            if first == 0 || last < first || last > r.channels {
                return Err(self.err(
                    here,
                    &format!("arrays[{i}].channels"),
                    format!(
                        "channel range [{first}, {last}] must be 1-based, inclusive, with first <= last <= rig.channels ({})",
                        r.channels
                    ),
                ));
            }
            for (c, slot) in owner.iter_mut().enumerate().take(last).skip(first - 1) {
                if let Some(other) = *slot {
                    return Err(self.err(
                        here,
                        &format!("arrays[{i}].channels"),
                        format!(
                            "channel {} is claimed by array {} and array {}",
                            c + 1,
                            other,
                            a.id
                        ),
                    ));
                }
                *slot = Some(a.id);
            }
            if arrays.iter().any(|x: &ArrayConfig| x.id == a.id) {
                return Err(self.err(
                    here,
                    &format!("arrays[{i}].id"),
                    format!("array id {} appears twice", a.id),
                ));
            }
            arrays.push(ArrayConfig {
                id: a.id,
                area,
                channels: first - 1..last,
                dead: a.dead,
            });
        }

        let mut electrodes = Vec::new();
        for (live_index, a) in arrays.iter().filter(|a| !a.dead).enumerate() {
            for channel in a.channels.clone() {
                electrodes.push(Electrode {
                    channel,
                    array: live_index,
                    area: a.area,
                });
            }
        }
        electrodes.sort_by_key(|e| e.channel);
        if electrodes.is_empty() {
            return Err(self.err(
                None,
                "arrays",
                "every array is marked dead: nothing to decode",
            ));
        }
        for area in Area::ALL {
            if !electrodes.iter().any(|e| e.area == area) {
                return Err(self.err(
                    None,
                    "arrays",
                    format!("no live array in {area}: the decoders need V1, V4 and IT"),
                ));
            }
        }

        let selector = |s: &raw::Stream, which: &str| -> Result<StreamSelector, ConfigError> {
            let sel = StreamSelector {
                name: s.name.clone(),
                stream_type: s.stream_type.clone(),
                source_id: s.source_id.clone(),
                query: None,
            };
            if sel.name.is_none() && sel.stream_type.is_none() && sel.source_id.is_none() {
                return Err(self.err(
                    Some((&format!("[streams.{which}]"), 0)),
                    &format!("streams.{which}"),
                    "give at least one of name, type, source_id (a stream is never picked as 'the first one seen')",
                ));
            }
            Ok(sel)
        };
        let mua = selector(&raw.streams.mua, "mua")?;
        let markers = selector(&raw.streams.markers, "markers")?;

        let w = &raw.windows;
        let t = "[windows]";
        let tw15 = [
            self.window(t, "windows.tw15_v1", w.tw15_v1)?,
            self.window(t, "windows.tw15_v4", w.tw15_v4)?,
            self.window(t, "windows.tw15_it", w.tw15_it)?,
        ];
        if w.tw3_starts.is_empty() {
            return Err(self.err(
                Some((t, 0)),
                "windows.tw3_starts",
                "needs at least one window start",
            ));
        }
        if !positive(w.tw3_length_ms) {
            return Err(self.err(Some((t, 0)), "windows.tw3_length_ms", "must be > 0"));
        }
        let baseline = self.window(t, "windows.baseline", w.baseline)?;
        if baseline.end().0 > 0.0 {
            return Err(self.err(
                Some((t, 0)),
                "windows.baseline",
                "the baseline must end at or before onset (0 ms)",
            ));
        }
        if !positive(w.sliding_hop_ms) {
            return Err(self.err(Some((t, 0)), "windows.sliding_hop_ms", "must be > 0"));
        }
        let windows = WindowConfig {
            tw15,
            tw3_offsets: [
                Millis(w.tw3_offset_v1),
                Millis(w.tw3_offset_v4),
                Millis(w.tw3_offset_it),
            ],
            tw3_starts: w.tw3_starts.iter().map(|&s| Millis(s)).collect(),
            tw3_len: Millis(w.tw3_length_ms),
            baseline,
            sliding_hop: Millis(w.sliding_hop_ms),
        };
        for set in [WindowSetKind::Tw15, WindowSetKind::Tw3] {
            for area in Area::ALL {
                if windows
                    .windows_for(set, area)
                    .iter()
                    .any(|w| w.start.0 < 0.0)
                {
                    return Err(self.err(
                        Some((t, 0)),
                        "windows",
                        format!("{area} has a window starting before onset"),
                    ));
                }
            }
        }
        let needed = windows
            .span_end(WindowSetKind::Tw15)
            .0
            .max(windows.span_end(WindowSetKind::Tw3).0)
            - baseline.start.0;
        let history = Millis(w.history_ms.unwrap_or(1000.0));
        if history.0 < needed + 50.0 {
            return Err(self.err(
                Some((t, 0)),
                "windows.history_ms",
                format!(
                    "{} ms of history cannot hold baseline + windows ({} ms) plus 50 ms of slack",
                    history.0, needed
                ),
            ));
        }

        let d = &raw.decoder;
        let max_size = crate::decoder::MAX_IMAGE_SIZE;
        if d.image_size == 0 || d.image_size > max_size || !d.image_size.is_multiple_of(32) {
            return Err(self.err(
                Some(("[decoder]", 0)),
                "decoder.image_size",
                format!(
                    "{} is not a multiple of 32 (the U-Net halves it five times) between 32 and {max_size}",
                    d.image_size
                ),
            ));
        }
        if !positive(d.latency_budget_ms) {
            return Err(self.err(
                Some(("[decoder]", 0)),
                "decoder.latency_budget_ms",
                "must be > 0",
            ));
        }

        let rf_raw = &raw.receptive_fields;
        if !positive(rf_raw.pixels_per_degree) {
            return Err(self.err(
                Some(("[receptive_fields]", 0)),
                "receptive_fields.pixels_per_degree",
                "must be > 0",
            ));
        }
        let (table, table_path) = match &rf_raw.table {
            None => (None, None),
            Some(_) if !self.read_rf_table => (None, None),
            Some(rel) => {
                let p = self.path.parent().unwrap_or(Path::new(".")).join(rel);
                let table = RfTable::load(&p).map_err(|e| match e {
                    RfError::Io(..) => self.err(
                        Some(("[receptive_fields]", 0)),
                        "receptive_fields.table",
                        format!("{e}; the path is relative to this config file"),
                    ),
                    other => self.err(
                        Some(("[receptive_fields]", 0)),
                        "receptive_fields.table",
                        other.to_string(),
                    ),
                })?;
                if let Some(bad) = table.entries.iter().find(|en| en.channel >= r.channels) {
                    return Err(self.err(
                        Some(("[receptive_fields]", 0)),
                        "receptive_fields.table",
                        format!(
                            "{} lists electrode {} but the rig has {} channels",
                            p.display(),
                            bad.channel + 1,
                            r.channels
                        ),
                    ));
                }
                let ppd = rf_raw.pixels_per_degree;
                if let Some(bad) = table.entries.iter().find(|en| {
                    let px = RfTable::to_pixels(en, d.image_size, ppd);
                    px.iter().any(|v| !v.is_finite())
                }) {
                    return Err(self.err(
                        Some(("[receptive_fields]", 0)),
                        "receptive_fields.table",
                        format!(
                            "{}: electrode {} at {ppd} pixels per degree lies outside any image (its RF in pixels is not a finite number)",
                            p.display(),
                            bad.channel + 1
                        ),
                    ));
                }
                (Some(table), Some(p))
            }
        };

        let disp = &raw.display;
        if disp.scale == 0 || disp.scale > 16 {
            return Err(self.err(
                Some(("[display]", 0)),
                "display.scale",
                "must be between 1 and 16",
            ));
        }
        let norm = &raw.normalisation;
        if norm.time_constant_s.is_some() {
            return Err(self.err(
                Some(("[normalisation]", 0)),
                "normalisation.time_constant_s",
                "is no longer used: the statistics are per electrode and window over stimulus presentations; remove it (prior_presentations and calibration_presentations set them)",
            ));
        }
        if norm.calibration_presentations == 1 {
            return Err(self.err(
                Some(("[normalisation]", 0)),
                "normalisation.calibration_presentations",
                "must be 0 (none) or at least 2: statistics need two presentations",
            ));
        }
        if !(norm.prior_presentations >= 0.0 && norm.prior_presentations.is_finite()) {
            return Err(self.err(
                Some(("[normalisation]", 0)),
                "normalisation.prior_presentations",
                "must be a number >= 0",
            ));
        }

        Ok(RigConfig {
            path: self.path.to_path_buf(),
            name: r.name.clone(),
            sampling_rate_hz: r.sampling_rate_hz,
            channel_count: r.channels,
            arrays,
            electrodes,
            mua,
            markers,
            windows,
            history,
            image_size: d.image_size,
            latency_budget: Millis(d.latency_budget_ms),
            rf: RfConfig {
                table,
                table_path,
                pixels_per_degree: rf_raw.pixels_per_degree,
            },
            display: DisplayConfig {
                scale: disp.scale,
                status_every: Millis(disp.status_every_s * 1000.0),
            },
            normalisation: NormalisationConfig {
                prior_presentations: norm.prior_presentations,
                calibration_presentations: norm.calibration_presentations,
            },
        })
    }
}

/// The TOML as written, before validation.
pub mod raw {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Rig {
        pub rig: RigSection,
        pub streams: Streams,
        pub arrays: Vec<Array>,
        pub windows: Windows,
        pub decoder: Decoder,
        pub receptive_fields: ReceptiveFields,
        #[serde(default)]
        pub display: Display,
        #[serde(default)]
        pub normalisation: Normalisation,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RigSection {
        pub name: String,
        #[serde(default)]
        pub description: String,
        pub sampling_rate_hz: f64,
        pub channels: usize,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Streams {
        pub mua: Stream,
        pub markers: Stream,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Stream {
        pub name: Option<String>,
        #[serde(rename = "type")]
        pub stream_type: Option<String>,
        pub source_id: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Array {
        pub id: u32,
        pub area: String,
        pub channels: [usize; 2],
        #[serde(default)]
        pub dead: bool,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Windows {
        pub tw15_v1: [f64; 2],
        pub tw15_v4: [f64; 2],
        pub tw15_it: [f64; 2],
        pub tw3_offset_v1: f64,
        pub tw3_offset_v4: f64,
        pub tw3_offset_it: f64,
        pub tw3_starts: Vec<f64>,
        pub tw3_length_ms: f64,
        pub baseline: [f64; 2],
        pub sliding_hop_ms: f64,
        pub history_ms: Option<f64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Decoder {
        pub image_size: usize,
        pub latency_budget_ms: f64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ReceptiveFields {
        pub table: Option<String>,
        pub pixels_per_degree: f64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Display {
        #[serde(default = "default_scale")]
        pub scale: usize,
        #[serde(default = "default_status")]
        pub status_every_s: f64,
    }

    impl Default for Display {
        fn default() -> Self {
            Display {
                scale: default_scale(),
                status_every_s: default_status(),
            }
        }
    }

    fn default_scale() -> usize {
        4
    }
    fn default_status() -> f64 {
        2.0
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Normalisation {
        #[serde(default = "default_prior")]
        pub prior_presentations: f64,
        #[serde(default)]
        pub calibration_presentations: u64,
        /// Gone: statistics are over presentations now; named in an error.
        #[serde(default)]
        pub time_constant_s: Option<f64>,
    }

    impl Default for Normalisation {
        fn default() -> Self {
            Normalisation {
                prior_presentations: default_prior(),
                calibration_presentations: 0,
                time_constant_s: None,
            }
        }
    }

    fn default_prior() -> f64 {
        200.0
    }
}
