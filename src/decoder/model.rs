//! [`DecoderModel`] (the trainable input layer + U-Net, what `weights.mpk` holds) and
//! [`Decoder`] (the inference-ready, BatchNorm-folded form the daemon runs).

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::SeedableRng;

use parking_lot::Mutex;

use super::infer::{FoldedUNet, HostUNet};
use super::input::{
    CachedGaussianMaps, DenseMapLayer, FixedRfMaps, GaussianRfLayer, HostDenseMaps,
};
use super::kernels::BufferPool;
use super::linear::{HostLinearPathway, LinearPathwayLayer, PathwayScratch};
use super::unet::UNet;
use super::{DecoderConfig, DecoderError, DecoderKind, AREA_NAMES};

/// File name of the config saved beside the weights.
pub const CONFIG_FILE: &str = "decoder.json";
/// File name of the weights (a Burn named MessagePack record, full precision).
pub const WEIGHTS_FILE: &str = "weights.mpk";

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

/// The trainable decoder: the input layer of its kind (none for the fixed-RF kinds) and the U-Net.
#[derive(Module, Debug)]
pub struct DecoderModel<B: Backend> {
    /// Learned Gaussian RFs (EndToEnd only).
    pub gaussian: Option<GaussianRfLayer<B>>,
    /// Learned dense maps (Baseline only).
    pub dense: Option<DenseMapLayer<B>>,
    /// The linear pathway's weights (fitted, then frozen), if the config has one.
    pub linear: Option<LinearPathwayLayer<B>>,
    pub unet: UNet<B>,
}

impl<B: Backend> DecoderModel<B> {
    /// A freshly initialised model (pix2pix init, see [`UNet::init_pix2pix`]),
    /// deterministic in `seed`.
    pub fn new(
        config: &DecoderConfig,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self, DecoderError> {
        config.validate()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let unet = UNet::init_pix2pix(&config.architecture(), &mut rng, device);
        let gaussian =
            (config.kind == DecoderKind::EndToEnd).then(|| GaussianRfLayer::new(config, device));
        let dense = (config.kind == DecoderKind::Baseline)
            .then(|| DenseMapLayer::new(config, &mut rng, device));
        let linear = config
            .linear_pathway
            .as_ref()
            .map(|p| LinearPathwayLayer::new(config, p.side, device));
        Ok(Self {
            gaussian,
            dense,
            linear,
            unet,
        })
    }

    /// The U-Net input for the learned input layers: responses `[batch, electrodes]` →
    /// `[batch, channels, H, W]`. `None` for the fixed-RF kinds, whose input image is built
    /// on the host by [`FixedRfMaps::fill`].
    pub fn learned_input(&self, responses: Tensor<B, 2>) -> Option<Tensor<B, 4>> {
        if let Some(g) = &self.gaussian {
            Some(g.forward(responses))
        } else {
            self.dense.as_ref().map(|d| d.forward(responses))
        }
    }
}

/// How features become the U-Net input at inference.
#[derive(Debug)]
enum InferenceInput {
    Fixed(FixedRfMaps),
    /// The learned Gaussian RFs, frozen.
    Gaussian(CachedGaussianMaps),
    /// The learned dense maps: on the host for the CPU path, else Burn's ops.
    Dense(Option<HostDenseMaps>),
}

/// How the folded U-Net runs.
#[derive(Debug)]
enum Generator<B: Backend> {
    /// Burn's conv ops end to end (accelerators: the data stays on the device).
    Ops(FoldedUNet<B>),
    /// Plain-Rust kernels around host matrix products (the CPU backend; see
    /// `benches/decoder.rs` for its speed against Burn's conv ops).
    Host(HostUNet),
}

/// What a decoder keeps from one call to the next: the input image and every buffer of
/// the CPU path. After one call with the same batch, a call that reuses it allocates
/// nothing on the CPU path (`tests/it/hot_loop.rs` counts it).
#[derive(Debug, Default)]
pub struct Workspace {
    /// `[batch][channels][H][W]`
    input: Vec<f32>,
    unet: BufferPool,
    pathway: PathwayScratch,
    /// `[batch][3][H][W]`, the linear pathway's images.
    pathway_images: Vec<f32>,
    /// The baseline's responses in area order.
    gathered: Vec<f32>,
}

/// An inference-ready decoder: input layer (+ linear pathway) + BatchNorm-folded U-Net.
#[derive(Debug)]
pub struct Decoder<B: Backend> {
    config: DecoderConfig,
    model: DecoderModel<B>,
    input: InferenceInput,
    pathway: Option<HostLinearPathway>,
    unet: Generator<B>,
    device: B::Device,
    /// The workspace of [`Decoder::reconstruct_batch`]; a call that finds it in use makes
    /// its own.
    shared: Mutex<Workspace>,
}

impl<B: Backend> Decoder<B> {
    /// A randomly initialised decoder (pix2pix init), deterministic in `seed`.
    pub fn random(
        config: DecoderConfig,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self, DecoderError> {
        let model = DecoderModel::new(&config, seed, device)?;
        Self::from_model(config, model, device)
    }

    /// Wraps a (trained) model for inference: caches the input layer and folds the BatchNorms.
    pub fn from_model(
        config: DecoderConfig,
        model: DecoderModel<B>,
        device: &B::Device,
    ) -> Result<Self, DecoderError> {
        config.validate()?;
        check_model_fits(&config, &model)?;
        let input = match config.kind {
            DecoderKind::Spatial | DecoderKind::Spatiotemporal => {
                InferenceInput::Fixed(FixedRfMaps::build(&config)?)
            }
            DecoderKind::EndToEnd => {
                let layer = model.gaussian.as_ref().ok_or_else(|| {
                    DecoderError::InvalidConfig(
                        "an end-to-end model needs its Gaussian RF layer".into(),
                    )
                })?;
                InferenceInput::Gaussian(CachedGaussianMaps::new(layer, &config)?)
            }
            DecoderKind::Baseline => {
                let layer = model.dense.as_ref().ok_or_else(|| {
                    DecoderError::InvalidConfig("a baseline model needs its dense map layer".into())
                })?;
                let host = runs_on_host::<B>().then(|| HostDenseMaps::new(layer));
                InferenceInput::Dense(host.transpose()?)
            }
        };
        let pathway = match (&config.linear_pathway, &model.linear) {
            (Some(_), Some(layer)) => Some(HostLinearPathway::new(layer, &config)?),
            (None, None) => None,
            _ => {
                return Err(DecoderError::InvalidConfig(
                    "the config and the model disagree on the linear pathway".into(),
                ))
            }
        };
        let folded = FoldedUNet::from_unet(&model.unet);
        let unet = if runs_on_host::<B>() {
            Generator::Host(HostUNet::from_folded(folded)?)
        } else {
            Generator::Ops(folded)
        };
        Ok(Self {
            config,
            model,
            input,
            pathway,
            unet,
            device: device.clone(),
            shared: Mutex::new(Workspace::default()),
        })
    }

    /// Reads `dir/decoder.json` and `dir/weights.mpk`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, DecoderError> {
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).map_err(|error| DecoderError::Io {
            path: config_path.clone(),
            error,
        })?;
        let config: DecoderConfig =
            serde_json::from_str(&text).map_err(|error| DecoderError::ConfigFormat {
                path: config_path.clone(),
                error,
            })?;
        config.validate().map_err(|e| DecoderError::ConfigInvalid {
            path: config_path.clone(),
            message: e.to_string(),
        })?;
        let weights_path = dir.join(WEIGHTS_FILE);
        let weights_err = |message: String| DecoderError::Weights {
            path: weights_path.clone(),
            message,
        };
        if !weights_path.is_file() {
            return Err(weights_err("file not found".into()));
        }
        let size = std::fs::metadata(&weights_path).map_or(0, |m| m.len());
        let need = config.min_weight_bytes();
        if size < need {
            return Err(weights_err(format!(
                "{size} bytes, but the model {CONFIG_FILE} describes needs at least {need}"
            )));
        }
        let model = DecoderModel::new(&config, 0, device)?;
        let expected = param_shapes(&model);
        // Burn's recorder panics on some malformed records instead of returning an error;
        // a corrupt file must not take the daemon down.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            model.load_file(weights_path.clone(), &recorder(), device)
        }));
        let model = match loaded {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Err(weights_err(e.to_string())),
            Err(_) => return Err(weights_err("the record does not match the model".into())),
        };
        // Burn loads a tensor of any shape into a parameter; a record saved for another
        // width, image size or rig would only fail (panic) at the first forward pass.
        let found = param_shapes(&model);
        if found != expected {
            let detail = match expected.iter().zip(&found).position(|(e, f)| e != f) {
                Some(i) => format!(
                    "parameter #{i} has shape {:?}, {} needs {:?}",
                    found[i], CONFIG_FILE, expected[i]
                ),
                None => format!(
                    "{} parameters, {} needs {}",
                    found.len(),
                    CONFIG_FILE,
                    expected.len()
                ),
            };
            return Err(weights_err(format!(
                "the weights do not fit the config: {detail}"
            )));
        }
        Self::from_model(config, model, device)
    }

    /// Writes `dir/decoder.json` and `dir/weights.mpk`, creating `dir` if needed.
    pub fn save(&self, dir: &Path) -> Result<(), DecoderError> {
        std::fs::create_dir_all(dir).map_err(|error| DecoderError::Io {
            path: dir.to_path_buf(),
            error,
        })?;
        let config_path = dir.join(CONFIG_FILE);
        let text = serde_json::to_string_pretty(&self.config).map_err(|e| DecoderError::Save {
            path: config_path.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&config_path, text).map_err(|error| DecoderError::Io {
            path: config_path,
            error,
        })?;
        let weights_path = dir.join(WEIGHTS_FILE);
        self.model
            .clone()
            .save_file(weights_path.clone(), &recorder())
            .map_err(|e| DecoderError::Save {
                path: weights_path,
                message: e.to_string(),
            })
    }

    /// A workspace for [`Decoder::reconstruct_batch_with`] (empty: the first call sizes it).
    pub fn workspace(&self) -> Workspace {
        Workspace::default()
    }

    /// The config this decoder was built from.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// The trainable model (for fine-tuning or analysis, e.g. the learned RFs).
    pub fn model(&self) -> &DecoderModel<B> {
        &self.model
    }

    /// Refuses a model that does not fit the rig: electrode and array counts, windows,
    /// window names, each electrode's array and area, input channels, image size.
    pub fn check_matches(&self, rig_side: &DecoderConfig) -> Result<(), DecoderError> {
        check_matches(&self.config, rig_side)
    }

    /// One frame: `features` `[windows][electrodes]` (window-major, z-scored means) →
    /// `out` `[3][H][W]`, RGB in [0, 1].
    pub fn reconstruct(&self, features: &[f32], out: &mut [f32]) -> Result<(), DecoderError> {
        self.reconstruct_batch(features, 1, out)
    }

    /// A batch: `features` `[batch][windows][electrodes]` → `out` `[batch][3][H][W]`.
    pub fn reconstruct_batch(
        &self,
        features: &[f32],
        batch: usize,
        out: &mut [f32],
    ) -> Result<(), DecoderError> {
        match self.shared.try_lock() {
            Some(mut ws) => self.reconstruct_batch_with(&mut ws, features, batch, out),
            None => self.reconstruct_batch_with(&mut Workspace::default(), features, batch, out),
        }
    }

    /// [`Decoder::reconstruct_batch`] with the caller's workspace: on the CPU backend, once
    /// a call of this batch size has filled `ws` (and each thread of the current Rayon pool
    /// has run a product), a call allocates nothing and takes no lock.
    pub fn reconstruct_batch_with(
        &self,
        ws: &mut Workspace,
        features: &[f32],
        batch: usize,
        out: &mut [f32],
    ) -> Result<(), DecoderError> {
        check_len(
            "feature vector",
            batch * self.config.n_features(),
            features.len(),
        )?;
        check_len(
            "output image buffer",
            batch * self.config.image_len(),
            out.len(),
        )?;
        if batch == 0 {
            return Ok(());
        }
        if features.iter().any(|v| !v.is_finite()) {
            return Err(DecoderError::NonFinite("features"));
        }
        let size = self.config.image_size;
        match &self.unet {
            Generator::Host(unet) => {
                self.fill_input(features, batch, ws);
                unet.forward(&ws.input, batch, size, out, &mut ws.unet);
                Ok(())
            }
            Generator::Ops(unet) => {
                let x = self.input_tensor(features, batch, ws); // [batch, channels, H, W]
                let data = unet.forward(x).into_data(); // [batch, 3, H, W]
                let values = data
                    .as_slice::<f32>()
                    .map_err(|e| DecoderError::Output(format!("{e:?}")))?;
                check_len("decoder output", out.len(), values.len())?;
                out.copy_from_slice(values);
                Ok(())
            }
        }
    }

    /// The U-Net input `[batch][channels][H][W]` for validated features, into `ws.input`:
    /// the input layer's maps times `input_scale`, then the linear pathway's image if any.
    /// A baseline on an accelerator has no host maps: see [`Decoder::input_tensor`].
    fn fill_input(&self, features: &[f32], batch: usize, ws: &mut Workspace) {
        let size = self.config.image_size;
        let plane = size * size;
        let maps = self.config.map_channels();
        let channels = self.config.in_channels();
        let scale = self.config.input_scale;
        ws.input.resize(batch * channels * plane, 0.0);
        if let InferenceInput::Dense(Some(d)) = &self.input {
            ws.gathered.resize(d.electrodes(), 0.0);
        }
        for (f, img) in features
            .chunks_exact(self.config.n_features())
            .zip(ws.input.chunks_exact_mut(channels * plane))
        {
            let m = &mut img[..maps * plane];
            match &self.input {
                InferenceInput::Fixed(maps) => maps.fill(f, m),
                InferenceInput::Gaussian(maps) => maps.fill(f, m),
                InferenceInput::Dense(Some(d)) => d.fill(f, &mut ws.gathered, m),
                InferenceInput::Dense(None) => m.fill(0.0),
            }
            if scale != 1.0 {
                m.iter_mut().for_each(|v| *v *= scale);
            }
        }
        if let Some(p) = &self.pathway {
            let len = p.image_len();
            ws.pathway_images.resize(batch * len, 0.0);
            p.images_into(features, batch, &mut ws.pathway, &mut ws.pathway_images);
            for (img, dst) in ws
                .pathway_images
                .chunks_exact(len)
                .zip(ws.input.chunks_exact_mut(channels * plane))
            {
                dst[channels * plane - len..].copy_from_slice(img);
            }
        }
    }

    /// The U-Net input as a tensor on the decoder's device (the accelerator path).
    fn input_tensor(&self, features: &[f32], batch: usize, ws: &mut Workspace) -> Tensor<B, 4> {
        let size = self.config.image_size;
        let channels = self.config.in_channels();
        let dense = match (&self.input, &self.model.dense) {
            (InferenceInput::Dense(None), Some(dense)) => dense,
            _ => {
                self.fill_input(features, batch, ws);
                return Tensor::from_data(
                    TensorData::new(ws.input.clone(), [batch, channels, size, size]),
                    &self.device,
                );
            }
        };
        let r = Tensor::from_data(
            TensorData::new(features.to_vec(), [batch, self.config.n_features()]),
            &self.device,
        );
        let maps = dense.forward(r).mul_scalar(self.config.input_scale);
        match &self.pathway {
            Some(p) => {
                let image = p.images(features, batch);
                let image =
                    Tensor::from_data(TensorData::new(image, [batch, 3, size, size]), &self.device);
                Tensor::cat(vec![maps, image], 1)
            }
            None => maps,
        }
    }
}

/// [`DecoderError::Length`] unless `got == expected`.
fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), DecoderError> {
    if got == expected {
        return Ok(());
    }
    Err(DecoderError::Length {
        what,
        expected,
        got,
    })
}

/// The model's shapes against the config, so a mismatch is an error here and not a panic
/// in the first forward pass.
fn check_model_fits<B: Backend>(
    config: &DecoderConfig,
    model: &DecoderModel<B>,
) -> Result<(), DecoderError> {
    let bad = |m: String| Err(DecoderError::InvalidConfig(m));
    let [width, in_channels, ..] = model.unet.stem.weight.dims();
    if in_channels != config.in_channels() || width != config.width {
        return bad(format!(
            "the U-Net takes {in_channels} channels at width {width}; a {} decoder with this config needs {} at width {}",
            config.kind,
            config.in_channels(),
            config.width
        ));
    }
    let n_e = config.electrodes.len();
    if let Some(g) = &model.gaussian {
        let [n] = g.mu_x.dims();
        if n != n_e || g.n_arrays() != config.map_channels() || g.image_size() != config.image_size
        {
            return bad(format!(
                "the Gaussian RF layer has {n} electrodes in {} arrays at {} px; the config has {n_e} in {} at {} px",
                g.n_arrays(),
                g.image_size(),
                config.map_channels(),
                config.image_size
            ));
        }
    }
    if let Some(d) = &model.dense {
        let [n, pixels] = d.weight.dims();
        if n != n_e || pixels != config.image_size * config.image_size {
            return bad(format!(
                "the dense map layer maps {n} electrodes to {pixels} pixels; the config has {n_e} electrodes and {} pixels",
                config.image_size * config.image_size
            ));
        }
    }
    Ok(())
}

/// Shapes of every float parameter, in visiting order.
fn param_shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<Vec<usize>> {
    struct Shapes(Vec<Vec<usize>>);
    impl<B: Backend> ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.dims().to_vec());
        }
    }
    let mut shapes = Shapes(Vec::new());
    module.visit(&mut shapes);
    shapes.0
}

/// Whether `B` computes on this machine's CPU, where the plain-Rust kernels beat Burn's conv ops.
pub(crate) fn runs_on_host<B: Backend>() -> bool {
    std::any::TypeId::of::<B>() == std::any::TypeId::of::<super::CpuBackend>()
}

/// See [`Decoder::check_matches`].
pub fn check_matches(model: &DecoderConfig, rig: &DecoderConfig) -> Result<(), DecoderError> {
    let mismatch = |m: String| Err(DecoderError::Mismatch(m));
    let (me, re) = (model.electrodes.len(), rig.electrodes.len());
    if me != re || model.n_arrays != rig.n_arrays {
        return mismatch(format!(
            "model expects {me} electrodes in {} arrays, rig has {re} in {}",
            model.n_arrays, rig.n_arrays
        ));
    }
    if model.kind != rig.kind {
        return mismatch(format!(
            "model is a {} decoder, the rig side asks for {}",
            model.kind, rig.kind
        ));
    }
    if model.windows_per_electrode != rig.windows_per_electrode {
        return mismatch(format!(
            "model expects {} windows per electrode, rig has {}",
            model.windows_per_electrode, rig.windows_per_electrode
        ));
    }
    if model.window_names != rig.window_names {
        return mismatch(format!(
            "model was trained on windows {:?}, rig has {:?}",
            model.window_names, rig.window_names
        ));
    }
    if model.image_size != rig.image_size {
        return mismatch(format!(
            "model makes {0}×{0} px images, rig asks for {1}×{1}",
            model.image_size, rig.image_size
        ));
    }
    if model.map_channels() != rig.map_channels() {
        return mismatch(format!(
            "model's input layer makes {} channels, the rig gives {}",
            model.map_channels(),
            rig.map_channels()
        ));
    }
    for (e, (m, r)) in model.electrodes.iter().zip(&rig.electrodes).enumerate() {
        if m.array != r.array || m.area != r.area {
            let area = |a: usize| AREA_NAMES.get(a).copied().unwrap_or("?");
            return mismatch(format!(
                "electrode {e}: model has array {} ({}), rig has array {} ({})",
                m.array,
                area(m.area),
                r.array,
                area(r.area)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::{CpuBackend as B, ElectrodeSpec};
    use burn::module::Param;

    /// 3 arrays (V1, V4, IT), 4 electrodes each, one without an RF; 32 px, width 4.
    fn config(kind: DecoderKind) -> DecoderConfig {
        let windows = if kind == DecoderKind::Spatiotemporal {
            5
        } else {
            1
        };
        let electrodes = (0..12)
            .map(|e| ElectrodeSpec {
                array: e / 4,
                area: e / 4,
                rf_px: (e != 5).then(|| {
                    [
                        (e * 2) as f32 + 3.0,
                        30.0 - (e * 2) as f32,
                        1.5 + e as f32 * 0.2,
                    ]
                }),
            })
            .collect();
        DecoderConfig::for_test(kind, 3, windows, electrodes)
    }

    fn features(cfg: &DecoderConfig, batch: usize, seed: u32) -> Vec<f32> {
        (0..batch * cfg.n_features())
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 250.0 - 2.0)
            .collect()
    }

    fn reconstruct(dec: &Decoder<B>, f: &[f32], batch: usize) -> Vec<f32> {
        let mut out = vec![0.0; batch * dec.config().image_len()];
        dec.reconstruct_batch(f, batch, &mut out).unwrap();
        out
    }

    /// Largest difference between the CPU inference path and Burn's ops: the folded U-Net,
    /// and for a baseline its dense maps, as an accelerator runs them.
    fn host_vs_burn_ops(dec: &Decoder<B>, f: &[f32], batch: usize) -> f32 {
        let input = match (&dec.model.dense, dec.config.linear_pathway.is_none()) {
            (Some(dense), true) => {
                let r = Tensor::from_data(
                    TensorData::new(f.to_vec(), [batch, dec.config.n_features()]),
                    &Default::default(),
                );
                dense.forward(r).mul_scalar(dec.config.input_scale)
            }
            _ => dec.input_tensor(f, batch, &mut Workspace::default()),
        };
        let ops = FoldedUNet::from_unet(&dec.model.unet)
            .forward(input)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        reconstruct(dec, f, batch)
            .iter()
            .zip(&ops)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    }

    #[test]
    fn every_kind_reconstructs_an_rgb_image_in_unit_range() {
        let dev = Default::default();
        for kind in [
            DecoderKind::Spatial,
            DecoderKind::Spatiotemporal,
            DecoderKind::EndToEnd,
            DecoderKind::Baseline,
        ] {
            let cfg = config(kind);
            let dec = Decoder::<B>::random(cfg.clone(), 1, &dev).unwrap();
            let mut out = vec![-1.0; 3 * 32 * 32];
            dec.reconstruct(&features(&cfg, 1, 0), &mut out).unwrap();
            assert!(out.iter().all(|v| (0.0..=1.0).contains(v)), "{kind}");
        }
    }

    #[test]
    fn a_batch_equals_its_frames_one_by_one() {
        let dev = Default::default();
        for kind in [
            DecoderKind::Spatiotemporal,
            DecoderKind::EndToEnd,
            DecoderKind::Baseline,
        ] {
            let cfg = config(kind);
            let dec = Decoder::<B>::random(cfg.clone(), 2, &dev).unwrap();
            let f = features(&cfg, 3, 9);
            let batch = reconstruct(&dec, &f, 3);
            for (b, frame) in f.chunks(cfg.n_features()).enumerate() {
                let one = reconstruct(&dec, frame, 1);
                let err = one
                    .iter()
                    .zip(&batch[b * one.len()..(b + 1) * one.len()])
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0f32, f32::max);
                assert!(err < 1e-5, "{kind} frame {b}: {err}");
            }
        }
    }

    #[test]
    fn the_cpu_path_equals_burns_conv_ops() {
        let dev = Default::default();
        for kind in [DecoderKind::Spatial, DecoderKind::Baseline] {
            let cfg = config(kind);
            let dec = Decoder::<B>::random(cfg.clone(), 4, &dev).unwrap();
            assert!(matches!(dec.unet, Generator::Host(_)));
            let err = host_vs_burn_ops(&dec, &features(&cfg, 2, 1), 2);
            assert!(err < 1e-5, "{kind}: {err}");
        }
    }

    #[test]
    fn a_workspace_gives_the_same_image_every_time_and_for_any_batch() {
        let dev = Default::default();
        for kind in [DecoderKind::EndToEnd, DecoderKind::Baseline] {
            let cfg = config(kind);
            let dec = Decoder::<B>::random(cfg.clone(), 2, &dev).unwrap();
            let f = features(&cfg, 2, 5);
            let mut ws = dec.workspace();
            let mut pair = vec![0.0; 2 * cfg.image_len()];
            dec.reconstruct_batch_with(&mut ws, &f, 2, &mut pair)
                .unwrap();
            // The same workspace, now for one frame at a time: buffers of the wrong size
            // must not leak into the result.
            for k in 0..2 {
                let mut one = vec![0.0; cfg.image_len()];
                let fk = &f[k * cfg.n_features()..(k + 1) * cfg.n_features()];
                dec.reconstruct_batch_with(&mut ws, fk, 1, &mut one)
                    .unwrap();
                let want = &pair[k * cfg.image_len()..(k + 1) * cfg.image_len()];
                let err = one
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(err < 1e-5, "{kind} frame {k}: {err}");
            }
        }
    }

    #[test]
    fn random_decoders_are_deterministic_in_the_seed() {
        let dev = Default::default();
        let cfg = config(DecoderKind::EndToEnd);
        let f = features(&cfg, 1, 3);
        let a = reconstruct(&Decoder::<B>::random(cfg.clone(), 7, &dev).unwrap(), &f, 1);
        let b = reconstruct(&Decoder::<B>::random(cfg.clone(), 7, &dev).unwrap(), &f, 1);
        let c = reconstruct(&Decoder::<B>::random(cfg, 8, &dev).unwrap(), &f, 1);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    /// A model with a linear pathway whose weights are random (as after a fit).
    fn with_pathway(
        kind: DecoderKind,
        residual: bool,
        seed: u64,
    ) -> (DecoderConfig, DecoderModel<B>) {
        use crate::decoder::linear::{LinearPathwayConfig, LinearPathwayLayer};
        let dev = Default::default();
        let mut cfg = config(kind);
        cfg.linear_pathway = Some(LinearPathwayConfig { side: 8, residual });
        cfg.input_scale = 3.5;
        let mut model = DecoderModel::<B>::new(&cfg, seed, &dev).unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let layer = LinearPathwayLayer::<B> {
            weight: Param::from_tensor(crate::decoder::unet::normal_tensor(
                [cfg.electrodes.len(), 3 * 8 * 8],
                0.0,
                0.05,
                &mut rng,
                &dev,
            )),
            bias: Param::from_tensor(Tensor::full([3 * 8 * 8], 0.5, &dev)),
        };
        model.linear = Some(layer);
        (cfg, model)
    }

    #[test]
    fn a_linear_pathway_adds_three_channels_and_round_trips_through_save_and_load() {
        let dev = Default::default();
        let dir = tempfile::tempdir().unwrap();
        for (kind, residual) in [
            (DecoderKind::Spatial, true),
            (DecoderKind::Spatiotemporal, false),
            (DecoderKind::EndToEnd, true),
            (DecoderKind::Baseline, true),
        ] {
            let (cfg, model) = with_pathway(kind, residual, 3);
            assert_eq!(cfg.in_channels(), cfg.map_channels() + 3);
            let dec = Decoder::from_model(cfg.clone(), model, &dev).unwrap();
            let path = dir.path().join(format!("{kind}-{residual}"));
            dec.save(&path).unwrap();
            let text = std::fs::read_to_string(path.join(CONFIG_FILE)).unwrap();
            assert!(
                text.contains("linear_pathway") && text.contains("input_scale"),
                "{text}"
            );
            let loaded = Decoder::<B>::load(&path, &dev).unwrap();
            assert_eq!(loaded.config(), &cfg);
            let f = features(&cfg, 2, 7);
            assert_eq!(
                reconstruct(&dec, &f, 2),
                reconstruct(&loaded, &f, 2),
                "{kind}"
            );
            // The CPU path and Burn's ops agree with a pathway too.
            let err = host_vs_burn_ops(&dec, &f, 2);
            assert!(err < 1e-5, "{kind}: {err}");
        }
    }

    #[test]
    fn an_untrained_residual_decoder_shows_the_pathways_image() {
        let dev = Default::default();
        let (cfg, model) = with_pathway(DecoderKind::Spatial, true, 4);
        let pathway = HostLinearPathway::new(model.linear.as_ref().unwrap(), &cfg).unwrap();
        let dec = Decoder::from_model(cfg.clone(), model, &dev).unwrap();
        let f = features(&cfg, 1, 2);
        let want: Vec<f32> = pathway
            .images(&f, 1)
            .iter()
            .map(|v| v.clamp(0.0, 1.0))
            .collect();
        let got = reconstruct(&dec, &f, 1);
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-5, "{err}");
        // And it is not a constant image: the pathway carries the features.
        assert!(want.iter().any(|&v| (v - want[0]).abs() > 1e-3));
    }

    #[test]
    fn one_channel_per_electrode_is_an_end_to_end_option() {
        let dev = Default::default();
        let mut cfg = config(DecoderKind::EndToEnd);
        cfg.channel_per_electrode = true;
        assert_eq!(cfg.in_channels(), cfg.electrodes.len());
        let dec = Decoder::<B>::random(cfg.clone(), 1, &dev).unwrap();
        let mut out = vec![0.0; cfg.image_len()];
        dec.reconstruct(&features(&cfg, 1, 0), &mut out).unwrap();
        assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
        let mut spatial = config(DecoderKind::Spatial);
        spatial.channel_per_electrode = true;
        assert!(Decoder::<B>::random(spatial, 1, &dev).is_err());
    }

    #[test]
    fn save_then_load_gives_the_same_decoder() {
        let dev = Default::default();
        let dir = tempfile::tempdir().unwrap();
        for kind in [
            DecoderKind::Spatial,
            DecoderKind::EndToEnd,
            DecoderKind::Baseline,
        ] {
            let cfg = config(kind);
            let dec = Decoder::<B>::random(cfg.clone(), 11, &dev).unwrap();
            let path = dir.path().join(kind.name());
            dec.save(&path).unwrap();
            assert!(path.join(CONFIG_FILE).is_file() && path.join(WEIGHTS_FILE).is_file());
            let loaded = Decoder::<B>::load(&path, &dev).unwrap();
            assert_eq!(loaded.config(), &cfg);
            let f = features(&cfg, 1, 5);
            assert_eq!(
                reconstruct(&dec, &f, 1),
                reconstruct(&loaded, &f, 1),
                "{kind}"
            );
        }
    }

    #[test]
    fn missing_or_corrupt_files_are_errors_that_name_the_file() {
        let dev = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let err = Decoder::<B>::load(dir.path(), &dev).unwrap_err();
        assert!(err.to_string().contains(CONFIG_FILE), "{err}");

        let dec = Decoder::<B>::random(config(DecoderKind::Spatial), 1, &dev).unwrap();
        dec.save(dir.path()).unwrap();
        std::fs::write(dir.path().join(WEIGHTS_FILE), b"not a record").unwrap();
        let err = Decoder::<B>::load(dir.path(), &dev).unwrap_err();
        assert!(matches!(err, DecoderError::Weights { .. }), "{err}");
        assert!(err.to_string().contains(WEIGHTS_FILE), "{err}");

        // Weights of another shape (width 8) under a width-4 config.
        let mut wide = config(DecoderKind::Spatial);
        wide.width = 8;
        let other = tempfile::tempdir().unwrap();
        Decoder::<B>::random(wide, 1, &dev)
            .unwrap()
            .save(other.path())
            .unwrap();
        std::fs::copy(
            other.path().join(WEIGHTS_FILE),
            dir.path().join(WEIGHTS_FILE),
        )
        .unwrap();
        let err = Decoder::<B>::load(dir.path(), &dev).unwrap_err();
        assert!(matches!(err, DecoderError::Weights { .. }), "{err}");

        std::fs::remove_file(dir.path().join(WEIGHTS_FILE)).unwrap();
        let err = Decoder::<B>::load(dir.path(), &dev).unwrap_err();
        assert!(err.to_string().contains(WEIGHTS_FILE), "{err}");

        std::fs::write(dir.path().join(CONFIG_FILE), "{\"kind\": \"spatial\"").unwrap();
        let err = Decoder::<B>::load(dir.path(), &dev).unwrap_err();
        assert!(matches!(err, DecoderError::ConfigFormat { .. }), "{err}");
    }

    #[test]
    fn wrong_lengths_and_non_finite_features_are_errors() {
        let dev = Default::default();
        let cfg = config(DecoderKind::Spatial);
        let dec = Decoder::<B>::random(cfg.clone(), 1, &dev).unwrap();
        let mut out = vec![0.0; cfg.image_len()];
        assert!(matches!(
            dec.reconstruct(&[0.0; 11], &mut out),
            Err(DecoderError::Length {
                expected: 12,
                got: 11,
                ..
            })
        ));
        assert!(matches!(
            dec.reconstruct(&[0.0; 12], &mut out[1..]),
            Err(DecoderError::Length { .. })
        ));
        let mut f = vec![0.0; 12];
        f[3] = f32::NAN;
        assert!(matches!(
            dec.reconstruct(&f, &mut out),
            Err(DecoderError::NonFinite(_))
        ));
    }

    #[test]
    fn a_model_for_another_rig_is_refused_naming_both_sides() {
        let dev = Default::default();
        let cfg = config(DecoderKind::Spatial);
        let dec = Decoder::<B>::random(cfg.clone(), 1, &dev).unwrap();
        dec.check_matches(&cfg).unwrap();

        let mut rig = cfg.clone();
        rig.n_arrays = 4;
        rig.electrodes.push(ElectrodeSpec {
            array: 3,
            area: 2,
            rf_px: None,
        });
        let msg = dec.check_matches(&rig).unwrap_err().to_string();
        assert!(
            msg.contains("model expects 12 electrodes in 3 arrays, rig has 13 in 4"),
            "{msg}"
        );

        let mut rig = cfg.clone();
        rig.window_names = vec!["V1 [0,133) ms".into()];
        let msg = dec.check_matches(&rig).unwrap_err().to_string();
        assert!(msg.contains("w0") && msg.contains("V1 [0,133) ms"), "{msg}");

        let mut rig = cfg.clone();
        rig.electrodes.swap(0, 4);
        let msg = dec.check_matches(&rig).unwrap_err().to_string();
        assert!(
            msg.contains("electrode 0: model has array 0 (V1), rig has array 1 (V4)"),
            "{msg}"
        );
    }

    #[test]
    fn invalid_configs_are_refused() {
        let dev = Default::default();
        let mut cfg = config(DecoderKind::Spatial);
        cfg.image_size = 40;
        assert!(matches!(
            Decoder::<B>::random(cfg, 1, &dev),
            Err(DecoderError::InvalidConfig(_))
        ));
        let mut cfg = config(DecoderKind::Spatial);
        cfg.electrodes[2].array = 3;
        assert!(Decoder::<B>::random(cfg, 1, &dev).is_err());
        let mut cfg = config(DecoderKind::Baseline);
        cfg.windows_per_electrode = 5;
        assert!(Decoder::<B>::random(cfg, 1, &dev).is_err());
    }

    #[test]
    fn config_round_trips_through_json_with_kebab_case_kinds() {
        let cfg = config(DecoderKind::EndToEnd);
        let text = serde_json::to_string(&cfg).unwrap();
        assert!(text.contains("\"end-to-end\""), "{text}");
        let back: DecoderConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, cfg);
    }
}
