//! The U-Net generator as a trainable Burn `Module`, built from an [`Architecture`].
//!
//! This is the network that is trained (on an autodiff backend), saved and loaded, with
//! BatchNorm. Inference uses
//! [`crate::decoder::infer::FoldedUNet`], built from it by folding every BatchNorm
//! into the convolution before it.

use burn::module::{Module, Param, RunningState};
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::{leaky_relu, relu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use super::arch::{Architecture, LEAKY_SLOPE};

/// One skip block: `down → BN → LeakyReLU → (inner block) → up → BN`, concatenated
/// with its input along channels, then ReLU.
#[derive(Module, Debug)]
pub struct SkipBlock<B: Backend> {
    /// Conv 4×4 stride 2 pad 1, outer → inner channels.
    pub down: Conv2d<B>,
    pub down_norm: BatchNorm<B>,
    /// Transposed conv 4×4 stride 2 pad 1, (inner or 2·inner) → outer channels.
    pub up: ConvTranspose2d<B>,
    pub up_norm: BatchNorm<B>,
}

/// The generator. `blocks[0]` is the outermost skip block.
#[derive(Module, Debug)]
pub struct UNet<B: Backend> {
    /// Conv 4×4 stride 2 pad 1, in → w, then LeakyReLU.
    pub stem: Conv2d<B>,
    pub blocks: Vec<SkipBlock<B>>,
    /// Transposed conv 4×4 stride 2 pad 1, 2w → 3, then sigmoid (or, `residual`, added to
    /// the input's last three channels and clamped to [0, 1]).
    pub head: ConvTranspose2d<B>,
    /// See [`Architecture::residual`] (a constant, not saved with the weights).
    pub residual: bool,
}

fn conv_down<B: Backend>(c_in: usize, c_out: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([c_in, c_out], [4, 4])
        .with_stride([2, 2])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

fn conv_up<B: Backend>(c_in: usize, c_out: usize, device: &B::Device) -> ConvTranspose2d<B> {
    ConvTranspose2dConfig::new([c_in, c_out], [4, 4])
        .with_stride([2, 2])
        .with_padding([1, 1])
        .init(device)
}

impl<B: Backend> UNet<B> {
    /// The network `arch` describes, with Burn's default initialisation; see
    /// [`UNet::init_pix2pix`].
    pub fn new(arch: &Architecture, device: &B::Device) -> Self {
        let blocks = arch
            .blocks()
            .iter()
            .map(|b| SkipBlock {
                down: conv_down(b.outer, b.inner, device),
                down_norm: BatchNormConfig::new(b.inner).init(device),
                up: conv_up(b.up_in, b.outer, device),
                up_norm: BatchNormConfig::new(b.outer).init(device),
            })
            .collect();
        Self {
            stem: conv_down(arch.in_channels, arch.width, device),
            blocks,
            head: conv_up(2 * arch.width, 3, device),
            residual: arch.residual,
        }
    }

    /// The network `arch` describes, initialised as pix2pix does: conv weights ~ N(0, 0.02),
    /// conv biases 0, BatchNorm gamma ~ N(1, 0.02), beta 0. Drawn from `rng`, so the same
    /// seed gives the same network on every backend. A residual network's head starts at
    /// zero, so it starts as the image it corrects.
    pub fn init_pix2pix(arch: &Architecture, rng: &mut StdRng, device: &B::Device) -> Self {
        let mut net = Self::new(arch, device);
        init_conv(&mut net.stem.weight, &mut net.stem.bias, rng, device);
        for block in &mut net.blocks {
            init_conv(&mut block.down.weight, &mut block.down.bias, rng, device);
            init_norm(&mut block.down_norm, rng, device);
            init_conv(&mut block.up.weight, &mut block.up.bias, rng, device);
            init_norm(&mut block.up_norm, rng, device);
        }
        init_conv(&mut net.head.weight, &mut net.head.bias, rng, device);
        if arch.residual {
            let shape = net.head.weight.dims();
            net.head.weight = Param::from_tensor(Tensor::zeros(shape, device));
        }
        net
    }
}

/// A tensor of N(mean, std) draws from `rng`.
pub(crate) fn normal_tensor<B: Backend, const D: usize>(
    shape: [usize; D],
    mean: f32,
    std: f32,
    rng: &mut StdRng,
    device: &B::Device,
) -> Tensor<B, D> {
    let n: usize = shape.iter().product();
    // Normal::new only fails for a negative or NaN std; ours are constants >= 0.
    let dist = Normal::new(mean, std.max(0.0)).unwrap_or_else(|_| Normal::new(0.0, 0.0).unwrap());
    let values: Vec<f32> = (0..n).map(|_| dist.sample(rng)).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A conv's or transposed conv's `weight` ~ N(0, 0.02) and `bias` 0.
pub(crate) fn init_conv<B: Backend>(
    weight: &mut Param<Tensor<B, 4>>,
    bias: &mut Option<Param<Tensor<B, 1>>>,
    rng: &mut StdRng,
    device: &B::Device,
) {
    *weight = Param::from_tensor(normal_tensor(weight.dims(), 0.0, 0.02, rng, device));
    if let Some(bias) = bias {
        *bias = Param::from_tensor(Tensor::zeros(bias.dims(), device));
    }
}

pub(crate) fn init_norm<B: Backend>(norm: &mut BatchNorm<B>, rng: &mut StdRng, device: &B::Device) {
    let shape = norm.gamma.dims();
    norm.gamma = Param::from_tensor(normal_tensor(shape, 1.0, 0.02, rng, device));
    norm.beta = Param::from_tensor(Tensor::zeros(shape, device));
}

impl<B: Backend> UNet<B> {
    /// Input image → reconstruction in [0, 1]. Shapes for a 96 px input and width w = 64.
    /// BatchNorm uses batch statistics under an autodiff backend and running statistics otherwise.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        // x: [batch, in, 96, 96]
        let base = self.residual.then(|| {
            let c = x.dims()[1];
            x.clone().narrow(1, c - 3, 3) // [batch, 3, 96, 96]
        });
        let h = leaky_relu(self.stem.forward(x), LEAKY_SLOPE); // [batch, 64, 48, 48]
        let h = self.block_forward(0, h); // [batch, 128, 48, 48]
        let h = self.head.forward(h); // [batch, 3, 96, 96]
        match base {
            Some(base) => (base + h).clamp(0.0, 1.0),
            None => sigmoid(h),
        }
    }

    /// Block `i` on its input `x: [batch, outer, s, s]` → `[batch, 2·outer, s, s]`. For
    /// the paper's levels at w = 64 and 96 px:
    ///
    /// i = 0: [b, 64, 48, 48] → down [b, 128, 24, 24] → inner [b, 256, 24, 24] → up [b, 64, 48, 48] → [b, 128, 48, 48]
    /// i = 1: [b, 128, 24, 24] → down [b, 256, 12, 12] → inner [b, 512, 12, 12] → up [b, 128, 24, 24] → [b, 256, 24, 24]
    /// i = 2: [b, 256, 12, 12] → down [b, 512, 6, 6] → inner [b, 1024, 6, 6] → up [b, 256, 12, 12] → [b, 512, 12, 12]
    /// i = 3: [b, 512, 6, 6] → down [b, 512, 3, 3] (bottleneck) → up [b, 512, 6, 6] → [b, 1024, 6, 6]
    fn block_forward(&self, i: usize, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let block = &self.blocks[i];
        let d = block.down.forward(x.clone());
        let d = leaky_relu(batch_norm(&block.down_norm, d), LEAKY_SLOPE);
        let inner = if i + 1 < self.blocks.len() {
            self.block_forward(i + 1, d)
        } else {
            d
        };
        let u = batch_norm(&block.up_norm, block.up.forward(inner));
        relu(Tensor::cat(vec![x, u], 1))
    }
}

/// BatchNorm as Burn's `BatchNorm::forward` computes it (batch statistics and a
/// running-average update under autodiff, running statistics otherwise), but in
/// training written without broadcasting tensor ops: per-channel values are spread
/// over the `[channels, batch·H·W]` layout by rank-1 products with a ones row, which
/// Flex 0.21 runs far faster than its broadcasting element-wise ops (those took ~35 %
/// of a training step).
pub fn batch_norm<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let device = x.device();
    if !B::ad_enabled(&device) {
        return bn.forward(x);
    }
    let [b, c, h, w] = x.dims();
    let n = b * h * w;
    let ones = Tensor::<B, 2>::ones([1, n], &device);
    let spread = |v: Tensor<B, 2>| v.matmul(ones.clone()); // [c, 1] → [c, n]
    let xc = x.swap_dims(0, 1).reshape([c, n]);
    let mean = xc.clone().mean_dim(1); // [c, 1]
    let centered = xc - spread(mean.clone());
    let var = centered.clone().square().mean_dim(1); // [c, 1], biased, as Burn's
    let m = bn.momentum;
    let update = |running: &RunningState<Tensor<B, 1>>, batch: Tensor<B, 2>| {
        running.update(
            running
                .value_sync()
                .to_device(&device)
                .mul_scalar(1.0 - m)
                .add(batch.detach().mul_scalar(m).reshape([c]))
                .detach(),
        )
    };
    update(&bn.running_mean, mean);
    update(&bn.running_var, var.clone());
    let scale = var.add_scalar(bn.epsilon).sqrt().recip() * bn.gamma.val().reshape([c, 1]);
    let y = centered * spread(scale) + spread(bn.beta.val().reshape([c, 1]));
    y.reshape([c, b, h, w]).swap_dims(0, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::CpuBackend as B;
    use burn::tensor::Distribution;
    use rand::SeedableRng;

    #[test]
    fn full_width_unet_has_about_16_7_million_parameters() {
        let arch = Architecture::new(15, 64).with_levels(&crate::decoder::arch::PAPER_LEVELS);
        let net: UNet<B> = UNet::new(&arch, &Default::default());
        let n = net.num_params();
        assert!((16_500_000..=16_900_000).contains(&n), "{n} parameters");
    }

    #[test]
    fn output_is_an_rgb_image_of_the_input_size_in_unit_range() {
        let dev = Default::default();
        let mut rng = StdRng::seed_from_u64(0);
        let net: UNet<B> = UNet::init_pix2pix(&Architecture::new(15, 4), &mut rng, &dev);
        let x = Tensor::<B, 4>::random([1, 15, 32, 32], Distribution::Normal(0.0, 3.0), &dev);
        let y = net.forward(x);
        assert_eq!(y.dims(), [1, 3, 32, 32]);
        let values = y.into_data().to_vec::<f32>().unwrap();
        assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn pix2pix_init_is_deterministic_in_the_seed() {
        let dev = Default::default();
        let weights = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let net: UNet<B> = UNet::init_pix2pix(&Architecture::new(3, 2), &mut rng, &dev);
            net.blocks[1]
                .down
                .weight
                .val()
                .into_data()
                .to_vec::<f32>()
                .unwrap()
        };
        assert_eq!(weights(5), weights(5));
        assert_ne!(weights(5), weights(6));
    }
}
