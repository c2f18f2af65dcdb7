//! The perceptual loss of MonkeySee's generator: the L1 distance between VGG19
//! features of the reconstruction and of the true image, taken before the ReLU of
//! conv2_2, conv3_3, conv4_2, conv5_1 and conv5_4, on images resized to a fixed side
//! (224 px in the method) and normalised with ImageNet's channel means and deviations.
//!
//! The weights are torchvision's pretrained VGG19 (`vgg19-dcbb9e9d.pth`, Simonyan &
//! Zisserman 2015, configuration E), a file the user supplies: nothing can be
//! downloaded here. It is read with burn-store's PyTorch reader (both the legacy
//! pickle and the zip format of `torch.save`); of its tensors only the convolutions
//! (`features.*`) have a place in [`Vgg19`], the classifier's are left unused.
//!
//! The loss is the mean over the five layers of each layer's mean absolute
//! difference, so every layer weighs the same whatever its size.

use std::path::Path;

use anyhow::bail;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::max_pool2d;
use burn::tensor::{Tensor, TensorData};
use burn_store::PytorchStore;

use crate::alexnet::{resize, IMAGENET_MEAN, IMAGENET_STD};
use crate::decoder::kernels::bilinear_matrix;

/// Convolutions per block (VGG19 = configuration E).
const BLOCK_CONVS: [usize; 5] = [2, 2, 4, 4, 4];
/// torchvision's index of each convolution in `features` (ReLUs and max-pools
/// take the indices between).
const TORCHVISION_INDEX: [usize; 16] = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34];
/// The layers of the loss, as indices into the 16 convolutions.
pub const TAPS: [usize; 5] = [3, 6, 9, 12, 15];
/// Their names.
pub const TAP_NAMES: [&str; 5] = ["conv2_2", "conv3_3", "conv4_2", "conv5_1", "conv5_4"];
/// torchvision's VGG19 block widths.
pub const VGG19_WIDTHS: [usize; 5] = [64, 128, 256, 512, 512];

/// VGG19's convolutional part, up to conv5_4.
#[derive(Module, Debug)]
pub struct Vgg19<B: Backend> {
    features: Vec<Conv2d<B>>,
}

/// The block (0…4) that convolution `conv` (0…15) belongs to.
fn block_of(conv: usize) -> usize {
    let mut end = 0;
    for (b, n) in BLOCK_CONVS.iter().enumerate() {
        end += n;
        if conv < end {
            return b;
        }
    }
    unreachable!("VGG19 has 16 convolutions")
}

impl<B: Backend> Vgg19<B> {
    /// A VGG19 with random weights and the given block widths (torchvision's are
    /// [`VGG19_WIDTHS`]); [`Vgg19::load`] fills one from a file.
    pub fn new(widths: [usize; 5], device: &B::Device) -> Self {
        let mut c_in = 3;
        let features = (0..16)
            .map(|i| {
                let c_out = widths[block_of(i)];
                let conv = Conv2dConfig::new([c_in, c_out], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device);
                c_in = c_out;
                conv
            })
            .collect();
        Vgg19 { features }
    }

    /// Reads torchvision's VGG19 state dict (`features.*`) from a `.pth` file. The
    /// block widths come from the file, so a reduced-width VGG19 saved the same way
    /// (the test fixture) loads too.
    pub fn load(path: &Path, device: &B::Device) -> anyhow::Result<Self> {
        let what = || {
            format!(
                "--vgg-weights {}: expected torchvision's VGG19 state dict (vgg19-dcbb9e9d.pth)",
                path.display()
            )
        };
        let reader = crate::pth::open(path, &what)?;
        let mut found: Vec<(usize, String)> = reader
            .keys()
            .into_iter()
            .filter_map(|k| {
                let (index, _) = k.strip_prefix("features.")?.split_once('.')?;
                Some((index.parse().ok()?, k))
            })
            .collect();
        found.sort();
        let names: Vec<String> = found.into_iter().map(|(_, k)| k).collect();
        let expected: Vec<String> = TORCHVISION_INDEX
            .iter()
            .flat_map(|i| [format!("features.{i}.bias"), format!("features.{i}.weight")])
            .collect();
        if names != expected {
            let extra = names.iter().find(|k| !expected.contains(k));
            let missing = expected.iter().find(|k| !names.contains(k));
            bail!(
                "{}; it has {} tensors under features.* where VGG19 has 32 (16 convolutions){}{}{}",
                what(),
                names.len(),
                missing.map_or(String::new(), |k| format!("; missing {k}")),
                extra.map_or(String::new(), |k| format!("; unexpected {k}")),
                if names.iter().any(|k| k.ends_with("running_mean")) {
                    " (this looks like vgg19_bn: use the plain vgg19 file)".to_string()
                } else if names.len() == 26 {
                    " (13 convolutions: this looks like VGG16)".to_string()
                } else if let Some(prefix) = reader.keys().iter().find_map(|k| k
                    .strip_suffix("features.0.weight")
                    .filter(|p| !p.is_empty()))
                {
                    format!(
                        " (the state dict is nested under `{prefix}`: save that part alone, e.g. torch.save(ckpt[\"{}\"], \"vgg19.pth\"))",
                        prefix.trim_end_matches('.')
                    )
                } else if names.is_empty() {
                    let mut keys = reader.keys();
                    keys.sort();
                    keys.truncate(4);
                    format!(" (its first keys: {})", keys.join(", "))
                } else {
                    String::new()
                }
            );
        }
        let mut widths = [0; 5];
        let mut c_in = 3;
        for (i, &t) in TORCHVISION_INDEX.iter().enumerate() {
            let key = format!("features.{t}.weight");
            let shape = crate::pth::f32_shape(&reader, &key, &what)?;
            let block = block_of(i);
            let ok = shape.len() == 4
                && shape[1] == c_in
                && shape[2..] == [3, 3]
                && (widths[block] == 0 || widths[block] == shape[0]);
            if !ok {
                bail!(
                    "{}; {key} has shape {shape:?}, VGG19 needs [out, {c_in}, 3, 3] with the same width within a block",
                    what()
                );
            }
            widths[block] = shape[0];
            c_in = shape[0];
        }
        let convs = TORCHVISION_INDEX
            .iter()
            .flat_map(|i| [format!("features.{i}.weight"), format!("features.{i}.bias")]);
        if let Err((have, need)) = crate::pth::legacy_data_complete(&reader, convs) {
            bail!(
                "{}; it is cut short: its tensor data has {have} bytes where VGG19's convolutions need {need} (an interrupted download or copy? fetch the file again)",
                what()
            );
        }
        drop(reader);

        let mut vgg = Vgg19::new(widths, device);
        // Our `features` holds only the convolutions, numbered 0..16: burn-store's
        // contiguous index mapping closes torchvision's gaps (ReLU, max-pool); it maps
        // each prefix on its own, so `classifier.*` (unused here) shifts nothing.
        let store = PytorchStore::from_file(path).map_indices_contiguous(true);
        crate::pth::load_into(&mut vgg, store, 32, &what)?;
        Ok(vgg)
    }

    /// Block widths (64, 128, 256, 512, 512 for torchvision's).
    pub fn widths(&self) -> [usize; 5] {
        let mut w = [0; 5];
        let mut i = 0;
        for (b, n) in BLOCK_CONVS.iter().enumerate() {
            w[b] = self.features[i].weight.dims()[0];
            i += n;
        }
        w
    }

    /// The pre-ReLU outputs of [`TAPS`] for an ImageNet-normalised batch
    /// `[n, 3, H, W]`.
    pub fn taps(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        let mut out = Vec::with_capacity(TAPS.len());
        let mut h = x;
        let mut block = 0;
        for (i, conv) in self.features.iter().enumerate() {
            if block_of(i) != block {
                block = block_of(i);
                h = max_pool2d(h, [2, 2], [2, 2], [0, 0], [1, 1], false);
            }
            h = conv.forward(h);
            if TAPS.contains(&i) {
                out.push(h.clone());
            }
            if i == TAPS[TAPS.len() - 1] {
                break; // conv5_4 is the last tap: no ReLU after it
            }
            h = relu(h);
        }
        out
    }
}

/// The perceptual loss: a frozen VGG19, and the matrices that resize images to its
/// input side.
#[derive(Debug)]
pub struct PerceptualLoss<B: Backend> {
    vgg: Vgg19<B>,
    size: usize,
    /// The bilinear resize `R` `[size, input]`, transposed: images become `R · x · Rᵀ`
    /// ([`crate::alexnet::resize`], which says why not Burn's `interpolate`).
    resize_t: Tensor<B, 2>,
    input: usize,
    mean: Tensor<B, 4>,
    std: Tensor<B, 4>,
}

impl<B: Backend> PerceptualLoss<B> {
    /// `input`: the side of the images that will be compared (the decoder's image
    /// size); `size`: the side they are resized to before VGG (224 in the method;
    /// at least 32, as conv5 sees the image halved four times).
    pub fn new(
        vgg: Vgg19<B>,
        input: usize,
        size: usize,
        device: &B::Device,
    ) -> anyhow::Result<Self> {
        if size < 32 {
            bail!("the VGG19 input side must be at least 32 px (got {size}): conv5 sees it halved four times");
        }
        if input == 0 {
            bail!("the images to compare have no pixels");
        }
        let channel =
            |v: [f32; 3]| Tensor::from_data(TensorData::new(v.to_vec(), [1, 3, 1, 1]), device);
        let resize: Tensor<B, 2> = Tensor::from_data(
            TensorData::new(bilinear_matrix(input, size), [size, input]),
            device,
        );
        Ok(PerceptualLoss {
            vgg: vgg.no_grad(),
            size,
            resize_t: resize.transpose(),
            input,
            mean: channel(IMAGENET_MEAN),
            std: channel(IMAGENET_STD),
        })
    }

    /// The frozen network.
    pub fn vgg(&self) -> &Vgg19<B> {
        &self.vgg
    }

    /// Resizes `[n, 3, input, input]` images in 0…1 to the loss size (bilinear,
    /// half-pixel centres as torch's `interpolate(align_corners=False)`) and
    /// normalises them. Plain 2-D matrix products: every backend differentiates them.
    pub fn prepare(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let (i, s) = (self.input, self.size);
        assert_eq!([h, w], [i, i], "PerceptualLoss was built for {i} px images");
        let x = if i == s {
            x
        } else {
            resize(x, self.resize_t.clone(), self.resize_t.clone())
        };
        (x - self.mean.clone()) / self.std.clone()
    }

    /// Mean over the layers of the mean |features(fake) − features(real)|.
    pub fn forward(&self, fake: Tensor<B, 4>, real: Tensor<B, 4>) -> Tensor<B, 1> {
        let a = self.vgg.taps(self.prepare(fake));
        // The true images are a target: no gradient flows into them.
        let b = self.vgg.taps(self.prepare(real.detach()));
        let n = a.len() as f64;
        a.into_iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs().mean())
            .reduce(|s, t| s + t)
            .expect("five layers")
            .div_scalar(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::CpuBackend;
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

    /// The matrix resize equals Burn's bilinear `interpolate` with half-pixel
    /// centres, up and down.
    #[test]
    fn matrix_resize_matches_bilinear_interpolate() {
        let device = Default::default();
        for (input, size) in [(24, 32), (96, 224), (40, 32), (32, 32)] {
            let vgg = Vgg19::<CpuBackend>::new([2, 2, 2, 2, 2], &device);
            let loss = PerceptualLoss::new(vgg, input, size, &device).unwrap();
            let n = 2 * 3 * input * input;
            let v: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
                .collect();
            let x = Tensor::<CpuBackend, 4>::from_data(
                TensorData::new(v, [2, 3, input, input]),
                &device,
            );
            let ours = loss.prepare(x.clone()) * loss.std.clone() + loss.mean.clone();
            let burns = interpolate(
                x,
                [size, size],
                InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false),
            );
            let diff: f32 = (ours - burns).abs().max().into_scalar();
            assert!(diff < 1e-5, "{input} -> {size}: max difference {diff}");
        }
    }
}
