//! The linear decoder: ridge regression from window features to pixels, the reference a
//! CNN decoder has to beat (`eval`'s `linear` entries).
//!
//! With the features X `[n][p]` and images Y `[n][q]` of the fitting trials, X centred on
//! its column means (the intercept is the mean image):
//! `W(λ) = (XᵀX + λI)⁻¹ XᵀY = V diag(1/(s + λ)) Vᵀ XᵀY` with `XᵀX = V diag(s) Vᵀ`. One
//! eigendecomposition (p × p, faer) and one product `A = Vᵀ XᵀY` give the whole
//! regularisation path; each λ then costs a product on the validation trials only. The
//! large products are [`matmul`] (gemm).
//!
//! λ is chosen on a validation fold (the last trials given) by the mean Pearson r of the
//! predicted and true images, from a grid relative to the mean eigenvalue `tr(XᵀX)/p`; the
//! decoder is then refitted on every trial with that λ.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::kernels::{bilinear_matrix, matmul, product_seq, MatRef};
use super::{host_values, DecoderConfig, DecoderError};

/// The linear pathway of a decoder (`decoder.json`): a ridge regression from every
/// electrode's window mean (the mean over the decoder's windows) to a coarse RGB image,
/// upsampled bilinearly to the image size and given to the U-Net as three more input
/// channels. It carries what a per-array RF map cannot: codes that are not retinotopic
/// (IT, V4), read out per electrode. Fitted in closed form by `train` and then frozen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearPathwayConfig {
    /// Side of the coarse image (it divides the image size; 24 for 96 px).
    pub side: usize,
    /// The U-Net corrects the pathway's image (`clamp(image + U-Net, 0, 1)`, the U-Net's
    /// head starting at zero) instead of drawing its own (`sigmoid(U-Net)`).
    pub residual: bool,
}

/// The pathway's weights as a Burn module (what `weights.mpk` holds of it).
#[derive(Module, Debug)]
pub struct LinearPathwayLayer<B: Backend> {
    /// `[electrodes, 3·side²]`
    pub weight: Param<Tensor<B, 2>>,
    /// `[3·side²]`: the coarse image for all-zero features.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> LinearPathwayLayer<B> {
    /// All zeros (the weights come from a fit or a record).
    pub fn new(config: &DecoderConfig, side: usize, device: &B::Device) -> Self {
        let (e, q) = (config.electrodes.len(), 3 * side * side);
        Self {
            weight: Param::from_tensor(Tensor::zeros([e, q], device)),
            bias: Param::from_tensor(Tensor::zeros([q], device)),
        }
    }

    /// The fitted decoder `y = (x − x̄)·W + ȳ` as `x·W + (ȳ − x̄·W)`.
    pub fn from_fit(fit: &LinearDecoder, device: &B::Device) -> Self {
        let (p, q) = (fit.n_features, fit.n_outputs);
        let mut bias = fit.output_mean.clone();
        let mut shift = vec![0.0f32; q];
        matmul(
            &mut shift,
            MatRef::new(&fit.feature_mean, 1, p),
            MatRef::new(&fit.weights, p, q),
            false,
        );
        bias.iter_mut().zip(&shift).for_each(|(b, s)| *b -= s);
        Self {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(fit.weights.clone(), [p, q]),
                device,
            )),
            bias: Param::from_tensor(Tensor::from_data(TensorData::new(bias, [q]), device)),
        }
    }
}

/// The pathway on the host: features `[windows][electrodes]` → upsampled image `[3][H][W]`.
#[derive(Debug, Clone)]
pub struct HostLinearPathway {
    /// `[electrodes][3·side²]`
    weight: Vec<f32>,
    bias: Vec<f32>,
    windows: usize,
    electrodes: usize,
    side: usize,
    size: usize,
    /// Bilinear `[size][side]`.
    up: Vec<f32>,
}

impl HostLinearPathway {
    /// The pathway of `config` with the weights of `layer`.
    pub fn new<B: Backend>(
        layer: &LinearPathwayLayer<B>,
        config: &DecoderConfig,
    ) -> Result<Self, DecoderError> {
        let side = config
            .linear_pathway
            .as_ref()
            .map(|p| p.side)
            .ok_or_else(|| {
                DecoderError::InvalidConfig("the config has no linear pathway".into())
            })?;
        let weight = host_values(layer.weight.val())?;
        let bias = host_values(layer.bias.val())?;
        let q = 3 * side * side;
        if weight.len() != config.electrodes.len() * q || bias.len() != q {
            return Err(DecoderError::InvalidConfig(format!(
                "the linear pathway holds {} weights and {} biases; the config needs {} and {q}",
                weight.len(),
                bias.len(),
                config.electrodes.len() * q
            )));
        }
        Ok(Self {
            weight,
            bias,
            windows: config.windows_per_electrode,
            electrodes: config.electrodes.len(),
            side,
            size: config.image_size,
            up: bilinear_matrix(side, config.image_size),
        })
    }

    /// Values of one upsampled image: 3 · size².
    pub fn image_len(&self) -> usize {
        3 * self.size * self.size
    }

    /// Upsamples coarse images `[n][3][side][side]` into `out [n][3][size][size]`
    /// (`U·C·Uᵀ` per plane, U bilinear as torch's `interpolate(align_corners=False)`).
    pub fn upsample(&self, coarse: &[f32], out: &mut [f32]) {
        self.upsample_with(coarse, &mut Vec::new(), out);
    }

    /// [`HostLinearPathway::upsample`] with its `[size][side]` scratch kept by the caller.
    fn upsample_with(&self, coarse: &[f32], tmp: &mut Vec<f32>, out: &mut [f32]) {
        let (s, size) = (self.side, self.size);
        tmp.resize(size * s, 0.0);
        let up = faer::MatRef::from_row_major_slice(&self.up, size, s);
        for (c, o) in coarse
            .chunks_exact(s * s)
            .zip(out.chunks_exact_mut(size * size))
        {
            let c = faer::MatRef::from_row_major_slice(c, s, s);
            let t = faer::MatMut::from_row_major_slice_mut(tmp, size, s);
            product_seq(t, up, c, false); // [size][side]
            let t = faer::MatRef::from_row_major_slice(tmp, size, s);
            let o = faer::MatMut::from_row_major_slice_mut(o, size, size);
            product_seq(o, t, up.transpose(), false); // [size][size]
        }
    }

    /// The pathway's upsampled images of `n` feature vectors: `[n][3][size][size]`.
    pub fn images(&self, features: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; n * self.image_len()];
        self.images_into(features, n, &mut PathwayScratch::default(), &mut out);
        out
    }

    /// [`HostLinearPathway::images`] into `out`, with the intermediate buffers kept in
    /// `scratch`: no allocation once `scratch` has served a call with the same `n` (and
    /// this thread has run a faer product).
    pub fn images_into(
        &self,
        features: &[f32],
        n: usize,
        scratch: &mut PathwayScratch,
        out: &mut [f32],
    ) {
        let q = 3 * self.side * self.side;
        let e = self.electrodes;
        scratch.means.resize(n * e, 0.0);
        electrode_means_into(features, self.windows, e, &mut scratch.means);
        scratch.coarse.resize(n * q, 0.0);
        for row in scratch.coarse.chunks_exact_mut(q) {
            row.copy_from_slice(&self.bias);
        }
        product_seq(
            faer::MatMut::from_row_major_slice_mut(&mut scratch.coarse, n, q),
            faer::MatRef::from_row_major_slice(&scratch.means, n, e),
            faer::MatRef::from_row_major_slice(&self.weight, e, q),
            true,
        );
        self.upsample_with(&scratch.coarse, &mut scratch.tmp, out);
    }
}

/// What [`HostLinearPathway::images_into`] keeps between calls.
#[derive(Debug, Default)]
pub struct PathwayScratch {
    means: Vec<f32>,
    coarse: Vec<f32>,
    tmp: Vec<f32>,
}

/// Each electrode's mean over the windows, for `n` feature vectors `[windows][electrodes]`
/// → `[n][electrodes]`: what the linear pathway reads.
pub fn electrode_means(features: &[f32], n: usize, windows: usize, electrodes: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n * electrodes];
    electrode_means_into(features, windows, electrodes, &mut out);
    out
}

/// [`electrode_means`] into `out` (`[n][electrodes]`, overwritten).
fn electrode_means_into(features: &[f32], windows: usize, electrodes: usize, out: &mut [f32]) {
    out.fill(0.0);
    for (f, o) in features
        .chunks_exact(windows * electrodes)
        .zip(out.chunks_exact_mut(electrodes))
    {
        for win in f.chunks_exact(electrodes) {
            o.iter_mut()
                .zip(win)
                .for_each(|(a, &v)| *a += v / windows as f32);
        }
    }
}

/// Box-averages images `[n][3][size][size]` to `[n][3][side][side]` (side divides size).
pub fn downsample(images: &[f32], size: usize, side: usize) -> Vec<f32> {
    let k = size / side;
    let mut out = vec![0.0f32; images.len() / (k * k)];
    for (plane, o) in images
        .chunks_exact(size * size)
        .zip(out.chunks_exact_mut(side * side))
    {
        for (y, row) in plane.chunks_exact(size).enumerate() {
            for (x, &v) in row.iter().enumerate() {
                o[(y / k) * side + x / k] += v / (k * k) as f32;
            }
        }
    }
    out
}

/// λ / (tr(XᵀX)/p) tried when λ is chosen on a validation fold: 10⁻³ … 10³ in half decades.
pub const RELATIVE_LAMBDAS: [f64; 13] = [
    1e-3, 3.16e-3, 1e-2, 3.16e-2, 0.1, 0.316, 1.0, 3.16, 10.0, 31.6, 100.0, 316.0, 1000.0,
];

/// A fitted ridge regression `y = (x − x̄)·W + ȳ`.
#[derive(Debug, Clone)]
pub struct LinearDecoder {
    pub n_features: usize,
    pub n_outputs: usize,
    /// `[features][outputs]`
    pub weights: Vec<f32>,
    pub feature_mean: Vec<f32>,
    pub output_mean: Vec<f32>,
    /// The ridge penalty λ (absolute).
    pub lambda: f64,
    /// λ over the mean eigenvalue of the centred XᵀX (tr/p).
    pub relative_lambda: f64,
}

/// One point of the validation path.
#[derive(Debug, Clone, Serialize)]
pub struct PathPoint {
    /// λ / (tr(XᵀX)/p).
    pub relative_lambda: f64,
    pub lambda: f64,
    /// Mean Pearson r of the validation predictions (clipped, for images) and the truth.
    pub validation_r: f64,
}

/// The eigendecomposition of the centred XᵀX and what the path needs of XᵀY.
struct Spectrum {
    n_features: usize,
    n_outputs: usize,
    /// Eigenvectors as columns, `[p][p]` row-major.
    vectors: Vec<f32>,
    /// Eigenvalues, clamped at 0 (rounding can make the smallest slightly negative).
    values: Vec<f64>,
    /// `Vᵀ XᵀY` `[p][q]`.
    projected: Vec<f32>,
    feature_mean: Vec<f32>,
    output_mean: Vec<f32>,
}

fn column_means(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut sums = vec![0.0f64; cols];
    for row in m.chunks_exact(cols).take(rows) {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += v as f64;
        }
    }
    sums.iter()
        .map(|s| (s / rows.max(1) as f64) as f32)
        .collect()
}

/// `rows` `[·][means.len()]`, each less `means`.
fn centred(rows: &[f32], means: &[f32]) -> Vec<f32> {
    let mut out = rows.to_vec();
    for row in out.chunks_exact_mut(means.len()) {
        for (v, m) in row.iter_mut().zip(means) {
            *v -= m;
        }
    }
    out
}

impl Spectrum {
    fn new(x: &[f32], y: &[f32], n: usize, p: usize, q: usize) -> Self {
        let feature_mean = column_means(x, n, p);
        let output_mean = column_means(y, n, q);
        let xc = centred(&x[..n * p], &feature_mean);
        let mut xtx = vec![0.0f32; p * p];
        matmul(
            &mut xtx,
            MatRef::new(&xc, n, p).t(),
            MatRef::new(&xc, n, p),
            false,
        );
        // Xcᵀ Y equals Xcᵀ (Y − ȳ): the centred columns sum to zero.
        let mut xty = vec![0.0f32; p * q];
        matmul(
            &mut xty,
            MatRef::new(&xc, n, p).t(),
            MatRef::new(&y[..n * q], n, q),
            false,
        );
        let sym =
            faer::Mat::<f64>::from_fn(p, p, |i, j| 0.5 * (xtx[i * p + j] + xtx[j * p + i]) as f64);
        let (vectors, values) = match sym.self_adjoint_eigen(faer::Side::Lower) {
            Ok(eig) => {
                let u = eig.U();
                let s = eig.S().column_vector();
                (
                    (0..p * p).map(|k| u[(k / p, k % p)] as f32).collect(),
                    (0..p).map(|i| s[i].max(0.0)).collect(),
                )
            }
            // Only a non-finite input fails to converge; then nothing can be fitted: a zero
            // spectrum gives the mean image (W = 0).
            Err(_) => (vec![0.0f32; p * p], vec![0.0f64; p]),
        };
        let mut projected = vec![0.0f32; p * q];
        matmul(
            &mut projected,
            MatRef::new(&vectors, p, p).t(),
            MatRef::new(&xty, p, q),
            false,
        );
        Self {
            n_features: p,
            n_outputs: q,
            vectors,
            values,
            projected,
            feature_mean,
            output_mean,
        }
    }

    /// tr(XᵀX) / p.
    fn mean_eigenvalue(&self) -> f64 {
        self.values.iter().sum::<f64>() / self.n_features.max(1) as f64
    }

    /// `diag(1/(s + λ)) Vᵀ XᵀY`.
    fn shrunk(&self, lambda: f64) -> Vec<f32> {
        let q = self.n_outputs;
        let mut a = self.projected.clone();
        for (row, &s) in a.chunks_exact_mut(q).zip(&self.values) {
            let k = if s + lambda > 0.0 {
                (1.0 / (s + lambda)) as f32
            } else {
                0.0
            };
            row.iter_mut().for_each(|v| *v *= k);
        }
        a
    }

    fn decoder(&self, lambda: f64) -> LinearDecoder {
        let (p, q) = (self.n_features, self.n_outputs);
        let mut weights = vec![0.0f32; p * q];
        matmul(
            &mut weights,
            MatRef::new(&self.vectors, p, p),
            MatRef::new(&self.shrunk(lambda), p, q),
            false,
        );
        LinearDecoder {
            n_features: p,
            n_outputs: q,
            weights,
            feature_mean: self.feature_mean.clone(),
            output_mean: self.output_mean.clone(),
            lambda,
            relative_lambda: lambda / self.mean_eigenvalue().max(f64::MIN_POSITIVE),
        }
    }
}

/// Ridge regression with penalty `lambda` on all `n` trials: `x [n][p]`, `y [n][q]`.
pub fn fit(x: &[f32], y: &[f32], n: usize, p: usize, q: usize, lambda: f64) -> LinearDecoder {
    Spectrum::new(x, y, n, p, q).decoder(lambda)
}

/// Ridge regression with λ = `relative_lambda` × the mean eigenvalue of XᵀX (as λ was
/// chosen on a validation fold, so it carries to a fit on another number of trials).
pub fn fit_relative(
    x: &[f32],
    y: &[f32],
    (n, p, q): (usize, usize, usize),
    relative_lambda: f64,
) -> LinearDecoder {
    let spectrum = Spectrum::new(x, y, n, p, q);
    spectrum.decoder(relative_lambda * spectrum.mean_eigenvalue())
}

/// Ridge regression with λ chosen on the last `validation` of the `n` trials (fitted on the
/// others, scored by the mean correlation of predicted and true rows, the predictions
/// clipped to `clip` if given, as images are to [0, 1]), then refitted on all `n`. Returns
/// the decoder and the validation path.
pub fn fit_validated(
    x: &[f32],
    y: &[f32],
    (n, p, q): (usize, usize, usize),
    validation: usize,
    clip: Option<(f32, f32)>,
) -> (LinearDecoder, Vec<PathPoint>) {
    let n_fit = n.saturating_sub(validation);
    let path: Vec<PathPoint> = if n_fit < 2 || validation == 0 {
        Vec::new()
    } else {
        let spectrum = Spectrum::new(x, y, n_fit, p, q);
        let scale = spectrum.mean_eigenvalue();
        // Z = (X_val − x̄) V, once; each λ is then diag(1/(s + λ)) and one product.
        let xv = centred(&x[n_fit * p..n * p], &spectrum.feature_mean);
        let mut z = vec![0.0f32; validation * p];
        matmul(
            &mut z,
            MatRef::new(&xv, validation, p),
            MatRef::new(&spectrum.vectors, p, p),
            false,
        );
        let truth = &y[n_fit * q..n * q];
        let mut pred = vec![0.0f32; validation * q];
        RELATIVE_LAMBDAS
            .iter()
            .map(|&rel| {
                let lambda = rel * scale;
                matmul(
                    &mut pred,
                    MatRef::new(&z, validation, p),
                    MatRef::new(&spectrum.shrunk(lambda), p, q),
                    false,
                );
                let validation_r = pred
                    .chunks_exact_mut(q)
                    .zip(truth.chunks_exact(q))
                    .map(|(pr, t)| {
                        for (v, m) in pr.iter_mut().zip(&spectrum.output_mean) {
                            *v += m;
                            if let Some((lo, hi)) = clip {
                                *v = v.clamp(lo, hi);
                            }
                        }
                        pearson(pr, t)
                    })
                    .sum::<f64>()
                    / validation as f64;
                PathPoint {
                    relative_lambda: rel,
                    lambda,
                    validation_r,
                }
            })
            .collect()
    };
    let best = path
        .iter()
        .filter(|pt| pt.validation_r.is_finite())
        .max_by(|a, b| a.validation_r.total_cmp(&b.validation_r))
        .map_or(1.0, |pt| pt.relative_lambda);
    let spectrum = Spectrum::new(x, y, n, p, q);
    let decoder = spectrum.decoder(best * spectrum.mean_eigenvalue());
    (decoder, path)
}

impl LinearDecoder {
    /// Predictions for `x [m][p]` → `[m][q]` (not clipped).
    pub fn predict(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (p, q) = (self.n_features, self.n_outputs);
        let xc = centred(&x[..m * p], &self.feature_mean);
        let mut out = vec![0.0f32; m * q];
        matmul(
            &mut out,
            MatRef::new(&xc, m, p),
            MatRef::new(&self.weights, p, q),
            false,
        );
        for row in out.chunks_exact_mut(q) {
            for (v, mean) in row.iter_mut().zip(&self.output_mean) {
                *v += mean;
            }
        }
        out
    }
}

/// Pearson correlation; 0 when either side is constant.
pub fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (
        a.iter().map(|&v| v as f64).sum::<f64>() / n,
        b.iter().map(|&v| v as f64).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa <= 0.0 || sbb <= 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Features of decreasing variance (as real electrodes' are correlated), and targets
    /// linear in them plus a little noise.
    fn problem(n: usize, p: usize, q: usize) -> (Vec<f32>, Vec<f32>) {
        let mut rng = StdRng::seed_from_u64(3);
        let x: Vec<f32> = (0..n * p)
            .map(|k| rng.random_range(-1.0f32..1.0) * 0.7f32.powi((k % p) as i32))
            .collect();
        let w: Vec<f32> = (0..p * q).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let y = (0..n * q)
            .map(|k| {
                let (i, j) = (k / q, k % q);
                0.3 + (0..p).map(|l| x[i * p + l] * w[l * q + j]).sum::<f32>()
                    + rng.random_range(-0.1f32..0.1)
            })
            .collect();
        (x, y)
    }

    use faer::linalg::solvers::{Solve, SolveLstsq};
    use faer::Mat;

    fn column_mean(m: &Mat<f64>, j: usize) -> f64 {
        (0..m.nrows()).map(|i| m[(i, j)]).sum::<f64>() / m.nrows() as f64
    }

    /// The ridge solution by the normal equations, solved directly (faer's Cholesky), with
    /// an intercept: centred X and Y.
    fn direct(x: &[f32], y: &[f32], n: usize, p: usize, q: usize, lambda: f64) -> Vec<f64> {
        let xm = Mat::<f64>::from_fn(n, p, |i, j| x[i * p + j] as f64);
        let ym = Mat::<f64>::from_fn(n, q, |i, j| y[i * q + j] as f64);
        let xc = Mat::<f64>::from_fn(n, p, |i, j| xm[(i, j)] - column_mean(&xm, j));
        let yc = Mat::<f64>::from_fn(n, q, |i, j| ym[(i, j)] - column_mean(&ym, j));
        let a = xc.transpose() * &xc + Mat::<f64>::identity(p, p) * faer::Scale(lambda);
        let w = a
            .llt(faer::Side::Lower)
            .unwrap()
            .solve(xc.transpose() * &yc);
        (0..p * q).map(|k| w[(k / q, k % q)]).collect()
    }

    #[test]
    fn ridge_weights_equal_the_direct_normal_equation_solution() {
        let (n, p, q) = (40, 6, 5);
        let (x, y) = problem(n, p, q);
        for lambda in [0.0, 0.5, 20.0] {
            let fitted = fit(&x, &y, n, p, q, lambda);
            let want = direct(&x, &y, n, p, q, lambda);
            for (a, b) in fitted.weights.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-4, "λ {lambda}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn without_a_penalty_ridge_is_least_squares_and_predicts_its_fit() {
        let (n, p, q) = (40, 6, 5);
        let (x, y) = problem(n, p, q);
        let fitted = fit(&x, &y, n, p, q, 0.0);
        // Least squares with an intercept column, by QR.
        let a = Mat::<f64>::from_fn(
            n,
            p + 1,
            |i, j| if j == p { 1.0 } else { x[i * p + j] as f64 },
        );
        let b = Mat::<f64>::from_fn(n, q, |i, j| y[i * q + j] as f64);
        let lsq = a.qr().solve_lstsq(&b);
        let pred = fitted.predict(&x, n);
        let want = &a * &lsq;
        for i in 0..n {
            for j in 0..q {
                assert!((pred[i * q + j] as f64 - want[(i, j)]).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn validation_prefers_a_small_penalty_on_clean_data_and_a_larger_one_under_noise() {
        let (n, p, q) = (200, 20, 30);
        let (x, y) = problem(n, p, q);
        let (clean, path) = fit_validated(&x, &y, (n, p, q), 40, None);
        assert_eq!(path.len(), RELATIVE_LAMBDAS.len());
        let scale = Spectrum::new(&x, &y, n, p, q).mean_eigenvalue();
        assert!(clean.lambda <= 0.1 * scale, "λ {}", clean.lambda);
        // The same targets under heavy noise: the penalty goes up.
        let mut rng = StdRng::seed_from_u64(9);
        let noisy_y: Vec<f32> = y
            .iter()
            .map(|v| v + rng.random_range(-20.0f32..20.0))
            .collect();
        let (noisy, _) = fit_validated(&x, &noisy_y, (n, p, q), 40, None);
        assert!(
            noisy.lambda > clean.lambda,
            "{} vs {}",
            noisy.lambda,
            clean.lambda
        );
    }
}
