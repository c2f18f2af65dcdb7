//! The inference U-Net, in two forms.
//!
//! [`FoldedUNet`] folds every BatchNorm into the convolution before it and runs on Burn's
//! conv ops (any backend). For a conv with weight W `[out, in, k, k]` and bias b followed
//! by BatchNorm (γ, β, running mean μ, running var σ²), with s = γ / √(σ² + ε):
//! W' = W · s (per output channel), b' = (b − μ) · s + β. A transposed conv's weight is
//! `[in, out, k, k]` in Burn, so there the scale runs along the second axis.
//!
//! [`HostUNet`] is the same folded network on the CPU path: Burn 0.21's Flex conv re-lays
//! its weights out on every call and runs the transposed conv's product on a strided
//! weight (≈2× slower than on a contiguous one for the inner layers); here the weights are
//! laid out once, the products are faer's ([`super::kernels::product_into`], columns split
//! between the pool's threads), and im2col, col2im (as a gather, fused with bias and
//! activation) and the skip concatenation are the kernels of [`super::kernels`]. Width
//! 64, 96 px, batch 1, one thread on this machine (2 cores, AVX-512): 19.4 ms against
//! 18.3 ms for the previous version on Burn's matmul (gemm) and 27.5 ms for PyTorch; width
//! 16: 2.2 ms against 2.4 and 2.6 (README, Benchmarks). On Burn's own conv ops the
//! width-64 network took 36.3 ms folded and 36.9 ms with BatchNorm.

use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::BatchNorm;
use burn::tensor::activation::{leaky_relu, relu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::module::{conv2d, conv_transpose2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::Tensor;

use super::arch::LEAKY_SLOPE;
use super::kernels::{
    bias_activation, col2im_up, im2col_down, product_into, relu_into, swap_outer, transpose,
    Activation, BufferPool, Grid,
};
use super::unet::UNet;
use super::{host_values, DecoderError};

/// A 4×4 stride-2 pad-1 convolution (or transposed convolution) with BatchNorm folded in.
#[derive(Debug, Clone)]
pub struct FoldedConv<B: Backend> {
    /// `[out, in, 4, 4]` for a conv, `[in, out, 4, 4]` for a transposed conv.
    pub weight: Tensor<B, 4>,
    /// `[out]`
    pub bias: Tensor<B, 1>,
}

impl<B: Backend> FoldedConv<B> {
    /// `norm(conv(x))`, or `conv(x)` without a norm, as one conv; `out_axis` is the
    /// weight's output-channel axis (0 for a conv, 1 for a transposed conv).
    pub fn new(
        weight: Tensor<B, 4>,
        bias: Option<Tensor<B, 1>>,
        out_axis: usize,
        norm: Option<&BatchNorm<B>>,
    ) -> Self {
        let out = weight.dims()[out_axis];
        let bias = bias.unwrap_or_else(|| Tensor::zeros([out], &weight.device()));
        let Some(norm) = norm else {
            return Self { weight, bias };
        };
        let scale = norm.gamma.val() / norm.running_var.value().add_scalar(norm.epsilon).sqrt();
        let shift = norm.beta.val() - norm.running_mean.value() * scale.clone();
        let mut along_out = [1; 4];
        along_out[out_axis] = out;
        Self {
            weight: weight * scale.clone().reshape(along_out),
            bias: bias * scale + shift,
        }
    }

    fn conv(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv2d(
            x,
            self.weight.clone(),
            Some(self.bias.clone()),
            ConvOptions::new([2, 2], [1, 1], [1, 1], 1),
        )
    }

    fn conv_transpose(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv_transpose2d(
            x,
            self.weight.clone(),
            Some(self.bias.clone()),
            ConvTransposeOptions::new([2, 2], [1, 1], [0, 0], [1, 1], 1),
        )
    }
}

/// The BN-free U-Net used for inference; equal to [`UNet::forward`] in inference mode.
#[derive(Debug, Clone)]
pub struct FoldedUNet<B: Backend> {
    stem: FoldedConv<B>,
    /// Outermost first.
    down: Vec<FoldedConv<B>>,
    /// Outermost first.
    up: Vec<FoldedConv<B>>,
    head: FoldedConv<B>,
    /// See [`UNet::residual`].
    residual: bool,
}

impl<B: Backend> FoldedUNet<B> {
    /// Folds the BatchNorms of `unet` (its running statistics) into its convolutions.
    pub fn from_unet(unet: &UNet<B>) -> Self {
        let conv = |c: &Conv2d<B>, norm| {
            FoldedConv::new(c.weight.val(), c.bias.as_ref().map(|b| b.val()), 0, norm)
        };
        let conv_t = |c: &ConvTranspose2d<B>, norm| {
            FoldedConv::new(c.weight.val(), c.bias.as_ref().map(|b| b.val()), 1, norm)
        };
        Self {
            stem: conv(&unet.stem, None),
            down: unet
                .blocks
                .iter()
                .map(|b| conv(&b.down, Some(&b.down_norm)))
                .collect(),
            up: unet
                .blocks
                .iter()
                .map(|b| conv_t(&b.up, Some(&b.up_norm)))
                .collect(),
            head: conv_t(&unet.head, None),
            residual: unet.residual,
        }
    }

    /// Input image `[batch, in, H, W]` → reconstruction `[batch, 3, H, W]` in [0, 1].
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let base = self.residual.then(|| {
            let c = x.dims()[1];
            x.clone().narrow(1, c - 3, 3) // [batch, 3, H, W]
        });
        let h = leaky_relu(self.stem.conv(x), LEAKY_SLOPE); // [batch, w, H/2, W/2]
        let h = self.block(0, h); // [batch, 2w, H/2, W/2]
        let h = self.head.conv_transpose(h); // [batch, 3, H, W]
        match base {
            Some(base) => (base + h).clamp(0.0, 1.0),
            None => sigmoid(h),
        }
    }

    fn block(&self, i: usize, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let d = leaky_relu(self.down[i].conv(x.clone()), LEAKY_SLOPE); // [batch, inner, s/2, s/2]
        let inner = if i + 1 < self.down.len() {
            self.block(i + 1, d) // [batch, 2·inner, s/2, s/2]
        } else {
            d
        };
        let u = self.up[i].conv_transpose(inner); // [batch, outer, s, s]
        relu(Tensor::cat(vec![x, u], 1)) // [batch, 2·outer, s, s]
    }
}

/// One layer of [`HostUNet`]: the folded weight as a row-major matrix, and the bias.
#[derive(Debug, Clone)]
struct HostConv {
    /// Conv: `[out][in·16]` (Burn's weight as it is). Transposed conv: `[out·16][in]`
    /// (Burn's `[in][out·16]`, transposed once here so the product reads it row-major:
    /// 2× faster than a strided product for the inner layers).
    matrix: Vec<f32>,
    rows: usize,
    cols: usize,
    bias: Vec<f32>,
    channels_in: usize,
    channels_out: usize,
}

impl HostConv {
    /// A conv's layer, or a transposed conv's if `transposed`.
    fn new<B: Backend>(folded: FoldedConv<B>, transposed: bool) -> Result<Self, DecoderError> {
        let [a, b, kh, kw] = folded.weight.dims();
        let weight = host_values(folded.weight)?;
        let bias = host_values(folded.bias)?;
        Ok(if transposed {
            let (inp, out) = (a, b);
            Self {
                matrix: transpose(&weight, inp, out * kh * kw),
                rows: out * kh * kw,
                cols: inp,
                bias,
                channels_in: inp,
                channels_out: out,
            }
        } else {
            let (out, inp) = (a, b);
            Self {
                matrix: weight,
                rows: out,
                cols: inp * kh * kw,
                bias,
                channels_in: inp,
                channels_out: out,
            }
        })
    }

    /// `matrix · x` with `x: [matrix columns][n]`, into a buffer from `buffers`; `x`'s
    /// buffer goes back to them.
    fn product(&self, x: Vec<f32>, n: usize, buffers: &mut BufferPool) -> Vec<f32> {
        let mut y = buffers.take(self.rows * n);
        product_into(&mut y, &self.matrix, self.rows, self.cols, &x, n);
        buffers.give(x);
        y
    }
}

/// The folded U-Net on the CPU path: the convolutions are matrix products (faer's, split
/// between the threads of the current Rayon pool) with the weights laid out once for them;
/// im2col, col2im, bias, activations and the skip concatenations are the plain-Rust kernels
/// of [`super::kernels`], fused where they can be. Numerically the same network as
/// [`FoldedUNet`] (to float rounding).
///
/// Real-time contract: [`HostUNet::forward`] takes every buffer from the caller's
/// [`BufferPool`]; once a pass of the same batch and size has run (and each pool thread
/// has run a product), a pass allocates nothing and takes no lock.
#[derive(Debug)]
pub struct HostUNet {
    stem: HostConv,
    down: Vec<HostConv>,
    up: Vec<HostConv>,
    head: HostConv,
    /// See [`UNet::residual`].
    residual: bool,
}

impl HostUNet {
    /// Lays out the folded weights for the CPU path.
    pub fn from_folded<B: Backend>(folded: FoldedUNet<B>) -> Result<Self, DecoderError> {
        Ok(Self {
            stem: HostConv::new(folded.stem, false)?,
            down: folded
                .down
                .into_iter()
                .map(|c| HostConv::new(c, false))
                .collect::<Result<_, _>>()?,
            up: folded
                .up
                .into_iter()
                .map(|c| HostConv::new(c, true))
                .collect::<Result<_, _>>()?,
            head: HostConv::new(folded.head, true)?,
            residual: folded.residual,
        })
    }

    /// Input images `x [batch][in][size][size]` → `out [batch][3][size][size]` in [0, 1].
    /// The caller checks the lengths. Runs on the current Rayon pool; called from outside
    /// any pool, it moves onto the global one (so that its products split without a
    /// hand-over from outside the pool each time).
    pub fn forward(
        &self,
        x: &[f32],
        batch: usize,
        size: usize,
        out: &mut [f32],
        buffers: &mut BufferPool,
    ) {
        if rayon::current_thread_index().is_none() {
            rayon::scope(|_| self.forward_in_pool(x, batch, size, out, buffers));
        } else {
            self.forward_in_pool(x, batch, size, out, buffers);
        }
    }

    fn forward_in_pool(
        &self,
        x: &[f32],
        batch: usize,
        size: usize,
        out: &mut [f32],
        buffers: &mut BufferPool,
    ) {
        let c_in = self.stem.channels_in;
        let grid = Grid { batch, side: size };
        let plane = size * size;
        let mut x_cb = buffers.take(x.len());
        swap_outer(x, batch, c_in, plane, &mut x_cb); // [in][batch][size²]
        let x1 = self.down_layer(&self.stem, &x_cb, grid, buffers); // [w][batch·(size/2)²]
        buffers.give(x_cb);
        let half = grid.half();
        let x2 = self.block(0, x1, half, buffers); // [2w][batch·(size/2)²]
        let cols = self.head.product(x2, half.n(), buffers); // [3·16][batch·(size/2)²]
        let zeros = buffers.zeros(half.side);
        let mut y = buffers.take(out.len());
        let act = if self.residual {
            Activation::Identity
        } else {
            Activation::Sigmoid
        };
        col2im_up(&cols, 3, half, &self.head.bias, act, &zeros, &mut y); // [3][batch][size²]
        swap_outer(&y, 3, batch, plane, out); // [batch][3][size²]
        if self.residual {
            // + the input's last three channels, clamped.
            for (o, xb) in out
                .chunks_exact_mut(3 * plane)
                .zip(x.chunks_exact(c_in * plane))
            {
                for (v, &b) in o.iter_mut().zip(&xb[(c_in - 3) * plane..]) {
                    *v = (*v + b).clamp(0.0, 1.0);
                }
            }
        }
        buffers.give(zeros);
        buffers.give(cols);
        buffers.give(y);
    }

    /// Conv 4×4 s2 + bias + LeakyReLU: `x [c_in][grid]` → `[c_out][grid / 2]`.
    fn down_layer(
        &self,
        layer: &HostConv,
        x: &[f32],
        grid: Grid,
        buffers: &mut BufferPool,
    ) -> Vec<f32> {
        let half = grid.half();
        let mut cols = buffers.take(layer.channels_in * 16 * half.n());
        let mut scratch = buffers.take(grid.side * grid.side);
        im2col_down(x, layer.channels_in, grid, &mut scratch, &mut cols);
        buffers.give(scratch);
        let mut y = layer.product(cols, half.n(), buffers);
        bias_activation(
            &mut y,
            &layer.bias,
            Activation::LeakyRelu(LEAKY_SLOPE as f32),
        );
        y
    }

    /// Skip block `i` on `x [outer][grid]` (post-LeakyReLU) → `[2·outer][grid]`.
    fn block(&self, i: usize, x: Vec<f32>, grid: Grid, buffers: &mut BufferPool) -> Vec<f32> {
        let half = grid.half();
        let d = self.down_layer(&self.down[i], &x, grid, buffers); // [inner][half]
        let inner = if i + 1 < self.down.len() {
            self.block(i + 1, d, half, buffers) // [2·inner][half]
        } else {
            d
        };
        let up = &self.up[i];
        let cols = up.product(inner, half.n(), buffers); // [outer·16][half]
        let outer = up.channels_out;
        let n = grid.n();
        let mut out = buffers.take(2 * outer * n);
        let (skip, upper) = out.split_at_mut(outer * n);
        relu_into(&x, skip);
        let zeros = buffers.zeros(half.side);
        col2im_up(
            &cols,
            outer,
            half,
            &up.bias,
            Activation::Relu,
            &zeros,
            upper,
        );
        buffers.give(zeros);
        buffers.give(x);
        buffers.give(cols);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::arch::{test_architectures, Architecture};
    use crate::decoder::CpuBackend as B;
    use burn::module::{Module, Param, RunningState};
    use burn::tensor::Distribution;
    use rand::SeedableRng;

    /// A small network whose BatchNorms have non-trivial running statistics and affine terms.
    fn net_with_stats(arch: &Architecture, seed: u64) -> UNet<B> {
        let dev = Default::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut net: UNet<B> = UNet::init_pix2pix(arch, &mut rng, &dev);
        if arch.residual {
            // The residual head starts at zero; give it weights so it counts.
            net.head = UNet::init_pix2pix(&arch.clone().with_residual(false), &mut rng, &dev).head;
        }
        for block in &mut net.blocks {
            for norm in [&mut block.down_norm, &mut block.up_norm] {
                let [c] = norm.gamma.dims();
                let uniform = |lo: f64, hi: f64| {
                    Tensor::<B, 1>::random([c], Distribution::Uniform(lo, hi), &dev)
                };
                norm.running_mean = RunningState::new(uniform(-0.5, 0.5));
                norm.running_var = RunningState::new(uniform(0.2, 3.0));
                norm.gamma = Param::from_tensor(uniform(0.5, 1.5));
                norm.beta = Param::from_tensor(uniform(-0.3, 0.3));
            }
        }
        // Larger weights than the 0.02 init so every layer matters to the output.
        net.map(&mut Scale(8.0))
    }

    struct Scale(f64);
    impl burn::module::ModuleMapper<B> for Scale {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, t, mapper) = param.consume();
            let t = if D == 4 { t.mul_scalar(self.0) } else { t };
            Param::from_mapped_value(id, t, mapper)
        }
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn folded_and_host_networks_equal_the_batchnorm_network_in_inference_mode() {
        for arch in test_architectures(5, 4) {
            folded_and_host_equal_batchnorm(&arch);
        }
    }

    fn folded_and_host_equal_batchnorm(arch: &Architecture) {
        let dev = Default::default();
        let net = net_with_stats(arch, 7);
        let size = arch.size_multiple().max(32);
        let x = Tensor::<B, 4>::random([2, 5, size, size], Distribution::Normal(0.0, 1.0), &dev);
        let reference = net.forward(x.clone()).into_data().to_vec::<f32>().unwrap();
        let folded = FoldedUNet::from_unet(&net);
        let y = folded
            .forward(x.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let mean = reference.iter().sum::<f32>() / reference.len() as f32;
        let spread = reference
            .iter()
            .fold(0.0f32, |m, v| m.max((v - mean).abs()));
        assert!(
            spread > 0.05,
            "{arch:?}: the test network is too flat to compare: {spread}"
        );
        let diff = max_abs_diff(&reference, &y);
        assert!(diff < 1e-4, "{arch:?}: folded {diff}");

        let host = HostUNet::from_folded(folded).unwrap();
        let xs = x.into_data().to_vec::<f32>().unwrap();
        let mut out = vec![0.0f32; 2 * 3 * size * size];
        host.forward(&xs, 2, size, &mut out, &mut BufferPool::default());
        let diff = max_abs_diff(&reference, &out);
        assert!(diff < 1e-4, "{arch:?}: host {diff}");
    }
}

#[cfg(test)]
mod host_profile {
    use super::*;
    use crate::decoder::arch::Architecture;
    use crate::decoder::CpuBackend as B;
    use rand::SeedableRng;
    use std::time::Instant;

    fn t<R, F: FnMut() -> R>(name: &str, mut f: F) -> R {
        let mut r = f();
        let n = 20;
        let start = Instant::now();
        for _ in 0..n {
            r = f();
        }
        eprintln!(
            "{name:32} {:8.3} ms",
            start.elapsed().as_secs_f64() * 1e3 / n as f64
        );
        r
    }

    /// `MONKEYSEE_PROFILE_WIDTH=16 cargo test --release --lib decoder::infer::host_profile -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn profile_host_layers() {
        let dev = Default::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let width = std::env::var("MONKEYSEE_PROFILE_WIDTH")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(64);
        let net: UNet<B> = UNet::init_pix2pix(&Architecture::new(15, width), &mut rng, &dev);
        let host = HostUNet::from_folded(FoldedUNet::from_unet(&net)).unwrap();
        let mut x = vec![0.5f32; 15 * 96 * 96];
        let mut grid = Grid { batch: 1, side: 96 };
        let mut skips = vec![];
        for (i, layer) in std::iter::once(&host.stem).chain(&host.down).enumerate() {
            let half = Grid {
                batch: 1,
                side: grid.side / 2,
            };
            let mut cols = vec![0.0f32; layer.channels_in * 16 * half.n()];
            let mut scratch = vec![0.0f32; grid.side * grid.side];
            t(&format!("im2col {i}"), || {
                im2col_down(&x, layer.channels_in, grid, &mut scratch, &mut cols)
            });
            let mut pool = BufferPool::default();
            let mut y = t(&format!("product {i}"), || {
                layer.product(cols.clone(), half.n(), &mut pool)
            });
            t(&format!("bias+leaky {i}"), || {
                bias_activation(&mut y, &layer.bias, Activation::LeakyRelu(0.2))
            });
            if i > 0 {
                skips.push(x.clone());
            }
            x = y;
            grid = half;
        }
        for (i, up) in host.up.iter().enumerate().rev() {
            let mut pool = BufferPool::default();
            let cols = t(&format!("product up{i}"), || {
                up.product(x.clone(), grid.n(), &mut pool)
            });
            let two = Grid {
                batch: 1,
                side: grid.side * 2,
            };
            let mut out = vec![0.0f32; 2 * up.channels_out * two.n()];
            let zeros = vec![0.0f32; grid.side];
            let skip = &skips[i];
            t(&format!("relu+col2im up{i}"), || {
                let (a, b) = out.split_at_mut(up.channels_out * two.n());
                relu_into(skip, a);
                col2im_up(
                    &cols,
                    up.channels_out,
                    grid,
                    &up.bias,
                    Activation::Relu,
                    &zeros,
                    b,
                );
            });
            x = out;
            grid = two;
        }
        let mut pool = BufferPool::default();
        let cols = t("product head", || {
            host.head.product(x.clone(), grid.n(), &mut pool)
        });
        let mut out = vec![0.0f32; 3 * 96 * 96];
        let zeros = vec![0.0f32; grid.side];
        t("col2im head", || {
            col2im_up(
                &cols,
                3,
                grid,
                &host.head.bias,
                Activation::Sigmoid,
                &zeros,
                &mut out,
            )
        });
        let xh = vec![0.5f32; 15 * 96 * 96];
        let mut buffers = BufferPool::default();
        t("full forward", || {
            host.forward(&xh, 1, 96, &mut out, &mut buffers)
        });
    }
}
