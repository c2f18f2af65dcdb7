//! The conditional PatchGAN discriminator of pix2pix (training only).
//!
//! Input: the generator's input image concatenated with a (real or generated) image,
//! `[batch, in + 3, H, W]`. Four 4×4 convolutions (widths w, 2w, 4w, 8w; BatchNorm
//! after all but the first; LeakyReLU 0.2), then a 3×3 convolution to one logit per
//! patch. The brief's strides (2, 2, 2, 1) and "6 × 6 logit map" at 96 px do not fit
//! together with 4×4 kernels; we keep the 6 × 6 map (strides 2, 2, 2, 2, padding 1,
//! so a 96 px image gives 6 × 6 logits with 70+ px receptive fields), which is what
//! the loss sees.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::leaky_relu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rand::rngs::StdRng;

use crate::decoder::arch::LEAKY_SLOPE;
use crate::decoder::unet::{batch_norm, init_conv, init_norm};

#[derive(Module, Debug)]
pub struct Discriminator<B: Backend> {
    pub convs: Vec<Conv2d<B>>,
    /// One per conv after the first.
    pub norms: Vec<BatchNorm<B>>,
    pub head: Conv2d<B>,
}

impl<B: Backend> Discriminator<B> {
    /// Weights N(0, 0.02), BatchNorm scale N(1, 0.02), as pix2pix initialises them.
    pub fn new(in_channels: usize, width: usize, rng: &mut StdRng, device: &B::Device) -> Self {
        let widths = [width, 2 * width, 4 * width, 8 * width];
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        let mut prev = in_channels + 3;
        for (i, &w) in widths.iter().enumerate() {
            let mut conv = Conv2dConfig::new([prev, w], [4, 4])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(i == 0)
                .init(device);
            init_conv(&mut conv.weight, &mut conv.bias, rng, device);
            convs.push(conv);
            if i > 0 {
                let mut bn = BatchNormConfig::new(w).init(device);
                init_norm(&mut bn, rng, device);
                norms.push(bn);
            }
            prev = w;
        }
        let mut head = Conv2dConfig::new([prev, 1], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device);
        init_conv(&mut head.weight, &mut head.bias, rng, device);
        Discriminator { convs, norms, head }
    }

    /// Logits `[batch, 1, H/16, W/16]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = x;
        for (i, conv) in self.convs.iter().enumerate() {
            h = conv.forward(h);
            if i > 0 {
                h = batch_norm(&self.norms[i - 1], h);
            }
            h = leaky_relu(h, LEAKY_SLOPE);
        }
        self.head.forward(h)
    }
}
