//! Input layers: electrode responses → an image-shaped tensor for the U-Net (DESIGN §2).
//!
//! - [`FixedRfMaps`] (spatial and spatiotemporal models): plain Rust, built once from
//!   the rig's RF table; [`FixedRfMaps::fill`] never allocates.
//! - [`GaussianRfLayer`] (end-to-end model): learned isotropic Gaussian RF per electrode,
//!   evaluated separably as `Gyᵀ · diag(r) · Gx` per array.
//! - [`DenseMapLayer`] (baseline): a learned dense map per area from its electrodes to the grid.
//!
//! Coordinates: pixel (x, y) has its centre at (x + 0.5, y + 0.5); (0, 0) is the top-left
//! corner of the image. An RF centre at x ∈ [j, j + 1) marks pixel column j.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;

use super::unet::normal_tensor;
use super::{host_values, DecoderConfig, DecoderError, DecoderKind, N_AREAS};

/// Which input channel (and which feature) each electrode's window feeds, per decoder kind.
///
/// Features are window-major: feature `w * n_electrodes + e` is window `w` of electrode `e`.
fn channel_of(config: &DecoderConfig, electrode: usize, window: usize) -> usize {
    let spec = &config.electrodes[electrode];
    match config.kind {
        DecoderKind::Spatiotemporal => spec.area * config.windows_per_electrode + window,
        DecoderKind::Baseline => spec.area,
        DecoderKind::EndToEnd if config.channel_per_electrode => electrode,
        DecoderKind::Spatial | DecoderKind::EndToEnd => spec.array,
    }
}

/// Fixed RF maps: each electrode's RF centre marks one pixel of its channel; where several
/// electrodes share a pixel in a channel their responses are averaged. Electrodes without an
/// RF are skipped; an RF centre outside the grid is clamped to the nearest edge pixel.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedRfMaps {
    n_channels: usize,
    image_size: usize,
    /// Flat index `channel * H * W + y * W + x` of each marked pixel.
    targets: Vec<u32>,
    /// `features[starts[i]..starts[i + 1]]` are the features averaged into `targets[i]`.
    starts: Vec<u32>,
    features: Vec<u32>,
    /// `1 / count` per target.
    scale: Vec<f32>,
    n_features: usize,
    skipped: usize,
}

impl FixedRfMaps {
    /// Precomputes the pixel lists for `config` (any kind; normally Spatial or Spatiotemporal).
    pub fn build(config: &DecoderConfig) -> Result<Self, DecoderError> {
        config.validate()?;
        let size = config.image_size;
        let n_e = config.electrodes.len();
        let wpe = config.windows_per_electrode;
        let n_channels = config.map_channels();
        let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(n_e * wpe);
        let mut skipped = 0;
        for (e, spec) in config.electrodes.iter().enumerate() {
            let Some([x, y, _]) = spec.rf_px else {
                skipped += 1;
                continue;
            };
            let px = pixel_index(x, size);
            let py = pixel_index(y, size);
            for w in 0..wpe {
                let c = channel_of(config, e, w);
                let target = (c * size + py) * size + px;
                pairs.push((target as u32, (w * n_e + e) as u32));
            }
        }
        pairs.sort_unstable();
        let mut targets = Vec::new();
        let mut starts = Vec::new();
        let mut features = Vec::with_capacity(pairs.len());
        for (i, &(t, f)) in pairs.iter().enumerate() {
            if i == 0 || pairs[i - 1].0 != t {
                targets.push(t);
                starts.push(features.len() as u32);
            }
            features.push(f);
        }
        starts.push(features.len() as u32);
        let scale = starts
            .windows(2)
            .map(|s| 1.0 / (s[1] - s[0]) as f32)
            .collect();
        Ok(Self {
            n_channels,
            image_size: size,
            targets,
            starts,
            features,
            scale,
            n_features: n_e * wpe,
            skipped,
        })
    }

    /// Channels of the image [`FixedRfMaps::fill`] writes.
    pub fn n_channels(&self) -> usize {
        self.n_channels
    }

    /// Length of the image [`FixedRfMaps::fill`] writes: channels × H × W.
    pub fn image_len(&self) -> usize {
        self.n_channels * self.image_size * self.image_size
    }

    /// Electrodes left out because they have no RF.
    pub fn skipped_electrodes(&self) -> usize {
        self.skipped
    }

    /// Writes the input image `[channels][H][W]` for one feature vector. Never allocates.
    ///
    /// `features.len()` must be [`DecoderConfig::n_features`] and `out.len()`
    /// [`FixedRfMaps::image_len`]; the caller checks (a mismatch panics on indexing).
    pub fn fill(&self, features: &[f32], out: &mut [f32]) {
        debug_assert_eq!(features.len(), self.n_features);
        debug_assert_eq!(out.len(), self.image_len());
        out.fill(0.0);
        for (i, &t) in self.targets.iter().enumerate() {
            let range = self.starts[i] as usize..self.starts[i + 1] as usize;
            let sum: f32 = self.features[range]
                .iter()
                .map(|&f| features[f as usize])
                .sum();
            out[t as usize] = sum * self.scale[i];
        }
    }
}

/// Pixel index of a coordinate, clamped into the grid (NaN maps to 0).
fn pixel_index(v: f32, size: usize) -> usize {
    if v.is_nan() || v < 0.0 {
        0
    } else {
        (v.floor() as usize).min(size - 1)
    }
}

/// Slot layout shared by the per-array layers: electrodes of each array padded to the
/// largest array, in feature order within an array.
#[derive(Debug, Clone, PartialEq)]
pub struct ArraySlots {
    pub n_arrays: usize,
    pub max_per_array: usize,
    /// Electrode index of each slot `array * max_per_array + j` (0 for padding).
    pub electrode: Vec<usize>,
    /// 1 for a real electrode, 0 for padding.
    pub mask: Vec<f32>,
}

impl ArraySlots {
    /// Groups the electrodes of `config` by input channel: by array (or one each, with
    /// `channel_per_electrode`).
    pub fn new(config: &DecoderConfig) -> Self {
        let n_arrays = config.map_channels();
        let mut per_array: Vec<Vec<usize>> = vec![Vec::new(); n_arrays];
        for e in 0..config.electrodes.len() {
            per_array[channel_of(config, e, 0)].push(e);
        }
        let max_per_array = per_array.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut electrode = vec![0; n_arrays * max_per_array];
        let mut mask = vec![0.0; n_arrays * max_per_array];
        for (a, list) in per_array.iter().enumerate() {
            for (j, &e) in list.iter().enumerate() {
                electrode[a * max_per_array + j] = e;
                mask[a * max_per_array + j] = 1.0;
            }
        }
        Self {
            n_arrays,
            max_per_array,
            electrode,
            mask,
        }
    }
}

/// Inverse of softplus: the raw value whose softplus is `s` (s > 0).
fn inverse_softplus(s: f32) -> f32 {
    let s = s.max(1e-3);
    if s > 20.0 {
        s
    } else {
        (s.exp() - 1.0).ln()
    }
}

/// Per array, the mean RF (μx, μy, σ) of its electrodes that have one; `None` for an array
/// without any.
pub fn array_mean_rfs(config: &DecoderConfig) -> Vec<Option<[f32; 3]>> {
    let mut sums = vec![([0.0f64; 3], 0usize); config.n_arrays];
    for spec in &config.electrodes {
        if let Some(rf) = spec.rf_px {
            let s = &mut sums[spec.array];
            for (sum, v) in s.0.iter_mut().zip(rf) {
                *sum += f64::from(v);
            }
            s.1 += 1;
        }
    }
    sums.into_iter()
        .map(|(sum, n)| (n > 0).then(|| sum.map(|v| (v / n as f64) as f32)))
        .collect()
}

/// Initial (μx, μy, σ) per electrode, in pixels: the electrode's RF when known, else the mean
/// of its array's known RFs, else the image centre with σ = image_size / 8.
pub fn initial_rfs(config: &DecoderConfig) -> Vec<[f32; 3]> {
    let size = config.image_size as f32;
    let default = [size / 2.0, size / 2.0, size / 8.0];
    let means = array_mean_rfs(config);
    config
        .electrodes
        .iter()
        .map(|spec| spec.rf_px.or(means[spec.array]).unwrap_or(default))
        .map(|[x, y, s]| {
            let s = if s.is_finite() && s > 0.0 {
                s
            } else {
                default[2]
            };
            [x, y, s]
        })
        .collect()
}

/// Learned Gaussian receptive fields (end-to-end model): per electrode (μx, μy, σ) in
/// pixels, σ = softplus(`sigma_raw`). Each array's channel is Σₑ rₑ · G(μₑ, σₑ), with the
/// Gaussian at peak 1, computed separably as `Gyᵀ · diag(r) · Gx`.
#[derive(Module, Debug)]
pub struct GaussianRfLayer<B: Backend> {
    /// RF centre x per electrode, pixels. `[electrodes]`
    pub mu_x: Param<Tensor<B, 1>>,
    /// RF centre y per electrode, pixels. `[electrodes]`
    pub mu_y: Param<Tensor<B, 1>>,
    /// Pre-softplus RF size per electrode. `[electrodes]`
    pub sigma_raw: Param<Tensor<B, 1>>,
    /// Electrode index per array slot. `[arrays * max_per_array]`
    slot_electrode: Tensor<B, 1, Int>,
    /// 1 for a real electrode, 0 for padding. `[arrays, max_per_array, 1]`
    slot_mask: Tensor<B, 3>,
    /// Pixel-centre coordinates 0.5, 1.5, … over a row of ones. `[1, 2, size]`
    grid: Tensor<B, 3>,
    /// The same, transposed. `[1, size, 2]`
    grid_t: Tensor<B, 3>,
    n_arrays: usize,
    max_per_array: usize,
    image_size: usize,
}

impl<B: Backend> GaussianRfLayer<B> {
    /// A layer initialised from the config's RF table (see [`initial_rfs`]).
    pub fn new(config: &DecoderConfig, device: &B::Device) -> Self {
        let rfs = initial_rfs(config);
        let n = rfs.len();
        let column = |k: usize, f: fn(f32) -> f32| -> Param<Tensor<B, 1>> {
            let values: Vec<f32> = rfs.iter().map(|rf| f(rf[k])).collect();
            Param::from_tensor(Tensor::from_data(TensorData::new(values, [n]), device))
        };
        let slots = ArraySlots::new(config);
        let n_slots = slots.electrode.len();
        let electrode: Vec<i64> = slots.electrode.iter().map(|&e| e as i64).collect();
        let size = config.image_size;
        let centres = (0..size).map(|i| i as f32 + 0.5);
        let grid: Vec<f32> = centres.clone().chain((0..size).map(|_| 1.0)).collect();
        let grid_t: Vec<f32> = centres.flat_map(|c| [c, 1.0]).collect();
        Self {
            mu_x: column(0, |v| v),
            mu_y: column(1, |v| v),
            sigma_raw: column(2, inverse_softplus),
            slot_electrode: Tensor::from_data(TensorData::new(electrode, [n_slots]), device),
            slot_mask: Tensor::from_data(
                TensorData::new(slots.mask, [slots.n_arrays, slots.max_per_array, 1]),
                device,
            ),
            grid: Tensor::from_data(TensorData::new(grid, [1, 2, size]), device),
            grid_t: Tensor::from_data(TensorData::new(grid_t, [1, size, 2]), device),
            n_arrays: slots.n_arrays,
            max_per_array: slots.max_per_array,
            image_size: size,
        }
    }

    /// RF size σ per electrode, pixels. `[electrodes]`
    ///
    /// Softplus written as `max(x, 0) + ln(1 + e^(−|x|))`: Burn's `softplus` overflows
    /// `e^x` for x > 88 and its gradient becomes NaN, which a large IT RF (σ ≈ 100 px,
    /// found in training) reaches.
    pub fn sigma(&self) -> Tensor<B, 1> {
        let x = self.sigma_raw.val();
        x.clone().clamp_min(0.0) + x.abs().neg().exp().add_scalar(1.0).log()
    }

    /// The separable factors per array slot: `(gy_t [arrays, H, max_per_array],
    /// gx [arrays, max_per_array, W])`, zero in padding slots and wherever the Gaussian is
    /// below [`GAUSSIAN_CUTOFF`]. Differentiable in μ and σ.
    ///
    /// z = (x − μ) / (σ√2) comes out of a tiny matrix product, `[1/(σ√2), −μ/(σ√2)] · [x; 1]`,
    /// so no tensor op broadcasts (a broadcasting op on Flex 0.21 costs ~20× a same-shape
    /// one); the tails are cut to exact zeros because, left in, they underflow to denormals
    /// and make the products ~10× slower on x86.
    pub fn factors(&self) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let (a, m) = (self.n_arrays, self.max_per_array);
        let slot = |t: Tensor<B, 1>| t.select(0, self.slot_electrode.clone()).reshape([a, m, 1]);
        // 1 / (σ√2), zero in padding, where the offset PADDING_Z puts the Gaussian below the cutoff.
        let mask = self.slot_mask.clone(); // [A, M, 1]
        let scale = slot(self.sigma())
            .mul_scalar(std::f64::consts::SQRT_2)
            .recip()
            * mask.clone(); // [A, M, 1]
        let pad = mask.neg().add_scalar(1.0).mul_scalar(PADDING_Z); // [A, M, 1]
        let coef = |mu: Tensor<B, 3>| {
            let offset = (mu * scale.clone()).neg() + pad.clone(); // [A, M, 1]
            Tensor::cat(vec![scale.clone(), offset], 2) // [A, M, 2]
        };
        let gauss = |z: Tensor<B, 3>| {
            let g = z.powi_scalar(2).neg().exp();
            g.clone().mask_fill(g.lower_elem(GAUSSIAN_CUTOFF), 0.0)
        };
        let gx = gauss(coef(slot(self.mu_x.val())).matmul(self.grid.clone())); // [A, M, W]
        let gy_t = gauss(
            self.grid_t
                .clone()
                .matmul(coef(slot(self.mu_y.val())).swap_dims(1, 2)),
        ); // [A, H, M]
        (gy_t, gx)
    }

    /// Responses `[batch, electrodes]` → one channel per array `[batch, arrays, H, W]`.
    pub fn forward(&self, r: Tensor<B, 2>) -> Tensor<B, 4> {
        let (gy_t, gx) = self.factors();
        let [batch, _] = r.dims();
        let r = r.select(1, self.slot_electrode.clone()).reshape([
            batch,
            self.n_arrays,
            self.max_per_array,
            1,
        ]); // [batch, A, M, 1]
        apply_separable(gy_t, gx, r)
    }

    /// Arrays (output channels).
    pub fn n_arrays(&self) -> usize {
        self.n_arrays
    }

    /// Slots: arrays × the largest array's electrodes (see [`ArraySlots`]).
    pub fn n_slots(&self) -> usize {
        self.n_arrays * self.max_per_array
    }

    /// Responses `[batch, electrodes]` in slot order `[batch, slots]` (padding slots repeat
    /// electrode 0; [`GaussianRfLayer::slot_mask_row`] masks them).
    pub fn slot_responses(&self, r: Tensor<B, 2>) -> Tensor<B, 2> {
        r.select(1, self.slot_electrode.clone())
    }

    /// 1 for a slot with an electrode, 0 for padding. `[1, slots]`
    pub fn slot_mask_row(&self) -> Tensor<B, 2> {
        self.slot_mask.clone().reshape([1, self.n_slots()])
    }

    /// Image side in pixels.
    pub fn image_size(&self) -> usize {
        self.image_size
    }
}

/// `Gyᵀ · diag(r) · Gx` per array, computed as `Gyᵀ · (r ∘ Gx)`: gy_t `[A, H, M]`,
/// gx `[A, M, W]` (zero in padding), slot responses `r: [batch, A, M, 1]` → `[batch, A, H, W]`.
///
/// r is spread along W (and Gx along the batch) by rank-1 products with a ones vector,
/// which are exact and ~20× faster than Flex 0.21's broadcasting multiply.
pub fn apply_separable<B: Backend>(
    gy_t: Tensor<B, 3>,
    gx: Tensor<B, 3>,
    r: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [batch, a, m, _] = r.dims();
    let [_, _, w] = gx.dims();
    let device = gx.device();
    let r_rows = r
        .reshape([batch, a * m, 1])
        .matmul(Tensor::ones([1, 1, w], &device)); // [batch, A·M, W]
    let gx_rows = if batch == 1 {
        gx.reshape([1, a * m, w])
    } else {
        Tensor::<B, 2>::ones([batch, 1], &device)
            .matmul(gx.reshape([1, a * m * w]))
            .reshape([batch, a * m, w])
    }; // [batch, A·M, W]
    let scaled = (r_rows * gx_rows).reshape([batch, a, m, w]); // [batch, A, M, W]
    gy_t.unsqueeze::<4>().matmul(scaled) // [batch, A, H, W]
}

/// The learned Gaussian maps frozen for inference, on the host: per electrode its 1-D
/// factors gx `[W]`, gy `[H]` and the pixel ranges where they exceed [`GAUSSIAN_CUTOFF`].
/// [`CachedGaussianMaps::fill`] adds `r · gy ⊗ gx` over those boxes only (≈ ±5.7σ), so its
/// cost follows the RF sizes instead of electrodes × H × W. Never allocates.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedGaussianMaps {
    n_arrays: usize,
    image_size: usize,
    /// Array (output channel) per electrode.
    array: Vec<usize>,
    /// `[electrodes][W]`, then `[electrodes][H]`.
    gx: Vec<f32>,
    gy: Vec<f32>,
    /// Per electrode: x range, y range where the factor exceeds the cutoff.
    boxes: Vec<[usize; 4]>,
}

/// z = (x − μ)/(σ√2) given to padding slots: exp(−25) is below [`GAUSSIAN_CUTOFF`].
const PADDING_Z: f64 = 5.0;

/// Gaussian factor values below this (peak 1, reached at ≈ ±5.7σ) are set to zero in
/// [`GaussianRfLayer::factors`]: each map value moves by less than `1e-7 · Σ|r|` of the
/// electrodes that overlap it, and the product never meets a denormal.
pub const GAUSSIAN_CUTOFF: f32 = 1e-7;

impl CachedGaussianMaps {
    /// Freezes `layer`'s current RFs.
    pub fn new<B: Backend>(
        layer: &GaussianRfLayer<B>,
        config: &DecoderConfig,
    ) -> Result<Self, DecoderError> {
        let size = layer.image_size;
        let (gy_t, gx_slots) = layer.factors(); // [A, H, M], [A, M, W]
        let (gy_t, gx_slots) = (host_values(gy_t)?, host_values(gx_slots)?);
        let m = layer.max_per_array;
        let slots = ArraySlots::new(config);
        let n_e = config.electrodes.len();
        let mut gx = vec![0.0f32; n_e * size];
        let mut gy = vec![0.0f32; n_e * size];
        for (slot, (&e, &mask)) in slots.electrode.iter().zip(&slots.mask).enumerate() {
            if mask == 0.0 {
                continue;
            }
            gx[e * size..(e + 1) * size].copy_from_slice(&gx_slots[slot * size..(slot + 1) * size]);
            let (a, j) = (slot / m, slot % m);
            for h in 0..size {
                gy[e * size + h] = gy_t[(a * size + h) * m + j];
            }
        }
        let range = |g: &[f32]| {
            let lo = g.iter().position(|&v| v > GAUSSIAN_CUTOFF).unwrap_or(0);
            let hi = g
                .iter()
                .rposition(|&v| v > GAUSSIAN_CUTOFF)
                .map_or(0, |i| i + 1);
            (lo, hi.max(lo))
        };
        let boxes = (0..n_e)
            .map(|e| {
                let (x0, x1) = range(&gx[e * size..(e + 1) * size]);
                let (y0, y1) = range(&gy[e * size..(e + 1) * size]);
                [x0, x1, y0, y1]
            })
            .collect();
        Ok(Self {
            n_arrays: layer.n_arrays,
            image_size: size,
            array: (0..n_e).map(|e| channel_of(config, e, 0)).collect(),
            gx,
            gy,
            boxes,
        })
    }

    /// Length of the image [`CachedGaussianMaps::fill`] writes: arrays × H × W.
    pub fn image_len(&self) -> usize {
        self.n_arrays * self.image_size * self.image_size
    }

    /// Writes `[arrays][H][W]` for one response vector `[electrodes]`.
    pub fn fill(&self, responses: &[f32], out: &mut [f32]) {
        let size = self.image_size;
        debug_assert_eq!(responses.len(), self.array.len());
        debug_assert_eq!(out.len(), self.image_len());
        out.fill(0.0);
        for (e, (&r, &[x0, x1, y0, y1])) in responses.iter().zip(&self.boxes).enumerate() {
            if r == 0.0 {
                continue;
            }
            let plane = &mut out[self.array[e] * size * size..(self.array[e] + 1) * size * size];
            let gx = &self.gx[e * size + x0..e * size + x1];
            for h in y0..y1 {
                let c = r * self.gy[e * size + h];
                let row = &mut plane[h * size + x0..h * size + x1];
                for (o, &g) in row.iter_mut().zip(gx) {
                    *o += c * g;
                }
            }
        }
    }
}

/// Baseline input layer: per area, a learned dense linear map from that area's electrodes
/// to the H × W grid, giving three channels (V1, V4, IT).
#[derive(Module, Debug)]
pub struct DenseMapLayer<B: Backend> {
    /// `[electrodes in area order, H * W]`: rows of V1's electrodes, then V4's, then IT's.
    pub weight: Param<Tensor<B, 2>>,
    /// `[3, H * W]`
    pub bias: Param<Tensor<B, 2>>,
    /// Feature index of each weight row. `[electrodes]`
    order: Tensor<B, 1, Int>,
    area_counts: [usize; N_AREAS],
    image_size: usize,
}

impl<B: Backend> DenseMapLayer<B> {
    /// Weights ~ N(0, 0.02) from `rng`, biases 0.
    pub fn new(config: &DecoderConfig, rng: &mut StdRng, device: &B::Device) -> Self {
        let mut order: Vec<i64> = Vec::with_capacity(config.electrodes.len());
        let mut area_counts = [0; N_AREAS];
        for (area, count) in area_counts.iter_mut().enumerate() {
            for (e, spec) in config.electrodes.iter().enumerate() {
                if spec.area == area {
                    order.push(e as i64);
                    *count += 1;
                }
            }
        }
        let n = order.len();
        let pixels = config.image_size * config.image_size;
        Self {
            weight: Param::from_tensor(normal_tensor([n, pixels], 0.0, 0.02, rng, device)),
            bias: Param::from_tensor(Tensor::zeros([N_AREAS, pixels], device)),
            order: Tensor::from_data(TensorData::new(order, [n]), device),
            area_counts,
            image_size: config.image_size,
        }
    }

    /// Responses `[batch, electrodes]` → `[batch, 3, H, W]`.
    pub fn forward(&self, r: Tensor<B, 2>) -> Tensor<B, 4> {
        let [batch, _] = r.dims();
        let size = self.image_size;
        let pixels = size * size;
        let r = r.select(1, self.order.clone()); // [batch, electrodes] in area order
        let weight = self.weight.val();
        let bias = self.bias.val();
        let mut start = 0;
        let mut channels = Vec::with_capacity(N_AREAS);
        for (area, &count) in self.area_counts.iter().enumerate() {
            let b = bias.clone().narrow(0, area, 1); // [1, H*W]
            let c = if count == 0 {
                b.expand([batch, pixels])
            } else {
                let ra = r.clone().narrow(1, start, count); // [batch, count]
                let wa = weight.clone().narrow(0, start, count); // [count, H*W]
                ra.matmul(wa) + b // [batch, H*W]
            };
            channels.push(c.reshape([batch, 1, size, size]));
            start += count;
        }
        Tensor::cat(channels, 1) // [batch, 3, H, W]
    }
}

/// The baseline's dense maps on the host, frozen (the CPU path): per area,
/// `responses[area's electrodes] · weight[area's rows] + bias`, one channel each.
#[derive(Debug, Clone)]
pub struct HostDenseMaps {
    /// `[electrodes in area order][H·W]`
    weight: Vec<f32>,
    /// `[3][H·W]`
    bias: Vec<f32>,
    /// Feature index of each weight row.
    order: Vec<usize>,
    area_counts: [usize; N_AREAS],
    pixels: usize,
}

impl HostDenseMaps {
    /// The layer's weights, copied to the host.
    pub fn new<B: Backend>(layer: &DenseMapLayer<B>) -> Result<Self, DecoderError> {
        let order = layer
            .order
            .clone()
            .into_data()
            .convert::<i64>()
            .into_vec::<i64>()
            .map_err(|e| DecoderError::Output(format!("{e:?}")))?;
        let pixels = layer.image_size * layer.image_size;
        Ok(Self {
            weight: host_values(layer.weight.val())?,
            bias: host_values(layer.bias.val())?,
            order: order.into_iter().map(|i| i.max(0) as usize).collect(),
            area_counts: layer.area_counts,
            pixels,
        })
    }

    /// Electrodes the layer reads (the length of [`HostDenseMaps::fill`]'s scratch).
    pub fn electrodes(&self) -> usize {
        self.order.len()
    }

    /// Writes `[3][H][W]` for one response vector; `gathered` (at least
    /// [`HostDenseMaps::electrodes`] long) holds the responses in area order. Allocates
    /// nothing once this thread has run a faer product.
    pub fn fill(&self, responses: &[f32], gathered: &mut [f32], out: &mut [f32]) {
        for (g, &e) in gathered.iter_mut().zip(&self.order) {
            *g = responses[e];
        }
        out.copy_from_slice(&self.bias);
        let mut start = 0;
        for (area, &count) in self.area_counts.iter().enumerate() {
            if count > 0 {
                let channel = &mut out[area * self.pixels..(area + 1) * self.pixels];
                super::kernels::product_seq(
                    faer::MatMut::from_row_major_slice_mut(channel, 1, self.pixels),
                    faer::MatRef::from_row_major_slice(&gathered[start..start + count], 1, count),
                    faer::MatRef::from_row_major_slice(
                        &self.weight[start * self.pixels..(start + count) * self.pixels],
                        count,
                        self.pixels,
                    ),
                    true,
                );
            }
            start += count;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::{CpuBackend as B, ElectrodeSpec};
    use rand::SeedableRng;

    fn electrode(array: usize, area: usize, rf: Option<[f32; 3]>) -> ElectrodeSpec {
        ElectrodeSpec {
            array,
            area,
            rf_px: rf,
        }
    }

    #[test]
    fn electrodes_sharing_a_pixel_are_averaged_in_their_arrays_channel() {
        let cfg = DecoderConfig::for_test(
            DecoderKind::Spatial,
            2,
            1,
            vec![
                electrode(0, 0, Some([3.2, 5.9, 1.0])),
                electrode(0, 0, Some([3.7, 5.1, 1.0])),
                electrode(1, 1, Some([3.5, 5.5, 1.0])),
            ],
        );
        let maps = FixedRfMaps::build(&cfg).unwrap();
        assert_eq!(maps.n_channels(), 2);
        let mut out = vec![9.0; maps.image_len()];
        maps.fill(&[1.0, 3.0, -4.0], &mut out);
        let at = |c: usize, y: usize, x: usize| out[(c * 32 + y) * 32 + x];
        assert_eq!(at(0, 5, 3), 2.0);
        assert_eq!(at(1, 5, 3), -4.0);
        assert_eq!(out.iter().filter(|&&v| v != 0.0).count(), 2);
    }

    #[test]
    fn electrodes_without_rf_are_skipped_and_outside_rfs_are_clamped() {
        let cfg = DecoderConfig::for_test(
            DecoderKind::Spatial,
            1,
            1,
            vec![
                electrode(0, 0, None),
                electrode(0, 0, Some([-5.0, 40.0, 1.0])),
                electrode(0, 0, Some([100.0, -1.0, 1.0])),
            ],
        );
        let maps = FixedRfMaps::build(&cfg).unwrap();
        assert_eq!(maps.skipped_electrodes(), 1);
        let mut out = vec![0.0; maps.image_len()];
        maps.fill(&[7.0, 1.0, 2.0], &mut out);
        assert_eq!(out[31 * 32], 1.0); // x clamped to 0, y to 31
        assert_eq!(out[31], 2.0); // x clamped to 31, y to 0
        assert_eq!(out.iter().sum::<f32>(), 3.0);
    }

    #[test]
    fn spatiotemporal_channels_are_area_major_then_window_with_window_major_features() {
        // Electrode 0 in V4 (area 1), electrode 1 in IT (area 2); 5 windows.
        let cfg = DecoderConfig::for_test(
            DecoderKind::Spatiotemporal,
            2,
            5,
            vec![
                electrode(0, 1, Some([1.0, 2.0, 1.0])),
                electrode(1, 2, Some([4.0, 4.0, 1.0])),
            ],
        );
        let maps = FixedRfMaps::build(&cfg).unwrap();
        assert_eq!(maps.n_channels(), 15);
        // features[w * 2 + e] = 10 w + e
        let features: Vec<f32> = (0..10).map(|i| (10 * (i / 2) + i % 2) as f32).collect();
        let mut out = vec![0.0; maps.image_len()];
        maps.fill(&features, &mut out);
        for w in 0..5 {
            assert_eq!(out[((5 + w) * 32 + 2) * 32 + 1], (10 * w) as f32, "V4 w{w}");
            assert_eq!(
                out[((10 + w) * 32 + 4) * 32 + 4],
                (10 * w + 1) as f32,
                "IT w{w}"
            );
        }
        assert_eq!(
            out[..5 * 32 * 32].iter().filter(|&&v| v != 0.0).count(),
            0,
            "V1 is empty"
        );
    }

    #[test]
    fn gaussian_rf_layer_equals_the_dense_gaussian_sum_per_array() {
        let dev = Default::default();
        let cfg = DecoderConfig::for_test(
            DecoderKind::EndToEnd,
            2,
            1,
            vec![
                electrode(0, 0, Some([10.0, 12.0, 2.0])),
                electrode(1, 0, Some([20.0, 8.0, 3.0])),
                electrode(0, 0, Some([4.0, 25.0, 1.5])),
            ],
        );
        let layer = GaussianRfLayer::<B>::new(&cfg, &dev);
        let r = [0.5f32, -1.0, 2.0];
        let out = layer
            .forward(Tensor::from_data(TensorData::new(r.to_vec(), [1, 3]), &dev))
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(out.len(), 2 * 32 * 32);
        let mut max_err = 0.0f32;
        for c in 0..2 {
            for y in 0..32 {
                for x in 0..32 {
                    let mut want = 0.0f32;
                    for (e, spec) in cfg.electrodes.iter().enumerate() {
                        let [mx, my, s] = spec.rf_px.unwrap();
                        if spec.array == c {
                            let d2 = (x as f32 + 0.5 - mx).powi(2) + (y as f32 + 0.5 - my).powi(2);
                            want += r[e] * (-d2 / (2.0 * s * s)).exp();
                        }
                    }
                    max_err = max_err.max((out[(c * 32 + y) * 32 + x] - want).abs());
                }
            }
        }
        assert!(max_err < 1e-4, "{max_err}");
        let sigma = layer.sigma().into_data().to_vec::<f32>().unwrap();
        for (s, want) in sigma.iter().zip([2.0, 3.0, 1.5]) {
            assert!((s - want).abs() < 1e-4, "σ {s} ≠ {want}");
        }
    }

    #[test]
    fn cached_gaussian_maps_equal_the_layer() {
        let dev = Default::default();
        let electrodes = (0..40)
            .map(|e| {
                electrode(
                    e % 3,
                    0,
                    (e % 7 != 0).then(|| {
                        [
                            (e * 3 % 32) as f32,
                            (e * 5 % 32) as f32,
                            0.5 + (e % 6) as f32,
                        ]
                    }),
                )
            })
            .collect();
        let cfg = DecoderConfig::for_test(DecoderKind::EndToEnd, 3, 1, electrodes);
        let layer = GaussianRfLayer::<B>::new(&cfg, &dev);
        let r: Vec<f32> = (0..40).map(|e| (e as f32 * 0.37).sin()).collect();
        let want = layer
            .forward(Tensor::from_data(TensorData::new(r.clone(), [1, 40]), &dev))
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let maps = CachedGaussianMaps::new(&layer, &cfg).unwrap();
        let mut got = vec![1.0; maps.image_len()];
        maps.fill(&r, &mut got);
        let err = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-5, "{err}");
    }

    #[test]
    fn rf_init_falls_back_to_the_array_mean_then_the_image_centre() {
        let cfg = DecoderConfig::for_test(
            DecoderKind::EndToEnd,
            2,
            1,
            vec![
                electrode(0, 0, Some([10.0, 12.0, 2.0])),
                electrode(0, 0, Some([20.0, 14.0, 4.0])),
                electrode(0, 0, None),
                electrode(1, 0, None),
            ],
        );
        let rfs = initial_rfs(&cfg);
        assert_eq!(rfs[2], [15.0, 13.0, 3.0]);
        assert_eq!(rfs[3], [16.0, 16.0, 4.0]);
    }

    #[test]
    fn dense_map_layer_keeps_each_area_in_its_channel() {
        let dev = Default::default();
        let cfg = DecoderConfig::for_test(
            DecoderKind::Baseline,
            1,
            1,
            vec![
                electrode(0, 2, None),
                electrode(0, 0, None),
                electrode(0, 2, None),
            ],
        );
        let mut rng = StdRng::seed_from_u64(3);
        let layer = DenseMapLayer::<B>::new(&cfg, &mut rng, &dev);
        let run = |r: Vec<f32>| {
            layer
                .forward(Tensor::from_data(TensorData::new(r, [1, 3]), &dev))
                .into_data()
                .to_vec::<f32>()
                .unwrap()
        };
        let only_v1 = run(vec![0.0, 1.0, 0.0]);
        let plane = 32 * 32;
        assert!(only_v1[..plane].iter().any(|&v| v != 0.0));
        assert!(
            only_v1[plane..].iter().all(|&v| v == 0.0),
            "V4 and IT stay at their bias (0)"
        );
        let only_it = run(vec![1.0, 0.0, -1.0]);
        assert!(only_it[..2 * plane].iter().all(|&v| v == 0.0));
        assert!(only_it[2 * plane..].iter().any(|&v| v != 0.0));
    }
}
