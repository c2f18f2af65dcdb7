//! The synthetic cortex's parameters: a TOML file whose every key is optional (the
//! defaults below, also written out with their meaning in
//! `firmware-config/synthetic-cortex.toml`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::units::Area;

/// The documented default file, embedded so `monkeysee simulate` needs nothing else.
pub const DEFAULT_CORTEX_TOML: &str = include_str!("../../firmware-config/synthetic-cortex.toml");

#[derive(Debug, thiserror::Error)]
pub enum SimConfigError {
    #[error("cannot read simulator config {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Everything the simulator needs besides the rig, the images and the seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    pub design: Design,
    pub leaves: Leaves,
    #[serde(rename = "V1")]
    pub v1: AreaModel,
    #[serde(rename = "V4")]
    pub v4: AreaModel,
    #[serde(rename = "IT")]
    pub it: AreaModel,
    pub broadband: BroadbandModel,
}

/// The raw headstage signal `simulate --broadband` writes beside the MUA, at the rig's
/// `[broadband]` rate: multi-unit spikes whose rate follows each electrode's simulated
/// MUA, Gaussian noise and mains pickup, stored as int16 counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BroadbandModel {
    /// Spikes per second per unit of MUA (the MUA floored at 0): with the default
    /// spontaneous MUA of 1.5–2, 300–400 small spikes/s from the many neurons near a tip
    /// (multi-unit activity is their summed envelope, not one cell's train).
    pub spikes_per_s_per_unit: f64,
    /// Range of a spike's trough depth, µV (uniform).
    pub spike_uv: [f64; 2],
    /// Spike duration, ms: a trough over its first 30 %, then a peak of 40 % of its depth.
    pub spike_ms: f64,
    /// Gaussian noise SD, µV.
    pub noise_uv: f64,
    /// Mains pickup: amplitude (µV, ±50 % between electrodes) and frequency.
    pub line_uv: f64,
    pub line_hz: f64,
    /// µV per int16 count in the file (Blackrock Cerebus headstages: 0.25).
    pub uv_per_count: f64,
}

impl Default for BroadbandModel {
    fn default() -> Self {
        BroadbandModel {
            spikes_per_s_per_unit: 200.0,
            spike_uv: [15.0, 45.0],
            spike_ms: 1.0,
            noise_uv: 8.0,
            line_uv: 20.0,
            line_hz: 50.0,
            uv_per_count: 0.25,
        }
    }
}

/// Trial design (TVSD: 200 ms on, 200 ms off, 4 images per trial).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Design {
    pub on_ms: u32,
    pub off_ms: u32,
    pub images_per_trial: u32,
    /// Blank (fixation) before each trial's first image.
    pub inter_trial_ms: u32,
    /// Blank recording before the first trial and after the last.
    pub lead_in_ms: u32,
    /// Recording days the session spans (TVSD: 4), back to back in one file, each an
    /// equal share of the trials. With more than one, every day has its own drift: each
    /// electrode's gain (its spontaneous level and responses) is multiplied by
    /// `exp(day_gain_sd · z)` and its baseline shifted by `day_baseline_sd · z` times its
    /// spontaneous level (z standard normal, per electrode and day), as electrode
    /// impedances and the headstage change between sessions. One day: no drift.
    pub days: u32,
    pub day_gain_sd: f64,
    pub day_baseline_sd: f64,
}

/// Coloured dead-leaves images: occluding ellipses whose radii follow a power law
/// (density ∝ r^-exponent; 3 gives the 1/f² power spectrum of natural images).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Leaves {
    pub count: u32,
    /// Radii as fractions of the image side.
    pub min_radius: f64,
    pub max_radius: f64,
    pub exponent: f64,
    /// Largest ratio of an ellipse's long to short axis.
    pub max_aspect: f64,
    pub saturation: [f64; 2],
    pub value: [f64; 2],
    /// Amplitude of a linear shading across each leaf.
    pub shading: f64,
}

/// One area's electrodes: what drives them and how they respond in time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AreaModel {
    /// Response onset after stimulus onset, mean over electrodes.
    pub latency_ms: f64,
    /// Electrode-to-electrode spread of the latency (uniform ±).
    pub latency_spread_ms: f64,
    /// Trial-to-trial latency jitter (SD, shared by an area's electrodes in a trial).
    pub latency_jitter_ms: f64,
    /// Transient: an alpha function peaking this long after the response onset.
    pub peak_ms: f64,
    pub transient: f64,
    /// Sustained response while the image is on, rising with `rise_ms`, decaying with
    /// `decay_ms` after the image goes off.
    pub sustained: f64,
    pub rise_ms: f64,
    pub decay_ms: f64,
    /// Spontaneous MUA level (arbitrary units), mean over electrodes (±30 %).
    pub spontaneous: f64,
    /// Response amplitude for an average image, mean over electrodes (±40 %).
    pub gain: f64,
    /// Slope of the softplus from standardised drive to amplitude: higher is more selective.
    pub selectivity: f64,
    /// White measurement noise per 1 kHz sample (SD).
    pub noise_sd: f64,
    /// Trial-to-trial multiplicative gain variability (SD of the log gain), per electrode.
    pub trial_gain_sd: f64,
    /// The part of it shared by all of an area's electrodes in a trial.
    pub shared_gain_sd: f64,
    /// Weights of the drive's components (each standardised over the animal's reference images).
    pub features: Features,
}

/// Drive components of a unit: luminance, contrast, colour, texture, coarse, shape.
pub const N_FEATURES: usize = 6;

/// Drive components. V1: `luminance` (ON/OFF, signed) and `contrast` (oriented energy);
/// V4 adds `colour` (opponent hue) and `texture` (a mix of the synthetic ventral stream's
/// layer-2 maps inside the RF); IT: `shape` (a mix of layer-3 maps pooled over its large
/// RF, position-tolerant; [`super::ventral`]). `coarse` (a random linear projection of the
/// 6 × 6 colour layout inside the RF) has no weight by default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Features {
    pub luminance: f64,
    pub contrast: f64,
    pub colour: f64,
    pub texture: f64,
    pub coarse: f64,
    pub shape: f64,
}

impl Default for Design {
    fn default() -> Self {
        Design {
            on_ms: 200,
            off_ms: 200,
            images_per_trial: 4,
            inter_trial_ms: 300,
            lead_in_ms: 1000,
            days: 1,
            day_gain_sd: 0.15,
            day_baseline_sd: 0.1,
        }
    }
}

impl Default for Leaves {
    fn default() -> Self {
        Leaves {
            count: 120,
            min_radius: 0.04,
            max_radius: 0.4,
            exponent: 3.0,
            max_aspect: 2.5,
            saturation: [0.15, 0.85],
            value: [0.1, 0.95],
            shading: 0.15,
        }
    }
}

impl Features {
    /// The weights in the order of the drive components
    /// ([`N_FEATURES`]).
    pub fn weights(&self) -> [f64; N_FEATURES] {
        [
            self.luminance,
            self.contrast,
            self.colour,
            self.texture,
            self.coarse,
            self.shape,
        ]
    }
}

impl AreaModel {
    /// Defaults per area: latencies and time courses after the macaque literature
    /// (V1 ≈ 40 ms, V4 ≈ 65 ms, IT ≈ 90 ms onset; TVSD MUA peaks 50–100 ms after onset).
    pub fn default_for(area: Area) -> AreaModel {
        let base = AreaModel {
            latency_ms: 40.0,
            latency_spread_ms: 5.0,
            latency_jitter_ms: 3.0,
            peak_ms: 15.0,
            transient: 1.0,
            sustained: 0.35,
            rise_ms: 20.0,
            decay_ms: 40.0,
            spontaneous: 2.0,
            gain: 1.5,
            selectivity: 1.2,
            noise_sd: 1.0,
            trial_gain_sd: 0.2,
            shared_gain_sd: 0.1,
            features: Features::default(),
        };
        match area {
            Area::V1 => AreaModel {
                features: Features {
                    luminance: 1.0,
                    contrast: 0.6,
                    ..Features::default()
                },
                ..base
            },
            Area::V4 => AreaModel {
                latency_ms: 65.0,
                peak_ms: 20.0,
                sustained: 0.3,
                spontaneous: 1.5,
                gain: 1.2,
                features: Features {
                    luminance: 0.5,
                    colour: 1.0,
                    texture: 0.5,
                    ..Features::default()
                },
                ..base
            },
            Area::IT => AreaModel {
                latency_ms: 90.0,
                latency_spread_ms: 8.0,
                latency_jitter_ms: 5.0,
                peak_ms: 25.0,
                sustained: 0.25,
                decay_ms: 50.0,
                spontaneous: 1.5,
                gain: 1.0,
                features: Features {
                    luminance: 0.15,
                    shape: 1.0,
                    ..Features::default()
                },
                ..base
            },
        }
    }
}

impl Default for AreaModel {
    fn default() -> Self {
        AreaModel::default_for(Area::V1)
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            design: Design::default(),
            leaves: Leaves::default(),
            v1: AreaModel::default_for(Area::V1),
            v4: AreaModel::default_for(Area::V4),
            it: AreaModel::default_for(Area::IT),
            broadband: BroadbandModel::default(),
        }
    }
}

/// Longest on, off, inter-trial and lead-in time of the design, in ms.
const MAX_DESIGN_MS: u32 = 60_000;
/// Most images in one trial.
const MAX_IMAGES_PER_TRIAL: u32 = 1000;
/// Most recording days a session may span.
const MAX_DAYS: u32 = 1000;

impl SimConfig {
    pub fn area(&self, area: Area) -> &AreaModel {
        match area {
            Area::V1 => &self.v1,
            Area::V4 => &self.v4,
            Area::IT => &self.it,
        }
    }

    pub fn load(path: &Path) -> Result<SimConfig, SimConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| SimConfigError::Io(path.to_path_buf(), e))?;
        SimConfig::from_toml_str(&text, path)
    }

    /// Parses and validates; keys left out keep their defaults. A section for an area
    /// (`[V4]`) starts from that area's defaults.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<SimConfig, SimConfigError> {
        let parse = |message: String| SimConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let value: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse(e.to_string()))?;
        let mut config: SimConfig = toml::from_str(text).map_err(|e| parse(e.to_string()))?;
        // serde fills a missing key of [V4] from AreaModel::default(), which is V1's:
        // redo each area on top of its own defaults.
        for area in Area::ALL {
            let name = area.name();
            let own = AreaModel::default_for(area);
            let merged = match value.get(name) {
                Some(section) => {
                    let mut base = toml::Value::try_from(&own).expect("serialisable");
                    merge(&mut base, section);
                    base.try_into()
                        .map_err(|e: toml::de::Error| parse(format!("[{name}]: {e}")))?
                }
                None => own,
            };
            match area {
                Area::V1 => config.v1 = merged,
                Area::V4 => config.v4 = merged,
                Area::IT => config.it = merged,
            }
        }
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), SimConfigError> {
        let bad = |key: String, message: &str| {
            Err(SimConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                message: message.to_string(),
            })
        };
        if let Some((key, message)) = design_problem(&self.design) {
            return bad(key.into(), &message);
        }
        let b = &self.broadband;
        let finite_nonneg = |v: f64| v.is_finite() && v >= 0.0;
        if !(finite_nonneg(b.spikes_per_s_per_unit)
            && finite_nonneg(b.spike_uv[0])
            && b.spike_uv[0] <= b.spike_uv[1]
            && b.spike_uv[1].is_finite()
            && b.spike_ms > 0.0
            && b.spike_ms <= 10.0
            && finite_nonneg(b.noise_uv)
            && finite_nonneg(b.line_uv)
            && finite_nonneg(b.line_hz)
            && b.uv_per_count > 0.0
            && b.uv_per_count.is_finite())
        {
            return bad(
                "broadband".into(),
                "needs rates, amplitudes and noise ≥ 0, spike_uv = [low, high] with low ≤ high, 0 < spike_ms ≤ 10, uv_per_count > 0",
            );
        }
        let l = &self.leaves;
        if !(l.min_radius > 0.0 && l.min_radius <= l.max_radius && l.max_radius.is_finite()) {
            return bad(
                "leaves.min_radius / leaves.max_radius".into(),
                "need 0 < min_radius ≤ max_radius",
            );
        }
        if !(l.exponent.is_finite() && l.max_aspect >= 1.0 && l.shading >= 0.0) {
            return bad(
                "leaves".into(),
                "exponent must be finite, max_aspect ≥ 1, shading ≥ 0",
            );
        }
        for (key, r) in [
            ("leaves.saturation", l.saturation),
            ("leaves.value", l.value),
        ] {
            if !(0.0..=1.0).contains(&r[0]) || !(r[0]..=1.0).contains(&r[1]) {
                return bad(key.into(), "must be [low, high] within 0…1");
            }
        }
        for area in Area::ALL {
            let m = self.area(area);
            let name = area.name();
            let non_negative = [
                ("latency_ms", m.latency_ms),
                ("latency_spread_ms", m.latency_spread_ms),
                ("latency_jitter_ms", m.latency_jitter_ms),
                ("transient", m.transient),
                ("sustained", m.sustained),
                ("spontaneous", m.spontaneous),
                ("gain", m.gain),
                ("selectivity", m.selectivity),
                ("noise_sd", m.noise_sd),
                ("trial_gain_sd", m.trial_gain_sd),
                ("shared_gain_sd", m.shared_gain_sd),
            ];
            for (key, v) in non_negative {
                if !(v.is_finite() && v >= 0.0) {
                    return bad(format!("{name}.{key}"), "must be a finite number ≥ 0");
                }
            }
            for (key, v) in [
                ("peak_ms", m.peak_ms),
                ("rise_ms", m.rise_ms),
                ("decay_ms", m.decay_ms),
            ] {
                if !(v.is_finite() && v > 0.0) {
                    return bad(format!("{name}.{key}"), "must be > 0 ms");
                }
            }
            if m.latency_ms - m.latency_spread_ms < 0.0 {
                return bad(
                    format!("{name}.latency_spread_ms"),
                    "must not exceed latency_ms (responses cannot start before the image)",
                );
            }
            let w = m.features.weights();
            if w.iter().any(|v| !v.is_finite()) || w.iter().all(|v| *v == 0.0) {
                return bad(
                    format!("{name}.features"),
                    "weights must be finite and at least one non-zero",
                );
            }
        }
        Ok(())
    }
}

/// Overlays `over` on `base`, table by table.
fn merge(base: &mut toml::Value, over: &toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// What is wrong with a design, if anything: the key and the fix.
pub(super) fn design_problem(d: &Design) -> Option<(&'static str, String)> {
    if d.on_ms == 0 {
        return Some(("design.on_ms", "must be at least 1 ms".into()));
    }
    if d.images_per_trial == 0 {
        return Some(("design.images_per_trial", "must be at least 1".into()));
    }
    if d.days == 0 || d.days > MAX_DAYS {
        return Some(("design.days", format!("must be 1 to {MAX_DAYS}")));
    }
    for (key, sd) in [
        ("design.day_gain_sd", d.day_gain_sd),
        ("design.day_baseline_sd", d.day_baseline_sd),
    ] {
        if !(sd.is_finite() && (0.0..=2.0).contains(&sd)) {
            return Some((key, "must be from 0 to 2".into()));
        }
    }
    // Bounded so that a trial's length in samples cannot overflow.
    for (key, ms) in [
        ("design.on_ms", d.on_ms),
        ("design.off_ms", d.off_ms),
        ("design.inter_trial_ms", d.inter_trial_ms),
        ("design.lead_in_ms", d.lead_in_ms),
    ] {
        if ms > MAX_DESIGN_MS {
            return Some((
                key,
                format!("must be at most {MAX_DESIGN_MS} ms (one minute)"),
            ));
        }
    }
    if d.images_per_trial > MAX_IMAGES_PER_TRIAL {
        return Some((
            "design.images_per_trial",
            format!("must be at most {MAX_IMAGES_PER_TRIAL}"),
        ));
    }
    if d.on_ms + d.off_ms < super::POST_MS as u32 {
        return Some((
            "design.on_ms + design.off_ms",
            "must be at least 200 ms so each image's response window (−100…+199 ms) ends before the next onset".into(),
        ));
    }
    if d.inter_trial_ms + d.off_ms < super::PRE_MS as u32 || d.lead_in_ms < super::PRE_MS as u32 {
        return Some((
            "design.inter_trial_ms / design.lead_in_ms",
            "the 100 ms pre-stimulus baseline must fit before each trial's first image".into(),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SimConfig, SimConfigError> {
        SimConfig::from_toml_str(text, Path::new("cortex.toml"))
    }

    /// Design times whose sums would overflow a u32 (the trial length is computed in
    /// one) are refused by name.
    #[test]
    fn design_times_are_bounded() {
        for (text, key) in [
            ("[design]\non_ms = 4294967295\n", "design.on_ms"),
            ("[design]\noff_ms = 4294967000\n", "design.off_ms"),
            (
                "[design]\ninter_trial_ms = 4294967000\n",
                "design.inter_trial_ms",
            ),
            ("[design]\nlead_in_ms = 60001\n", "design.lead_in_ms"),
            (
                "[design]\nimages_per_trial = 4000000\n",
                "design.images_per_trial",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
        let c = parse("[design]\non_ms = 60000\noff_ms = 60000\n").unwrap();
        assert_eq!(c.design.on_ms + c.design.off_ms, 120_000);
    }

    /// The documented file and the built-in defaults are the same thing.
    #[test]
    fn documented_defaults_match_the_code() {
        assert_eq!(parse(DEFAULT_CORTEX_TOML).unwrap(), SimConfig::default());
        assert_eq!(parse("").unwrap(), SimConfig::default());
    }

    #[test]
    fn a_partial_area_keeps_that_areas_defaults() {
        let c = parse("[V4]\ngain = 3.0\n").unwrap();
        assert_eq!(c.v4.gain, 3.0);
        assert_eq!(c.v4.latency_ms, AreaModel::default_for(Area::V4).latency_ms);
        assert_eq!(c.v4.features, AreaModel::default_for(Area::V4).features);
        assert_eq!(c.it, AreaModel::default_for(Area::IT));
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            ("[V1]\nnoise_sd = -1.0\n", "V1.noise_sd"),
            ("[IT]\nlatency_spread_ms = 200.0\n", "IT.latency_spread_ms"),
            (
                "[V4]\nfeatures = { luminance = 0.0, colour = 0.0, texture = 0.0 }\n",
                "V4.features",
            ),
            ("[design]\non_ms = 0\n", "design.on_ms"),
            (
                "[leaves]\nmin_radius = 0.5\nmax_radius = 0.1\n",
                "leaves.min_radius",
            ),
            ("[V1]\nnoise = 1.0\n", "unknown field `noise`"),
            ("[design]\non_ms = \"long\"\n", "on_ms"),
            ("[V1\n", "cortex.toml"),
        ];
        for (text, expected) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }
}
