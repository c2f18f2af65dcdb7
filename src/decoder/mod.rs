//! The image decoder: feature frame → input layer → pix2pix U-Net → RGB image (DESIGN §2).
//!
//! [`Decoder`] is the inference side. [`Decoder::random`] and [`Decoder::load`] fold every
//! BatchNorm into the convolution before it ([`infer::FoldedUNet`]), freeze the learned
//! input layer, and on the CPU backend lay the weights out for [`infer::HostUNet`]: plain-Rust
//! im2col/col2im/activation kernels ([`kernels`]) around faer's matrix products, split
//! between the threads of the current Rayon pool.
//!
//! Real-time contract: all set-up happens in the constructor. `reconstruct` checks lengths
//! and values and returns an error instead of panicking. On the CPU backend,
//! [`Decoder::reconstruct_batch_with`] keeps every buffer (the input image, each layer's
//! activations, the linear pathway's and dense maps' scratch) in the caller's
//! [`Workspace`]: once warm it allocates nothing and takes no lock (the daemon's decode
//! stage runs it so; `tests/it/hot_loop.rs`). On an accelerator Burn allocates device
//! tensors per call.
//!
//! The U-Net's shape is defined once, in [`arch`]; every network is built from its
//! [`Architecture`]. The trainable pieces live beside it: [`unet::UNet`],
//! [`input::GaussianRfLayer`], [`input::DenseMapLayer`] and [`model::DecoderModel`],
//! whose record is what `weights.mpk` holds; [`input::FixedRfMaps`] builds the fixed
//! RF-map input of the spatial and spatiotemporal models.

pub mod arch;
pub mod backend;
pub mod infer;
pub mod input;
pub mod kernels;
pub mod linear;
pub mod model;
pub mod unet;

use std::path::PathBuf;

pub use arch::Architecture;
pub use backend::{compute_threads, dispatch, ComputeDevice, OnBackend, PoolRole};
#[cfg(feature = "offline")]
pub use backend::{dispatch_training, OnTrainBackend};
pub use input::{DenseMapLayer, FixedRfMaps, GaussianRfLayer};
pub use model::{Decoder, DecoderModel, Workspace};
pub use unet::UNet;

/// The CPU backend every test and the demo run on.
pub type CpuBackend = burn::backend::Flex;
/// The CPU backend with automatic differentiation, for training.
#[cfg(feature = "offline")]
pub type CpuTrainBackend = burn::backend::Autodiff<CpuBackend>;

/// Cortical areas, in channel order.
pub const N_AREAS: usize = 3;
/// Area names by index (0 = V1, 1 = V4, 2 = IT).
pub const AREA_NAMES: [&str; N_AREAS] = ["V1", "V4", "IT"];

/// Which input layer sits in front of the U-Net. (The variants' docs are `--kind`'s help.)
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum DecoderKind {
    /// One window per electrode (TW-15), fixed RF maps, one channel per array.
    Spatial,
    /// Five windows per electrode (TW-3), fixed RF maps, one channel per area × window
    /// (V1 w0..w4, V4 w0..w4, IT w0..w4).
    Spatiotemporal,
    /// One window per electrode, learned Gaussian RFs, one channel per array.
    EndToEnd,
    /// One window per electrode, a learned dense map per area, three channels.
    Baseline,
}

impl DecoderKind {
    /// The name used in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Spatial => "spatial",
            Self::Spatiotemporal => "spatiotemporal",
            Self::EndToEnd => "end-to-end",
            Self::Baseline => "baseline",
        }
    }
}

impl std::fmt::Display for DecoderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the rig says about each electrode, in the order of the feature vector.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ElectrodeSpec {
    /// Index 0..n_arrays of the live array it belongs to.
    pub array: usize,
    /// 0 = V1, 1 = V4, 2 = IT.
    pub area: usize,
    /// RF centre x, y and size (σ) in pixels of the image grid ((0, 0) = top-left corner), if known.
    pub rf_px: Option<[f32; 3]>,
}

/// Largest U-Net base width a config may ask for (64 in the paper).
pub const MAX_WIDTH: usize = 1024;
/// Largest image side a config may ask for (96 in the paper).
pub const MAX_IMAGE_SIZE: usize = 1024;
/// Most latency windows per electrode a config may ask for (5 for TW-3).
pub const MAX_WINDOWS_PER_ELECTRODE: usize = 64;

/// Everything needed to rebuild a decoder; saved beside the weights as `decoder.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DecoderConfig {
    pub kind: DecoderKind,
    /// U-Net base width: 64 in the paper; a slim variant (e.g. 16) runs on a laptop CPU.
    pub width: usize,
    /// The U-Net's skip blocks ([`Architecture::levels`]); the paper's in models saved
    /// before the field existed.
    #[serde(default = "arch::paper_levels")]
    pub levels: Vec<usize>,
    /// Image side in pixels: 96 in the paper; a multiple of 2^(levels + 1) (32 for the
    /// paper's four levels).
    pub image_size: usize,
    pub n_arrays: usize,
    /// 1 for Spatial, EndToEnd and Baseline; 5 for Spatiotemporal.
    pub windows_per_electrode: usize,
    /// Names of the latency windows, as the rig reported them (checked, not interpreted).
    pub window_names: Vec<String>,
    pub electrodes: Vec<ElectrodeSpec>,
    /// A linear read-out of every electrode beside the RF maps ([`linear::LinearPathwayConfig`]);
    /// absent in the paper's four decoders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_pathway: Option<linear::LinearPathwayConfig>,
    /// End-to-end only: one input channel per electrode instead of per array (each
    /// electrode's Gaussian map on its own; an RF-learning experiment, ~60× the input).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub channel_per_electrode: bool,
    /// Factor applied to the RF-map input channels (chosen by `train` so they have unit
    /// variance over the training set; 1 in models trained before it existed).
    #[serde(default = "unit_scale")]
    pub input_scale: f32,
}

fn unit_scale() -> f32 {
    1.0
}

impl DecoderConfig {
    /// A small config for tests: width 4, 32 px, `windows` windows per electrode (named
    /// `w0`, `w1`, …), one input channel per array, no linear pathway.
    #[cfg(test)]
    pub(crate) fn for_test(
        kind: DecoderKind,
        n_arrays: usize,
        windows: usize,
        electrodes: Vec<ElectrodeSpec>,
    ) -> Self {
        DecoderConfig {
            kind,
            width: 4,
            levels: arch::DEFAULT_LEVELS.to_vec(),
            image_size: 32,
            n_arrays,
            windows_per_electrode: windows,
            window_names: (0..windows).map(|w| format!("w{w}")).collect(),
            electrodes,
            linear_pathway: None,
            channel_per_electrode: false,
            input_scale: 1.0,
        }
    }

    /// Checks every invariant the decoder relies on.
    pub fn validate(&self) -> Result<(), DecoderError> {
        let bad = |msg: String| Err(DecoderError::InvalidConfig(msg));
        if self.image_size > MAX_IMAGE_SIZE {
            return bad(format!(
                "image_size {} is larger than {MAX_IMAGE_SIZE}",
                self.image_size
            ));
        }
        if let Err(msg) = self.architecture().validate(MAX_WIDTH, self.image_size) {
            return bad(msg);
        }
        if self.electrodes.is_empty() {
            return bad("the electrode list is empty".into());
        }
        // Every live array holds at least one electrode.
        if self.n_arrays == 0 || self.n_arrays > self.electrodes.len() {
            return bad(format!(
                "n_arrays {} is not between 1 and the number of electrodes ({})",
                self.n_arrays,
                self.electrodes.len()
            ));
        }
        if self.windows_per_electrode == 0 || self.windows_per_electrode > MAX_WINDOWS_PER_ELECTRODE
        {
            return bad(format!(
                "windows_per_electrode {} is not between 1 and {MAX_WINDOWS_PER_ELECTRODE}",
                self.windows_per_electrode
            ));
        }
        if self.kind != DecoderKind::Spatiotemporal && self.windows_per_electrode != 1 {
            return bad(format!(
                "a {} decoder reads 1 window per electrode, the config says {}",
                self.kind, self.windows_per_electrode
            ));
        }
        for (e, spec) in self.electrodes.iter().enumerate() {
            if spec.array >= self.n_arrays {
                return bad(format!(
                    "electrode {e} is in array {} but there are only {} arrays",
                    spec.array, self.n_arrays
                ));
            }
            if spec.area >= N_AREAS {
                return bad(format!(
                    "electrode {e} has area {} (0 = V1, 1 = V4, 2 = IT)",
                    spec.area
                ));
            }
            if let Some(rf) = spec.rf_px {
                if rf.iter().any(|v| !v.is_finite()) {
                    return bad(format!("electrode {e} has a non-finite RF {rf:?}"));
                }
            }
        }
        if self.channel_per_electrode && self.kind != DecoderKind::EndToEnd {
            return bad(format!(
                "channel_per_electrode is for end-to-end decoders, not {}",
                self.kind
            ));
        }
        if !(self.input_scale.is_finite() && self.input_scale > 0.0) {
            return bad(format!(
                "input_scale {} is not a positive number",
                self.input_scale
            ));
        }
        if let Some(p) = &self.linear_pathway {
            if p.side == 0 || !self.image_size.is_multiple_of(p.side) {
                return bad(format!(
                    "linear_pathway.side {} does not divide image_size {}",
                    p.side, self.image_size
                ));
            }
        }
        Ok(())
    }

    /// Channels of the input layer's maps for this kind (the RF maps, learned or fixed).
    pub fn map_channels(&self) -> usize {
        match self.kind {
            DecoderKind::EndToEnd if self.channel_per_electrode => self.electrodes.len(),
            DecoderKind::Spatial | DecoderKind::EndToEnd => self.n_arrays,
            DecoderKind::Spatiotemporal => N_AREAS * self.windows_per_electrode,
            DecoderKind::Baseline => N_AREAS,
        }
    }

    /// Channels of the U-Net input: the maps, then the linear pathway's RGB image if any.
    pub fn in_channels(&self) -> usize {
        self.map_channels() + if self.linear_pathway.is_some() { 3 } else { 0 }
    }

    /// Length of one feature vector: windows × electrodes.
    pub fn n_features(&self) -> usize {
        self.windows_per_electrode * self.electrodes.len()
    }

    /// Length of one output image: 3 × H × W.
    pub fn image_len(&self) -> usize {
        3 * self.image_size * self.image_size
    }

    /// A lower bound on the size of `weights.mpk` for this (valid) config: 4 bytes for
    /// every weight of the U-Net's convolutions and of the learned dense or linear maps;
    /// biases, norms and names come on top. A smaller file was saved for another config,
    /// and checking it first keeps a damaged config from allocating a model far larger
    /// than its file.
    pub fn min_weight_bytes(&self) -> u64 {
        let mut weights = self.architecture().conv_weights();
        let electrodes = self.electrodes.len() as u64;
        if self.kind == DecoderKind::Baseline {
            weights += electrodes * (self.image_size * self.image_size) as u64;
        }
        if let Some(p) = &self.linear_pathway {
            weights += electrodes * 3 * (p.side * p.side) as u64;
        }
        weights.saturating_mul(4)
    }

    /// The generator's shape.
    pub fn architecture(&self) -> Architecture {
        Architecture {
            in_channels: self.in_channels(),
            width: self.width,
            levels: self.levels.clone(),
            residual: self.linear_pathway.as_ref().is_some_and(|p| p.residual),
        }
    }
}

/// Everything that can go wrong building, loading, saving or running a decoder.
/// Only `Length` and `NonFinite` concern a single frame (the next frame may be fine);
/// the others are fixed by fixing the files or the config.
#[derive(Debug, thiserror::Error)]
pub enum DecoderError {
    /// The config breaks an invariant (say which, and how to fix it).
    #[error("invalid decoder config: {0}")]
    InvalidConfig(String),
    /// A file or directory could not be read or written.
    // The cause sits in the message, not in `source()`, so an anyhow chain
    // (`{:#}`) does not print it twice.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// `decoder.json` is not valid JSON for a [`DecoderConfig`].
    #[error("{path} is not a valid decoder config: {error}")]
    ConfigFormat {
        path: PathBuf,
        error: serde_json::Error,
    },
    /// `decoder.json` parses but breaks an invariant.
    #[error("{path}: invalid decoder config: {message}")]
    ConfigInvalid { path: PathBuf, message: String },
    /// `weights.mpk` is missing, corrupt, or holds weights for another config.
    #[error("loading weights {path}: {message} (retrain, or put the decoder.json saved with these weights beside them)")]
    Weights { path: PathBuf, message: String },
    /// Writing the weights or config failed.
    #[error("saving to {path}: {message}")]
    Save { path: PathBuf, message: String },
    /// The model was made for another rig (electrodes, arrays, windows, image size).
    #[error("the model does not fit the rig: {0}")]
    Mismatch(String),
    /// A feature vector or output buffer of the wrong length.
    #[error("{what}: expected {expected} values, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// The backend handed back data of an unexpected type (a backend bug).
    #[error("reading the decoder output: {0}")]
    Output(String),
    /// NaN or Inf in the input; the frame is refused rather than decoded into garbage.
    #[error("non-finite value in the {0} (NaN or Inf)")]
    NonFinite(&'static str),
}

/// A float tensor's values read back to the host, as f32.
pub fn host_values<B: burn::tensor::backend::Backend, const D: usize>(
    t: burn::tensor::Tensor<B, D>,
) -> Result<Vec<f32>, DecoderError> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| DecoderError::Output(format!("{e:?}")))
}

/// Sizes rayon's global pool, which offline work computes on (training, evaluation,
/// Flex's gemm), to `n` threads. Call it once at start-up, before any of that runs;
/// once the pool exists it has no effect and this returns false. `n = 0` leaves rayon's
/// default (one thread per core). The live decoder has a pool of its own
/// (`--decode-threads`, [`crate::daemon::DecodeStage`]).
pub fn init_compute_threads(n: usize) -> bool {
    // Only the first call in a process can size the global pool; later calls
    // (a second daemon run in the same process, tests) keep it.
    n > 0
        && rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("compute-{i}"))
            .build_global()
            .is_ok()
}
