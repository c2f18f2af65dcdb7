//! Rig configuration (`firmware-config/*.toml`).
//!
//! Parsed in two steps: serde reads the raw TOML into [`raw`] structs, then
//! [`RigConfig::from_toml_str`] checks every invariant once and builds the typed
//! config the rest of the crate uses. Every error names the file, the line and column
//! of the key (from the spans of toml's own parser), the key and what to fix.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::decoder::arch::DEFAULT_LEVELS;
use crate::decoder::{DecoderConfig, DecoderKind, ElectrodeSpec};
use crate::realtime::RealtimeConfig;
use crate::rf::{ArrayChannels, RfError, RfLayout, RfTable};
use crate::units::{Area, Millis, Window};

/// A configuration problem, located as precisely as the text allows.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line of the key (or of the value or table toml found wrong).
    pub line: Option<usize>,
    /// 1-based column (in characters) on that line.
    pub column: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// How to find one LSL stream. Every given field must match.
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSelector {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub stream_type: Option<String>,
    pub source_id: Option<String>,
    /// A raw XPath predicate (from `--mua-query` / `--marker-query`); overrides the fields.
    #[serde(skip)]
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

/// How `run --input broadband` makes MUA from the raw stream: TVSD's extraction as
/// causal Butterworth filters (see [`crate::ingest::broadband`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BroadbandConfig {
    /// `[streams.broadband]`: the raw stream's selector, when the rig has one.
    pub selector: Option<StreamSelector>,
    /// The raw stream's rate; a whole multiple of the MUA rate (the decimation).
    pub sampling_rate_hz: f64,
    /// Band-pass edges, Hz.
    pub band_hz: [f64; 2],
    /// Butterworth order of the band-pass (scipy's `N`: 2N poles).
    pub band_order: usize,
    /// Low-pass cut-off after rectification, Hz; below half the MUA rate.
    pub lowpass_hz: f64,
    pub lowpass_order: usize,
    /// Stamp each MUA sample earlier by the low-pass's group delay, so the latency
    /// windows see the envelope where zero-phase offline filtering would put it.
    pub compensate_delay: bool,
}

impl BroadbandConfig {
    /// How many raw samples make one MUA sample at `mua_hz`, if the raw rate is a whole
    /// multiple of it.
    pub fn decimation(&self, mua_hz: f64) -> Option<usize> {
        let ratio = self.sampling_rate_hz / mua_hz;
        let whole = ratio.round();
        (ratio.is_finite() && whole >= 1.0 && (ratio - whole).abs() < 1e-9 * ratio)
            .then_some(whole as usize)
    }
}

impl Default for BroadbandConfig {
    /// TVSD's bands (500–9000 Hz, 200 Hz) at 30 kHz; the orders are ours.
    fn default() -> Self {
        BroadbandConfig {
            selector: None,
            sampling_rate_hz: 30_000.0,
            band_hz: [500.0, 9000.0],
            band_order: 2,
            lowpass_hz: 200.0,
            lowpass_order: 4,
            compensate_delay: true,
        }
    }
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
    pub broadband: BroadbandConfig,
    /// `[realtime]`: scheduling and memory locking for `run` ([`crate::realtime`]).
    pub realtime: RealtimeConfig,
}

impl RigConfig {
    /// The label of channel `channel` (0-based) in the streams and files monkeysee
    /// writes: `e0001`, `e0002`, …
    pub fn channel_label(&self, channel: usize) -> String {
        format!("e{:04}", channel + 1)
    }

    /// Reads and validates a rig config file.
    pub fn load(path: &Path) -> Result<RigConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| unreadable(path, &e))?;
        RigConfig::from_toml_str(&text, path)
    }

    /// Like [`RigConfig::load`] but does not read the RF table (to generate one).
    pub fn load_without_rf_table(path: &Path) -> Result<RigConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| unreadable(path, &e))?;
        Self::parse(&text, path, false)
    }

    /// Parses and validates TOML text; `path` names the file in errors and anchors
    /// relative paths (the RF table).
    pub fn from_toml_str(text: &str, path: &Path) -> Result<RigConfig, ConfigError> {
        Self::parse(text, path, true)
    }

    fn parse(text: &str, path: &Path, read_rf_table: bool) -> Result<RigConfig, ConfigError> {
        let keys = Keys::parse(text);
        let raw = parse_raw(text, path, &keys)?;
        let validator = Validator {
            keys,
            path,
            read_rf_table,
        };
        validator.validate(raw)
    }

    /// Live arrays in order (the decoder's array channels).
    pub fn live_arrays(&self) -> impl Iterator<Item = &ArrayConfig> {
        self.arrays.iter().filter(|a| !a.dead)
    }

    pub fn n_live_arrays(&self) -> usize {
        self.live_arrays().count()
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

/// Most samples per channel the window stage may be asked to keep (`history_ms` × the
/// rate): 1000 s at 1 kHz, far above what any window set needs, and low enough that
/// sizing its buffers cannot overflow.
const MAX_HISTORY_SAMPLES: f64 = 1e6;

/// Longest status line period, in seconds.
const MAX_STATUS_EVERY_S: f64 = 3600.0;

/// Most channels a rig's MUA stream may have (as many as an XDF stream header may declare).
const MAX_CHANNELS: usize = 1 << 20;

/// The rig's image geometry and arrays, as [`RfTable::synthetic`] draws a table for them.
impl From<&RigConfig> for RfLayout {
    fn from(rig: &RigConfig) -> RfLayout {
        RfLayout {
            image_size: rig.image_size,
            pixels_per_degree: rig.rf.pixels_per_degree,
            arrays: rig
                .arrays
                .iter()
                .map(|a| ArrayChannels {
                    area: a.area,
                    channels: a.channels.clone(),
                })
                .collect(),
        }
    }
}

/// True for a finite number above zero (NaN is not positive).
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

fn unreadable(path: &Path, e: &std::io::Error) -> ConfigError {
    ConfigError {
        file: path.to_path_buf(),
        line: None,
        column: None,
        key: "(file)".into(),
        message: format!("cannot read the rig config: {e}"),
    }
}

/// serde's pass over the text. toml's error carries the span of what it found wrong (a
/// value of the wrong type, an unknown key, a table missing a key, a syntax error): the
/// key is the one whose key or value holds that span.
fn parse_raw(text: &str, path: &Path, keys: &Keys) -> Result<raw::Rig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| s.start);
        let key = at.and_then(|offset| keys.path_at(offset));
        let (line, column) = at.map(|offset| keys.line_column(offset)).unzip();
        ConfigError {
            file: path.to_path_buf(),
            line,
            column,
            key: key.unwrap_or("(syntax)").to_string(),
            message: e.message().trim_end().to_string(),
        }
    })
}

/// Every key of the rig's TOML by its dotted path (`rig.channels`, `arrays[8].area`), with
/// the byte spans of the key and of its value as toml's own parser found them.
struct Keys {
    entries: Vec<KeySpan>,
    /// Byte offset of each line's first character.
    line_starts: Vec<usize>,
    text: String,
}

struct KeySpan {
    path: String,
    key: Range<usize>,
    value: Range<usize>,
}

impl Keys {
    /// The keys of `text`, as far as toml's parser recovers them from a syntax error.
    fn parse(text: &str) -> Keys {
        let mut entries = Vec::new();
        let (root, _) = toml::de::DeTable::parse_recoverable(text);
        collect_keys(root.get_ref(), "", &mut entries);
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Keys {
            entries,
            line_starts,
            text: text.to_string(),
        }
    }

    /// The path of the innermost key whose key or value holds byte `offset`; else (a
    /// value toml could not read) the last key on that line before it.
    fn path_at(&self, offset: usize) -> Option<&str> {
        let holding = self
            .entries
            .iter()
            .filter(|e| e.key.contains(&offset) || e.value.contains(&offset))
            .min_by_key(|e| {
                if e.key.contains(&offset) {
                    e.key.len()
                } else {
                    e.value.len()
                }
            });
        let line_start = self.line_starts[self.line_column(offset).0 - 1];
        holding
            .or_else(|| {
                self.entries
                    .iter()
                    .filter(|e| (line_start..=offset).contains(&e.key.start))
                    .max_by_key(|e| e.key.start)
            })
            .map(|e| e.path.as_str())
    }

    /// Where `path` is written (its key), else the nearest table above it that is.
    fn locate(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(e) = self.entries.iter().find(|e| e.path == path) {
                return Some(e.key.start);
            }
            path = &path[..path.rfind(['.', '['])?];
        }
    }

    /// 1-based line and column (in characters) of byte `offset`.
    fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(1, |t| t.chars().count() + 1);
        (line, column)
    }
}

fn collect_keys(table: &toml::de::DeTable<'_>, prefix: &str, out: &mut Vec<KeySpan>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        out.push(KeySpan {
            path: path.clone(),
            key: key.span(),
            value: value.span(),
        });
        match value.get_ref() {
            toml::de::DeValue::Table(t) => collect_keys(t, &path, out),
            toml::de::DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{path}[{i}]");
                    out.push(KeySpan {
                        path: path.clone(),
                        key: item.span(),
                        value: item.span(),
                    });
                    if let toml::de::DeValue::Table(t) = item.get_ref() {
                        collect_keys(t, &path, out);
                    }
                }
            }
            _ => {}
        }
    }
}

struct Validator<'a> {
    keys: Keys,
    path: &'a Path,
    read_rf_table: bool,
}

impl Validator<'_> {
    /// An error about `key` (`arrays[3].area`), located where the file writes it.
    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.err_at(key, key, message)
    }

    /// `Ok` when `ok`, else the error about `key`.
    fn ensure(&self, ok: bool, key: &str, message: impl Into<String>) -> Result<(), ConfigError> {
        if ok {
            Ok(())
        } else {
            Err(self.err(key, message))
        }
    }

    /// An error about `key` located at the key `at` (or the nearest table above it the
    /// file has): where a default is in force, the section that asked for it.
    fn err_at(&self, key: &str, at: &str, message: impl Into<String>) -> ConfigError {
        let (line, column) = self
            .keys
            .locate(at)
            .map(|offset| self.keys.line_column(offset))
            .unzip();
        ConfigError {
            file: self.path.to_path_buf(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn window(&self, key: &str, [start, end]: [f64; 2]) -> Result<Window, ConfigError> {
        self.ensure(
            start.is_finite() && end.is_finite() && end > start,
            key,
            format!("a window is [start, end) in ms with end > start; got [{start}, {end}]"),
        )?;
        Ok(Window::new(start, end - start))
    }

    /// Checks every section in file order and builds the typed config; the first
    /// problem found is the error.
    fn validate(&self, raw: raw::Rig) -> Result<RigConfig, ConfigError> {
        let r = &raw.rig;
        self.rig_section(r)?;
        let arrays = self.arrays(&raw.arrays, r.channels)?;
        let electrodes = self.electrodes(&arrays)?;
        let mua = self.selector(raw.streams.mua, "mua")?;
        let markers = self.selector(raw.streams.markers, "markers")?;
        let windows = self.windows(&raw.windows)?;
        let history = self.history(&raw.windows, &windows, r.sampling_rate_hz)?;
        let d = &raw.decoder;
        self.decoder(d)?;
        let rf =
            self.receptive_fields(&raw.receptive_fields, r.channels, raw.decoder.image_size)?;
        let display = self.display(&raw.display)?;
        let normalisation = self.normalisation(&raw.normalisation)?;
        let broadband =
            self.broadband(raw.streams.broadband, &raw.broadband, r.sampling_rate_hz)?;
        self.realtime(&raw.realtime)?;
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
            rf,
            display,
            normalisation,
            broadband,
            realtime: raw.realtime,
        })
    }

    /// `[rig]`: the stream's rate and channel count.
    fn rig_section(&self, r: &raw::RigSection) -> Result<(), ConfigError> {
        self.ensure(
            positive(r.sampling_rate_hz),
            "rig.sampling_rate_hz",
            "must be a positive number of samples per second (e.g. 1000)",
        )?;
        self.ensure(
            (1..=MAX_CHANNELS).contains(&r.channels),
            "rig.channels",
            format!("must be the number of channels in the MUA stream (1 to {MAX_CHANNELS})"),
        )
    }

    /// `[[arrays]]`: known areas, channel ranges inside the stream that no two arrays
    /// share, unique ids.
    fn arrays(&self, raw: &[raw::Array], channels: usize) -> Result<Vec<ArrayConfig>, ConfigError> {
        self.ensure(
            !raw.is_empty(),
            "arrays",
            "no [[arrays]] entries: list every array with its id, area and channel range",
        )?;
        let mut arrays = Vec::with_capacity(raw.len());
        let mut owner: Vec<Option<u32>> = vec![None; channels];
        for (i, a) in raw.iter().enumerate() {
            let area = Area::parse(&a.area).ok_or_else(|| {
                self.err(
                    &format!("arrays[{i}].area"),
                    format!("unknown area {:?}; use \"V1\", \"V4\" or \"IT\"", a.area),
                )
            })?;
            let [first, last] = a.channels;
            self.ensure(
                first >= 1 && first <= last && last <= channels,
                &format!("arrays[{i}].channels"),
                format!("channel range [{first}, {last}] must be 1-based, inclusive, with first <= last <= rig.channels ({channels})"),
            )?;
            for (c, slot) in owner.iter_mut().enumerate().take(last).skip(first - 1) {
                if let Some(other) = *slot {
                    return Err(self.err(
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
            self.ensure(
                arrays.iter().all(|x: &ArrayConfig| x.id != a.id),
                &format!("arrays[{i}].id"),
                format!("array id {} appears twice", a.id),
            )?;
            arrays.push(ArrayConfig {
                id: a.id,
                area,
                channels: first - 1..last,
                dead: a.dead,
            });
        }
        Ok(arrays)
    }

    /// The live electrodes in channel order; every area needs at least one.
    fn electrodes(&self, arrays: &[ArrayConfig]) -> Result<Vec<Electrode>, ConfigError> {
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
        self.ensure(
            !electrodes.is_empty(),
            "arrays",
            "every array is marked dead: nothing to decode",
        )?;
        for area in Area::ALL {
            self.ensure(
                electrodes.iter().any(|e| e.area == area),
                "arrays",
                format!("no live array in {area}: the decoders need V1, V4 and IT"),
            )?;
        }
        Ok(electrodes)
    }

    /// `[streams.<which>]`: a selector that names at least one field.
    fn selector(&self, s: StreamSelector, which: &str) -> Result<StreamSelector, ConfigError> {
        self.ensure(
            s.name.is_some() || s.stream_type.is_some() || s.source_id.is_some(),
            &format!("streams.{which}"),
            "give at least one of name, type, source_id (a stream is never picked as 'the first one seen')",
        )?;
        Ok(s)
    }

    /// `[windows]`: the latency windows, each finite, non-empty and starting at or
    /// after onset; the baseline ending at or before it.
    fn windows(&self, w: &raw::Windows) -> Result<WindowConfig, ConfigError> {
        let tw15 = [
            self.window("windows.tw15_v1", w.tw15_v1)?,
            self.window("windows.tw15_v4", w.tw15_v4)?,
            self.window("windows.tw15_it", w.tw15_it)?,
        ];
        self.ensure(
            !w.tw3_starts.is_empty(),
            "windows.tw3_starts",
            "needs at least one window start",
        )?;
        let finite = [
            ("windows.tw3_offset_v1", w.tw3_offset_v1),
            ("windows.tw3_offset_v4", w.tw3_offset_v4),
            ("windows.tw3_offset_it", w.tw3_offset_it),
        ]
        .into_iter()
        .chain(w.tw3_starts.iter().map(|&s| ("windows.tw3_starts", s)));
        for (key, v) in finite {
            self.ensure(
                v.is_finite(),
                key,
                format!("{v} is not a finite number of ms"),
            )?;
        }
        self.ensure(
            positive(w.tw3_length_ms),
            "windows.tw3_length_ms",
            "must be > 0",
        )?;
        let baseline = self.window("windows.baseline", w.baseline)?;
        self.ensure(
            baseline.end().0 <= 0.0,
            "windows.baseline",
            "the baseline must end at or before onset (0 ms)",
        )?;
        self.ensure(
            positive(w.sliding_hop_ms),
            "windows.sliding_hop_ms",
            "must be > 0",
        )?;
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
                self.ensure(
                    windows
                        .windows_for(set, area)
                        .iter()
                        .all(|w| w.start.0 >= 0.0),
                    "windows",
                    format!("{area} has a window starting before onset"),
                )?;
            }
        }
        Ok(windows)
    }

    /// `windows.history_ms`: enough to hold the baseline and every window plus 50 ms of
    /// slack, and no more samples per channel than [`MAX_HISTORY_SAMPLES`].
    fn history(
        &self,
        w: &raw::Windows,
        windows: &WindowConfig,
        sampling_rate_hz: f64,
    ) -> Result<Millis, ConfigError> {
        let needed = windows
            .span_end(WindowSetKind::Tw15)
            .0
            .max(windows.span_end(WindowSetKind::Tw3).0)
            - windows.baseline.start.0;
        let history = Millis(w.history_ms.unwrap_or(1000.0));
        let key = "windows.history_ms";
        let ms = history.0;
        self.ensure(
            ms.is_finite(),
            key,
            format!("{ms} is not a finite number of ms"),
        )?;
        self.ensure(
            ms >= needed + 50.0,
            key,
            format!("{ms} ms of history cannot hold baseline + windows ({needed} ms) plus 50 ms of slack"),
        )?;
        let samples = history.seconds() * sampling_rate_hz;
        self.ensure(
            samples <= MAX_HISTORY_SAMPLES,
            key,
            format!("{ms} ms at {sampling_rate_hz} Hz is {samples:.0} samples per channel, more than the {MAX_HISTORY_SAMPLES:.0} the window stage keeps; a few hundred ms past the last window is enough"),
        )?;
        Ok(history)
    }

    /// `[decoder]`: an image side the U-Net can halve five times, a positive budget.
    fn decoder(&self, d: &raw::Decoder) -> Result<(), ConfigError> {
        let (size, max_size) = (d.image_size, crate::decoder::MAX_IMAGE_SIZE);
        self.ensure(
            (1..=max_size).contains(&size) && size.is_multiple_of(32),
            "decoder.image_size",
            format!("{size} is not a multiple of 32 (the U-Net halves it five times) between 32 and {max_size}"),
        )?;
        self.ensure(
            positive(d.latency_budget_ms),
            "decoder.latency_budget_ms",
            "must be > 0",
        )
    }

    /// `[receptive_fields]`: the scale, and the RF table (read when asked to) whose
    /// electrodes must all be stream channels.
    fn receptive_fields(
        &self,
        rf: &raw::ReceptiveFields,
        channels: usize,
        image_size: usize,
    ) -> Result<RfConfig, ConfigError> {
        self.ensure(
            positive(rf.pixels_per_degree),
            "receptive_fields.pixels_per_degree",
            "must be > 0",
        )?;
        let (table, table_path) = match &rf.table {
            None => (None, None),
            Some(_) if !self.read_rf_table => (None, None),
            Some(rel) => {
                let p = self.path.parent().unwrap_or(Path::new(".")).join(rel);
                let table = RfTable::load(&p).map_err(|e| match e {
                    RfError::Io(..) => self.err(
                        "receptive_fields.table",
                        format!("{e}; the path is relative to this config file"),
                    ),
                    other => self.err("receptive_fields.table", other.to_string()),
                })?;
                if let Some(bad) = table.entries.iter().find(|en| en.channel >= channels) {
                    return Err(self.err(
                        "receptive_fields.table",
                        format!(
                            "{} lists electrode {} but the rig has {} channels",
                            p.display(),
                            bad.channel + 1,
                            channels
                        ),
                    ));
                }
                let ppd = rf.pixels_per_degree;
                if let Some(bad) = table.entries.iter().find(|en| {
                    let px = RfTable::to_pixels(en, image_size, ppd);
                    px.iter().any(|v| !v.is_finite())
                }) {
                    return Err(self.err(
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
        Ok(RfConfig {
            table,
            table_path,
            pixels_per_degree: rf.pixels_per_degree,
        })
    }

    /// `[display]`: the upscaling and the status line period.
    fn display(&self, disp: &raw::Display) -> Result<DisplayConfig, ConfigError> {
        self.ensure(
            (1..=16).contains(&disp.scale),
            "display.scale",
            "must be between 1 and 16",
        )?;
        let every = disp.status_every_s;
        self.ensure(
            positive(every) && every <= MAX_STATUS_EVERY_S,
            "display.status_every_s",
            format!("{every} is not a number of seconds above 0 and at most {MAX_STATUS_EVERY_S}"),
        )?;
        Ok(DisplayConfig {
            scale: disp.scale,
            status_every: Millis(disp.status_every_s * 1000.0),
        })
    }

    /// `[realtime]`: priorities SCHED_FIFO accepts (1–99); serde read the rest.
    fn realtime(&self, r: &RealtimeConfig) -> Result<(), ConfigError> {
        let priorities = [
            ("ingest", r.ingest_priority),
            ("window", r.window_priority),
            ("decode", r.decode_priority),
            ("display", r.display_priority),
        ];
        for (thread, v) in priorities {
            self.ensure(
                (1..=99).contains(&v),
                &format!("realtime.{thread}_priority"),
                format!("{v} is not a SCHED_FIFO priority: use 1 (lowest) to 99"),
            )?;
        }
        Ok(())
    }

    /// `[streams.broadband]` and `[broadband]`: a selector when given; a rate that is a
    /// whole multiple of the MUA rate, a band inside its Nyquist range, a low-pass
    /// below half the MUA rate (the decimation must not alias), orders 1 to 8.
    fn broadband(
        &self,
        selector: Option<StreamSelector>,
        section: &Option<raw::Broadband>,
        mua_hz: f64,
    ) -> Result<BroadbandConfig, ConfigError> {
        let selector = selector
            .map(|s| self.selector(s, "broadband"))
            .transpose()?;
        let d = BroadbandConfig::default();
        let given = section.is_some();
        let none = raw::Broadband::default();
        let b = section.as_ref().unwrap_or(&none);
        // Where a bad value comes from: the [broadband] section, or (defaults in use)
        // the selector that will use them.
        let at = |key: &'static str| if given { key } else { "streams.broadband" };
        let cfg = BroadbandConfig {
            selector,
            sampling_rate_hz: b.sampling_rate_hz.unwrap_or(d.sampling_rate_hz),
            band_hz: b.band_hz.unwrap_or(d.band_hz),
            band_order: b.band_order.unwrap_or(d.band_order),
            lowpass_hz: b.lowpass_hz.unwrap_or(d.lowpass_hz),
            lowpass_order: b.lowpass_order.unwrap_or(d.lowpass_order),
            compensate_delay: b.compensate_delay.unwrap_or(d.compensate_delay),
        };
        // No raw stream and no settings: nothing here will run, whatever the MUA rate.
        if !given && cfg.selector.is_none() {
            return Ok(cfg);
        }
        if let Some(f) = b
            .filter
            .as_deref()
            .filter(|f| !f.eq_ignore_ascii_case("butterworth"))
        {
            return Err(self.err_at(
                "broadband.filter",
                at("broadband.filter"),
                format!("unknown filter {f:?}: only \"butterworth\" is implemented"),
            ));
        }
        let rate = cfg.sampling_rate_hz;
        if !positive(rate) || cfg.decimation(mua_hz).is_none() {
            return Err(self.err_at(
                "broadband.sampling_rate_hz",
                at("broadband.sampling_rate_hz"),
                format!("{rate} Hz must be a whole multiple of rig.sampling_rate_hz ({mua_hz} Hz), e.g. 30000"),
            ));
        }
        let [lo, hi] = cfg.band_hz;
        if !(positive(lo) && lo < hi && hi < rate / 2.0) {
            return Err(self.err_at(
                "broadband.band_hz",
                at("broadband.band_hz"),
                format!("[{lo}, {hi}] must be [low, high] Hz with 0 < low < high < half the broadband rate ({})", rate / 2.0),
            ));
        }
        if !(positive(cfg.lowpass_hz) && cfg.lowpass_hz < mua_hz / 2.0) {
            return Err(self.err_at(
                "broadband.lowpass_hz",
                at("broadband.lowpass_hz"),
                format!("{} Hz must be above 0 and below half the MUA rate ({} Hz), or the downsampling aliases", cfg.lowpass_hz, mua_hz / 2.0),
            ));
        }
        for (key, order) in [
            ("broadband.band_order", cfg.band_order),
            ("broadband.lowpass_order", cfg.lowpass_order),
        ] {
            if !(1..=8).contains(&order) {
                return Err(self.err_at(
                    key,
                    at(key),
                    format!("{order} must be a Butterworth order from 1 to 8"),
                ));
            }
        }
        Ok(cfg)
    }

    /// `[normalisation]`: the prior's weight and the calibration block.
    fn normalisation(&self, norm: &raw::Normalisation) -> Result<NormalisationConfig, ConfigError> {
        self.ensure(
            norm.time_constant_s.is_none(),
            "normalisation.time_constant_s",
            "is no longer used: the statistics are per electrode and window over stimulus presentations; remove it (prior_presentations and calibration_presentations set them)",
        )?;
        self.ensure(
            norm.calibration_presentations != 1,
            "normalisation.calibration_presentations",
            "must be 0 (none) or at least 2: statistics need two presentations",
        )?;
        let prior = norm.prior_presentations;
        self.ensure(
            prior >= 0.0 && prior.is_finite(),
            "normalisation.prior_presentations",
            "must be a number >= 0",
        )?;
        Ok(NormalisationConfig {
            prior_presentations: norm.prior_presentations,
            calibration_presentations: norm.calibration_presentations,
        })
    }
}

/// The TOML as written, before validation.
pub mod raw {
    use serde::Deserialize;

    use super::StreamSelector;

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
        pub broadband: Option<Broadband>,
        #[serde(default)]
        pub realtime: crate::realtime::RealtimeConfig,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Broadband {
        pub sampling_rate_hz: Option<f64>,
        pub band_hz: Option<[f64; 2]>,
        pub band_order: Option<usize>,
        pub lowpass_hz: Option<f64>,
        pub lowpass_order: Option<usize>,
        pub filter: Option<String>,
        pub compensate_delay: Option<bool>,
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
        pub mua: StreamSelector,
        pub markers: StreamSelector,
        pub broadband: Option<StreamSelector>,
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
    #[serde(default, deny_unknown_fields)]
    pub struct Display {
        pub scale: usize,
        pub status_every_s: f64,
    }

    impl Default for Display {
        fn default() -> Self {
            Display {
                scale: 4,
                status_every_s: 2.0,
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Normalisation {
        pub prior_presentations: f64,
        pub calibration_presentations: u64,
        /// Gone: statistics are over presentations now; named in an error.
        pub time_constant_s: Option<f64>,
    }

    impl Default for Normalisation {
        fn default() -> Self {
            Normalisation {
                prior_presentations: 200.0,
                calibration_presentations: 0,
                time_constant_s: None,
            }
        }
    }
}

/// The decoder's view of a rig: electrodes, arrays, RF positions, windows.
pub fn decoder_config(rig: &RigConfig, kind: DecoderKind, width: usize) -> DecoderConfig {
    let set = window_set(kind);
    let table = rig.rf.table.as_ref();
    DecoderConfig {
        kind,
        width,
        levels: DEFAULT_LEVELS.to_vec(),
        image_size: rig.image_size,
        n_arrays: rig.n_live_arrays(),
        windows_per_electrode: rig.windows.windows_per_electrode(set),
        window_names: rig.windows.window_names(set),
        electrodes: rig
            .electrodes
            .iter()
            .map(|e| ElectrodeSpec {
                array: e.array,
                area: e.area.index(),
                rf_px: table
                    .and_then(|t| t.get(e.channel))
                    .map(|rf| RfTable::to_pixels(rf, rig.image_size, rig.rf.pixels_per_degree)),
            })
            .collect(),
        linear_pathway: None,
        channel_per_electrode: false,
        input_scale: 1.0,
    }
}

/// The window set a decoder kind reads.
pub fn window_set(kind: DecoderKind) -> WindowSetKind {
    match kind {
        DecoderKind::Spatiotemporal => WindowSetKind::Tw3,
        _ => WindowSetKind::Tw15,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/synthetic.toml")
    }

    /// The synthetic rig's text with `from` replaced by `to` (which must occur).
    fn load_with(from: &str, to: &str) -> Result<RigConfig, ConfigError> {
        let path = synthetic_path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from:?} is not in {}", path.display());
        RigConfig::from_toml_str(&text.replacen(from, to, 1), &path)
    }

    /// Broadband settings that would alias, not divide, or not filter are refused by
    /// key; a rig that selects a raw stream is checked with the defaults too.
    #[test]
    fn broadband_settings_are_checked() {
        let rig = RigConfig::load(&synthetic_path()).unwrap();
        assert_eq!(rig.broadband.sampling_rate_hz, 30_000.0);
        assert!(
            rig.broadband.selector.is_some(),
            "the shipped rig selects a raw stream"
        );
        for (section, key) in [
            ("sampling_rate_hz = 30500", "broadband.sampling_rate_hz"),
            ("band_hz = [9000, 500]", "broadband.band_hz"),
            ("band_hz = [500, 16000]", "broadband.band_hz"),
            ("lowpass_hz = 600", "broadband.lowpass_hz"),
            ("lowpass_order = 0", "broadband.lowpass_order"),
            ("band_order = 9", "broadband.band_order"),
            ("filter = \"bessel\"", "broadband.filter"),
        ] {
            let e = load_with(
                "[[arrays]]\nid = 1\n",
                &format!("[broadband]\n{section}\n\n[[arrays]]\nid = 1\n"),
            )
            .unwrap_err();
            assert_eq!(e.key, key, "{section}: {e}");
        }
        // A 250 Hz MUA rate with the default 200 Hz low-pass would alias.
        let e = load_with("sampling_rate_hz = 1000.0", "sampling_rate_hz = 250.0").unwrap_err();
        assert_eq!(e.key, "broadband.lowpass_hz", "{e}");
    }

    /// A history the window stage could not size (infinite, or more samples than it
    /// keeps) is refused by name instead of overflowing its buffer size.
    #[test]
    fn unsizeable_histories_are_refused() {
        for history in ["inf", "nan", "1e300", "2000000"] {
            let e = load_with("history_ms = 1000", &format!("history_ms = {history}")).unwrap_err();
            assert_eq!(e.key, "windows.history_ms", "{history}: {e}");
            assert!(e.line.is_some(), "{e}");
        }
        let rig = load_with("history_ms = 1000", "history_ms = 60000").unwrap();
        assert_eq!(rig.history, Millis(60000.0));
    }

    /// A status period `Duration::from_secs_f64` cannot take (negative, NaN, infinite,
    /// huge) is refused instead of panicking in the daemon.
    #[test]
    fn status_periods_must_be_positive_and_bounded() {
        for every in ["0", "-1", "nan", "inf", "1e30"] {
            let e =
                load_with("status_every_s = 2", &format!("status_every_s = {every}")).unwrap_err();
            assert_eq!(e.key, "display.status_every_s", "{every}: {e}");
        }
        let rig = load_with("status_every_s = 2", "status_every_s = 0.5").unwrap();
        assert_eq!(rig.display.status_every, Millis(500.0));
    }

    /// A NaN offset or start would put a TW-3 window nowhere (NaN passes `< 0`).
    #[test]
    fn non_finite_tw3_offsets_and_starts_are_refused() {
        let text = std::fs::read_to_string(synthetic_path()).unwrap();
        let offset = text
            .lines()
            .find(|l| l.starts_with("tw3_offset_v4"))
            .unwrap();
        let e = load_with(offset, "tw3_offset_v4 = nan").unwrap_err();
        assert_eq!(e.key, "windows.tw3_offset_v4", "{e}");
        let starts = text.lines().find(|l| l.starts_with("tw3_starts")).unwrap();
        let e = load_with(starts, "tw3_starts = [0, nan]").unwrap_err();
        assert_eq!(e.key, "windows.tw3_starts", "{e}");
    }

    /// The 1-based line and column where `needle` starts in `text`.
    fn position(text: &str, needle: &str) -> (usize, usize) {
        // A needle that starts a line (`\n[rig]\n`) is located at that line.
        let at = text.find(needle).unwrap() + needle.len() - needle.trim_start_matches('\n').len();
        let line = text[..at].matches('\n').count() + 1;
        let column = at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
        (line, column)
    }

    fn located(e: &ConfigError) -> (Option<usize>, Option<usize>, &str) {
        (e.line, e.column, e.key.as_str())
    }

    /// toml's own errors (a value of the wrong type, an unknown key, a missing one, a
    /// syntax error) are located by the spans of its parser: the innermost key that
    /// holds what it found wrong, and its line and column.
    #[test]
    fn toml_errors_name_the_key_and_its_line_and_column() {
        let text = std::fs::read_to_string(synthetic_path()).unwrap();
        for (from, to, at, key) in [
            (
                "lock_memory = true",
                "lock_memory = \"yes\"",
                "\"yes\"",
                "realtime.lock_memory",
            ),
            (
                "id = 9\narea = \"V4\"",
                "id = 9\narea = 4",
                "4\nchannels = [513",
                "arrays[8].area",
            ),
            (
                "pin_threads = true",
                "pin_cores = true",
                "pin_cores",
                "realtime.pin_cores",
            ),
            (
                "image_size = 96",
                "image_size = 96x",
                "96x",
                "decoder.image_size",
            ),
        ] {
            let changed = text.replacen(from, to, 1);
            let e = load_with(from, to).unwrap_err();
            let (line, column) = position(&changed, at);
            assert_eq!(located(&e), (Some(line), Some(column), key), "{to}: {e}");
            assert!(
                e.to_string()
                    .contains(&format!(":{line}:{column}: `{key}`")),
                "{e}"
            );
        }
        // A missing key: the table that lacks it, the key named in toml's message.
        let e = load_with("channels = 1024\n", "").unwrap_err();
        let (line, column) = position(&text, "\n[rig]\n");
        assert_eq!(located(&e), (Some(line), Some(column), "rig"), "{e}");
        assert!(e.message.contains("missing field `channels`"), "{e}");
    }

    /// A value that parses but breaks an invariant is located at its own key, in the
    /// right one of several `[[arrays]]`; a default in force is located at the section
    /// that asked for it.
    #[test]
    fn invariant_errors_are_located_at_their_key() {
        let text = std::fs::read_to_string(synthetic_path()).unwrap();
        let from = "channels = [961, 1024]";
        let e = load_with(from, "channels = [961, 1030]").unwrap_err();
        assert_eq!(
            located(&e),
            (
                Some(position(&text, from).0),
                Some(1),
                "arrays[15].channels"
            ),
            "{e}"
        );
        // The shipped rig selects a raw stream and has no [broadband]: at 250 Hz the
        // default low-pass aliases, and [streams.broadband] is where it was asked for.
        let e = load_with("sampling_rate_hz = 1000.0", "sampling_rate_hz = 250.0").unwrap_err();
        let (line, _) = position(&text, "\n[streams.broadband]\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(line), "broadband.lowpass_hz"),
            "{e}"
        );
    }

    /// The rig converts into the layout a synthetic RF table is drawn for, one RF per
    /// stream channel.
    #[test]
    fn a_rig_draws_a_synthetic_rf_table() {
        let rig = RigConfig::load_without_rf_table(&synthetic_path()).unwrap();
        let layout = RfLayout::from(&rig);
        assert_eq!(layout.arrays.len(), rig.arrays.len());
        let table = RfTable::synthetic(&rig, 7);
        assert_eq!(table.entries.len(), rig.channel_count);
        assert_eq!(table, RfTable::synthetic(layout, 7));
    }
}
