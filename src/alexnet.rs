//! AlexNet feature correlation: how alike a reconstruction and its stimulus look to
//! torchvision's ImageNet AlexNet (Krizhevsky 2014, "One weird trick"), layer by layer,
//! as MonkeySee reports it (Le, Güçlü et al., NeurIPS 2024, Table 1).
//!
//! **Where the layers are read.** We follow the authors' analysis code: the
//! quantification notebook of their IRFA project (github.com/neuralcodinglab/IRFA,
//! `analysis/quantification.ipynb`; the MonkeySee repository itself,
//! neuralcodinglab/MonkeySee, holds only data preparation and training). It slices
//! torchvision's `alexnet(weights=AlexNet_Weights.DEFAULT)` in eval mode as
//!
//! | layer | notebook slice                        | what that is                        |
//! |-------|---------------------------------------|-------------------------------------|
//! | conv1 | `features[:3]`                        | conv1 → ReLU → max-pool             |
//! | conv2 | `features[:6]`                        | conv2 → ReLU → max-pool             |
//! | conv3 | `features[:7]`                        | conv3, **before** its ReLU          |
//! | conv4 | `features[:9]`                        | conv4, **before** its ReLU          |
//! | conv5 | `features[:13]`                       | conv5 → ReLU → max-pool             |
//! | fc6   | `classifier[:3]` on flatten(avgpool)  | fc6 → ReLU                          |
//! | fc7   | `classifier[:5]` on flatten(avgpool)  | fc7, **before** its ReLU            |
//! | fc8   | `classifier`     on flatten(avgpool)  | the logits                          |
//!
//! so a slice ends after a pool where one follows and before a ReLU where the next
//! module is one; we read the same tensors (see [`AlexNet::layers`]), not a uniform
//! "after every ReLU" choice. (The notebook also imports an `ANET` helper from its
//! `utils.py` that slices differently; its correlation functions use the slices
//! above.) Each layer's activations are flattened per image
//! (`[n, C·H·W]`, channel-major), and the notebook's `pearsonr(fs.flatten(),
//! fs_hat.flatten())` makes **one** Pearson r per layer over all test images' features
//! concatenated, beside `((fs − fs_hat)²).mean()`: [`Features::correlations`] computes
//! exactly these two, pooled over every image, not a mean of per-image values.
//!
//! **Input.** Images in 0…1 are resized bilinearly (half-pixel centres, as torch's
//! `interpolate(align_corners=False)`) to the network's side (224 px) and normalised
//! with ImageNet's channel means and deviations. The notebook goes through PIL instead:
//! it quantises the images to 8 bits (`(x·255).astype(uint8)`) and resizes with
//! `transforms.Resize((224, 224))` (8-bit output again); we keep the images in float,
//! a difference of about one grey level (1/255) per pixel.
//!
//! **Weights.** torchvision's pretrained `alexnet-owt-7be5be79.pth` (or the older
//! `alexnet-owt-4df8aa71.pth`), a file the user supplies: nothing can be downloaded
//! here. It is read with burn-store's PyTorch reader (legacy pickle and zip formats of
//! `torch.save`); the layer widths come from the file, so a narrower network saved the
//! same way (the test fixture) loads too. torch's `Linear` weights are `[out, in]`,
//! Burn's `[in, out]`: burn-store's `PyTorchToBurnAdapter` transposes them on load.
//!
//! **Cost.** Offline: the images go through the network eight at a time.
//! [`Features`] keeps every image's activations (~0.8 MB each at 224 px) to score many sets of reconstructions
//! against one set of originals with a single pass over the originals.

use std::path::Path;

use anyhow::{bail, Context};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::{adaptive_avg_pool2d, max_pool2d};
use burn::tensor::{Tensor, TensorData};
use burn_store::PytorchStore;
use serde::Serialize;

use crate::decoder::host_values;
use crate::decoder::kernels::bilinear_matrix;
use crate::decoder::linear::pearson;

/// The layers of the correlation, in the network's order.
pub const LAYERS: [&str; 8] = [
    "conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8",
];
/// The input side of the pretrained network (and of the paper's table).
pub const INPUT_SIZE: usize = 224;
/// The smallest input side the network takes: conv5's map must survive three
/// 3 × 3 max-pools of stride 2 (63 px: 15 → 7 → 3 → 1).
pub const MIN_INPUT_SIZE: usize = 63;
/// torchvision's layer widths.
pub const ALEXNET_WIDTHS: AlexNetWidths = AlexNetWidths {
    conv: [64, 192, 384, 256, 256],
    fc: [4096, 4096, 1000],
};
/// Images per forward pass in [`Features::at`] (the real network's
/// activations at 224 px are ~0.8 MB per image).
const BATCH: usize = 8;
/// torchvision's index of each convolution in `features` and of each linear layer in
/// `classifier` (ReLUs, max-pools and dropouts take the indices between).
const FEATURES_INDEX: [usize; 5] = [0, 3, 6, 8, 10];
const CLASSIFIER_INDEX: [usize; 3] = [1, 4, 6];
/// Kernel side, stride and padding of conv1…conv5.
const KERNEL: [usize; 5] = [11, 5, 3, 3, 3];
const STRIDE: [usize; 5] = [4, 1, 1, 1, 1];
const PADDING: [usize; 5] = [2, 2, 1, 1, 1];
/// The adaptive average pool's output side before the classifier.
const POOLED: usize = 6;
/// ImageNet's channel means and deviations, torchvision's normalisation.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Output channels of conv1…conv5 and output features of fc6…fc8 (fc8's are the
/// classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlexNetWidths {
    pub conv: [usize; 5],
    pub fc: [usize; 3],
}

/// torchvision's AlexNet, in inference only (its dropouts are the identity).
#[derive(Module, Debug)]
pub struct AlexNet<B: Backend> {
    /// conv1…conv5.
    features: Vec<Conv2d<B>>,
    /// fc6…fc8.
    classifier: Vec<Linear<B>>,
}

/// One layer's agreement between reconstructions and originals.
#[derive(Serialize, Clone, Debug)]
pub struct LayerCorrelation {
    /// One of [`LAYERS`].
    pub layer: String,
    /// Pearson r over all images' features at once (0 where either side is constant).
    pub r: f64,
    /// Mean squared difference over the same features.
    pub mse: f64,
}

impl<B: Backend> AlexNet<B> {
    /// An AlexNet with random weights and the given widths (torchvision's are
    /// [`ALEXNET_WIDTHS`]); [`AlexNet::load`] fills one from a file.
    pub fn new(widths: AlexNetWidths, device: &B::Device) -> Self {
        let c = widths.conv;
        let conv = |i: usize, c_in: usize| {
            let (k, s, p) = (KERNEL[i], STRIDE[i], PADDING[i]);
            Conv2dConfig::new([c_in, c[i]], [k, k])
                .with_stride([s, s])
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .init(device)
        };
        let f = widths.fc;
        let fc_in = [c[4] * POOLED * POOLED, f[0], f[1]];
        AlexNet {
            features: (0..5)
                .map(|i| conv(i, if i == 0 { 3 } else { c[i - 1] }))
                .collect(),
            classifier: (0..3)
                .map(|i| LinearConfig::new(fc_in[i], f[i]).init(device))
                .collect(),
        }
    }

    /// Reads torchvision's AlexNet state dict (`features.*`, `classifier.*`) from a
    /// `.pth` file. The widths come from the file, so a reduced-width AlexNet saved the
    /// same way (the test fixture) loads too.
    pub fn load(path: &Path, device: &B::Device) -> anyhow::Result<Self> {
        let what = || {
            format!(
                "{}: expected torchvision's AlexNet state dict (alexnet-owt-7be5be79.pth)",
                path.display()
            )
        };
        let reader = crate::pth::open(path, &what)?;
        let keys = reader.keys();
        check_keys(&keys).map_err(|why| anyhow::anyhow!("{}; {why}", what()))?;
        let shape = |key: &str| crate::pth::f32_shape(&reader, key, &what);
        let mut widths = AlexNetWidths {
            conv: [0; 5],
            fc: [0; 3],
        };
        let mut c_in = 3;
        for (i, t) in FEATURES_INDEX.iter().enumerate() {
            let key = format!("features.{t}.weight");
            let s = shape(&key)?;
            let k = KERNEL[i];
            if s.len() != 4 || s[1] != c_in || s[2..] != [k, k] {
                bail!(
                    "{}; {key} has shape {s:?}, AlexNet's conv{} needs [out, {c_in}, {k}, {k}]",
                    what(),
                    i + 1
                );
            }
            widths.conv[i] = s[0];
            c_in = s[0];
        }
        let mut f_in = c_in * POOLED * POOLED;
        for (i, t) in CLASSIFIER_INDEX.iter().enumerate() {
            // torch's Linear weight: [out, in].
            let key = format!("classifier.{t}.weight");
            let s = shape(&key)?;
            if s.len() != 2 || s[1] != f_in {
                bail!(
                    "{}; {key} has shape {s:?}, AlexNet's fc{} needs [out, {f_in}]{}",
                    what(),
                    i + 6,
                    if i == 0 {
                        format!(" (conv5's {c_in} channels × {POOLED} × {POOLED})")
                    } else {
                        String::new()
                    }
                );
            }
            widths.fc[i] = s[0];
            f_in = s[0];
        }
        // A legacy-format file cut short would load with zeros (see the helper).
        let tensors = FEATURES_INDEX
            .iter()
            .map(|i| format!("features.{i}"))
            .chain(CLASSIFIER_INDEX.iter().map(|i| format!("classifier.{i}")))
            .flat_map(|m| [format!("{m}.weight"), format!("{m}.bias")]);
        if let Err((have, need)) = crate::pth::legacy_data_complete(&reader, tensors) {
            bail!(
                "{}; it is cut short: its tensor data has {have} bytes where AlexNet's 16 tensors need {need} (an interrupted download or copy? fetch the file again)",
                what()
            );
        }
        drop(reader);

        let mut net = AlexNet::new(widths, device);
        // Our `features` and `classifier` hold only the convolutions and linear layers,
        // numbered from 0: burn-store's contiguous index mapping closes torchvision's gaps
        // (ReLU, max-pool, dropout), each prefix on its own.
        let store = PytorchStore::from_file(path).map_indices_contiguous(true);
        crate::pth::load_into(&mut net, store, 16, &what)?;
        Ok(net)
    }

    /// The widths of the loaded network ([`ALEXNET_WIDTHS`] for torchvision's).
    pub fn widths(&self) -> AlexNetWidths {
        AlexNetWidths {
            conv: std::array::from_fn(|i| self.features[i].weight.dims()[0]),
            // Burn's Linear: [in, out].
            fc: std::array::from_fn(|i| self.classifier[i].weight.dims()[1]),
        }
    }

    /// The eight [`LAYERS`] of images `[n, 3, H, W]` in 0…1, resized to `size` px
    /// (224 for the pretrained network, at least [`MIN_INPUT_SIZE`]) and normalised;
    /// each flattened to `[n, features]`.
    pub fn activations(&self, images: Tensor<B, 4>, size: usize) -> Vec<Tensor<B, 2>> {
        self.layers(prepare(images, size))
    }

    /// The eight [`LAYERS`] of an ImageNet-normalised batch `[n, 3, S, S]`, read where
    /// the authors' notebook reads them (the module header's table).
    pub fn layers(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 2>> {
        let pool = |x| max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], false);
        let flat = |x: &Tensor<B, 4>| x.clone().flatten::<2>(1, 3);
        let (conv, fc) = (&self.features, &self.classifier);
        let c1 = pool(relu(conv[0].forward(x))); // [n, 64, 27, 27] at 224 px
        let c2 = pool(relu(conv[1].forward(c1.clone()))); // [n, 192, 13, 13]
        let c3 = conv[2].forward(c2.clone()); // [n, 384, 13, 13], before its ReLU
        let c4 = conv[3].forward(relu(c3.clone())); // [n, 256, 13, 13], before its ReLU
        let c5 = pool(relu(conv[4].forward(relu(c4.clone())))); // [n, 256, 6, 6]
        let pooled = adaptive_avg_pool2d(c5.clone(), [POOLED, POOLED]).flatten::<2>(1, 3); // [n, 9216]
        let f6 = relu(fc[0].forward(pooled)); // [n, 4096]
        let f7 = fc[1].forward(f6.clone()); // [n, 4096], before its ReLU
        let f8 = fc[2].forward(relu(f7.clone())); // [n, 1000]
        vec![
            flat(&c1),
            flat(&c2),
            flat(&c3),
            flat(&c4),
            flat(&c5),
            f6,
            f7,
            f8,
        ]
    }
}

/// What is wrong with a state dict's keys for AlexNet, if anything: it must hold
/// exactly `features.{0,3,6,8,10}` and `classifier.{1,4,6}`, weight and bias each.
fn check_keys(keys: &[String]) -> Result<(), String> {
    let mut expected: Vec<String> = FEATURES_INDEX
        .iter()
        .map(|i| format!("features.{i}"))
        .chain(CLASSIFIER_INDEX.iter().map(|i| format!("classifier.{i}")))
        .flat_map(|m| [format!("{m}.bias"), format!("{m}.weight")])
        .collect();
    expected.sort();
    let mut names: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("features.") || k.starts_with("classifier."))
        .collect();
    names.sort();
    if names
        .iter()
        .map(|k| k.as_str())
        .eq(expected.iter().map(|k| k.as_str()))
    {
        return Ok(());
    }
    let convs = keys
        .iter()
        .filter(|k| k.starts_with("features.") && k.ends_with(".weight"))
        .count();
    let missing = expected.iter().find(|k| !names.contains(k));
    let extra = names.iter().find(|k| !expected.contains(k));
    let hint = if keys.iter().any(|k| k.ends_with("running_mean")) {
        " (it has batch-norm statistics: AlexNet has none)".to_string()
    } else if convs > FEATURES_INDEX.len() {
        format!(" ({convs} convolutions under features.*: this looks like VGG, not AlexNet)")
    } else if let Some(prefix) = keys.iter().find_map(|k| {
        k.strip_suffix("features.0.weight")
            .filter(|p| !p.is_empty())
    }) {
        format!(
            " (the state dict is nested under `{prefix}`: save that part alone, e.g. torch.save(ckpt[\"{}\"], \"alexnet.pth\"))",
            prefix.trim_end_matches('.')
        )
    } else if names.is_empty() {
        let mut first: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        first.sort();
        first.truncate(4);
        format!(" (its first keys: {})", first.join(", "))
    } else {
        String::new()
    };
    Err(format!(
        "it has {} tensors under features.* and classifier.* where AlexNet has 16 (5 convolutions, 3 linear layers){}{}{hint}",
        names.len(),
        missing.map_or(String::new(), |k| format!("; missing {k}")),
        extra.map_or(String::new(), |k| format!("; unexpected {k}")),
    ))
}

/// Resizes `[n, 3, H, W]` images in 0…1 to `size` px (bilinear, half-pixel centres as
/// torch's `interpolate(align_corners=False)`) and normalises them with ImageNet's
/// channel means and deviations. Plain matrix products, as the perceptual loss does.
pub fn prepare<B: Backend>(images: Tensor<B, 4>, size: usize) -> Tensor<B, 4> {
    let [_, _, h, w] = images.dims();
    let device = images.device();
    let s = size;
    let x = if [h, w] == [s, s] {
        images
    } else {
        let resize_t = |len: usize| {
            Tensor::<B, 2>::from_data(TensorData::new(bilinear_matrix(len, s), [s, len]), &device)
                .transpose()
        };
        resize(images, resize_t(w), resize_t(h))
    };
    let channel =
        |v: [f32; 3]| Tensor::<B, 4>::from_data(TensorData::new(v.to_vec(), [1, 3, 1, 1]), &device);
    (x - channel(IMAGENET_MEAN)) / channel(IMAGENET_STD)
}

/// Resizes `[n, c, h, w]` images to `[n, c, s, s]` with the bilinear matrices `R` `[s, in]`
/// ([`bilinear_matrix`]), transposed: `rw_t` `[w, s]`, `rh_t` `[h, s]`. The columns become
/// x · Rwᵀ, then the rows the same way on the transpose. Plain 2-D matrix products, which
/// every backend differentiates: Burn's `interpolate` would do, but its bilinear backward
/// panics on the CUDA backend in Burn 0.21.
pub fn resize<B: Backend>(x: Tensor<B, 4>, rw_t: Tensor<B, 2>, rh_t: Tensor<B, 2>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let s = rw_t.dims()[1];
    let x = x.reshape([n * c * h, w]).matmul(rw_t); // [n·c·h, s]
    let x = x
        .reshape([n * c, h, s])
        .swap_dims(1, 2)
        .reshape([n * c * s, h]);
    let x = x.matmul(rh_t); // [n·c·s, s]: (column, row)
    x.reshape([n * c, s, s])
        .swap_dims(1, 2)
        .reshape([n, c, s, s])
}

/// The eight layers' activations of a set of images, kept so that several sets of
/// reconstructions can be scored against the same originals without running the
/// network on them again. Holds every feature: ~0.8 MB per image for the pretrained
/// network at 224 px.
#[derive(Debug, Clone)]
pub struct Features {
    /// Per layer, every image's flattened activations one after the other.
    layers: Vec<Vec<f32>>,
    images: usize,
}

impl Features {
    /// The features of `images` (each `[3][image_size][image_size]`, CHW, 0…1) at the
    /// pretrained network's [`INPUT_SIZE`].
    pub fn of<B: Backend>(
        net: &AlexNet<B>,
        images: &[Vec<f32>],
        image_size: usize,
        device: &B::Device,
    ) -> anyhow::Result<Self> {
        Self::at(net, images, image_size, INPUT_SIZE, device)
    }

    /// The features of `images` with the network's input side `input_size`.
    pub fn at<B: Backend>(
        net: &AlexNet<B>,
        images: &[Vec<f32>],
        image_size: usize,
        input_size: usize,
        device: &B::Device,
    ) -> anyhow::Result<Self> {
        check_images("image", images, image_size, input_size)?;
        let mut layers = vec![Vec::new(); LAYERS.len()];
        for chunk in images.chunks(BATCH) {
            let batch = batch_layers(net, chunk, image_size, input_size, device)?;
            for (all, b) in layers.iter_mut().zip(batch) {
                all.extend_from_slice(&b);
            }
        }
        Ok(Features {
            layers,
            images: images.len(),
        })
    }

    /// How many images these are the features of.
    pub fn images(&self) -> usize {
        self.images
    }

    /// Per layer, one Pearson r and the MSE between these features (the reconstructions')
    /// and `originals`', every image's flattened features pooled (the authors'
    /// `pearsonr(fs.flatten(), fs_hat.flatten())`, not a mean of per-image r).
    ///
    /// # Panics
    /// If the two sets hold different numbers of images or come from networks of
    /// different widths or input sides: the images must pair up one to one.
    pub fn correlations(&self, originals: &Features) -> Vec<LayerCorrelation> {
        assert_eq!(
            self.images, originals.images,
            "AlexNet features of {} reconstructions against {} originals",
            self.images, originals.images
        );
        self.layers
            .iter()
            .zip(&originals.layers)
            .zip(LAYERS)
            .map(|((a, b), layer)| {
                assert_eq!(
                    a.len(),
                    b.len(),
                    "{layer}: features from different networks"
                );
                let sq_diff = a
                    .iter()
                    .zip(b)
                    .map(|(&x, &y)| (x as f64 - y as f64).powi(2));
                LayerCorrelation {
                    layer: layer.to_string(),
                    r: pearson(a, b),
                    mse: sq_diff.sum::<f64>() / a.len().max(1) as f64,
                }
            })
            .collect()
    }
}

/// Refuses image sets the network cannot take: none at all, an image of the wrong
/// size, or an input side too small for conv5.
fn check_images(
    what: &str,
    images: &[Vec<f32>],
    image_size: usize,
    input_size: usize,
) -> anyhow::Result<()> {
    if input_size < MIN_INPUT_SIZE {
        bail!(
            "the AlexNet input side must be at least {MIN_INPUT_SIZE} px (got {input_size}): conv5 sees it pooled three times"
        );
    }
    if images.is_empty() {
        bail!("no images to correlate");
    }
    let len = 3 * image_size * image_size;
    if let Some((i, v)) = images.iter().enumerate().find(|(_, v)| v.len() != len) {
        bail!(
            "{what} {i} has {} values; a 3 × {image_size} × {image_size} image has {len}",
            v.len()
        );
    }
    Ok(())
}

/// One forward pass: per layer, the batch's flattened activations, image after image.
fn batch_layers<B: Backend>(
    net: &AlexNet<B>,
    images: &[Vec<f32>],
    image_size: usize,
    input_size: usize,
    device: &B::Device,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let data: Vec<f32> = images.iter().flatten().copied().collect();
    let shape = [images.len(), 3, image_size, image_size];
    let x = Tensor::from_data(TensorData::new(data, shape), device);
    net.activations(x, input_size)
        .into_iter()
        .map(|t| host_values(t).context("reading AlexNet features"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::CpuBackend;

    const TINY: AlexNetWidths = AlexNetWidths {
        conv: [4, 6, 6, 6, 6],
        fc: [12, 12, 5],
    };

    /// Deterministic values in 0…1.
    fn images(n: usize, side: usize, seed: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|i| {
                (0..3 * side * side)
                    .map(|j| (((i + seed) * 7919 + j * 104_729) % 1000) as f32 / 1000.0)
                    .collect()
            })
            .collect()
    }

    /// Reconstructions equal to the originals: every layer r = 1, MSE = 0.
    #[test]
    fn identical_images_correlate_perfectly() {
        let device = Default::default();
        let net = AlexNet::<CpuBackend>::new(TINY, &device);
        let originals = images(3, 16, 0);
        let kept = Features::at(&net, &originals, 16, 63, &device).unwrap();
        let c = kept.correlations(&kept);
        assert_eq!(
            c.iter().map(|l| l.layer.as_str()).collect::<Vec<_>>(),
            LAYERS
        );
        for l in c {
            assert!((l.r - 1.0).abs() < 1e-9, "{}: r {}", l.layer, l.r);
            assert_eq!(l.mse, 0.0, "{}", l.layer);
        }
    }

    /// Through the network, in batches: the result is the Pearson r of all images'
    /// activations concatenated, which differs from the mean of per-image r.
    #[test]
    fn feature_correlation_pools_every_images_activations() {
        let device = Default::default();
        let net = AlexNet::<CpuBackend>::new(TINY, &device);
        let side = 12;
        let n = BATCH + 3; // two batches
        let originals = images(n, side, 0);
        let recons = images(n, side, 5);
        let c = Features::at(&net, &recons, side, 64, &device)
            .unwrap()
            .correlations(&Features::at(&net, &originals, side, 64, &device).unwrap());
        let features = |v: &[Vec<f32>]| {
            let data: Vec<f32> = v.iter().flatten().copied().collect();
            let x = Tensor::from_data(TensorData::new(data, [n, 3, side, side]), &device);
            net.activations(x, 64)
                .into_iter()
                .map(|t| t.into_data().to_vec::<f32>().unwrap())
                .collect::<Vec<_>>()
        };
        let (fa, fb) = (features(&recons), features(&originals));
        let mut differs = false;
        for ((l, a), b) in c.iter().zip(&fa).zip(&fb) {
            let pooled = pearson(a, b);
            assert!(
                (l.r - pooled).abs() < 1e-6,
                "{}: {} vs {pooled}",
                l.layer,
                l.r
            );
            let per = a.len() / n;
            let mean_per_image = (0..n)
                .map(|i| pearson(&a[i * per..(i + 1) * per], &b[i * per..(i + 1) * per]))
                .sum::<f64>()
                / n as f64;
            differs |= (l.r - mean_per_image).abs() > 1e-3;
        }
        assert!(
            differs,
            "the pooled and the per-image r coincide on every layer"
        );
    }

    #[test]
    #[should_panic(expected = "reconstructions against")]
    fn kept_features_of_unpaired_sets_are_a_bug() {
        let device = Default::default();
        let net = AlexNet::<CpuBackend>::new(TINY, &device);
        let a = Features::at(&net, &images(2, 8, 0), 8, 63, &device).unwrap();
        let b = Features::at(&net, &images(3, 8, 0), 8, 63, &device).unwrap();
        a.correlations(&b);
    }

    /// Mismatched or malformed inputs are refused with a message, not a panic.
    #[test]
    fn bad_inputs_are_refused() {
        let device = Default::default();
        let net = AlexNet::<CpuBackend>::new(TINY, &device);
        let two = images(2, 8, 0);
        let e = Features::at(&net, &two, 8, 32, &device).unwrap_err();
        assert!(e.to_string().contains("at least 63"), "{e}");
        let e = Features::at(&net, &two, 9, 64, &device).unwrap_err();
        assert!(e.to_string().contains("3 × 9 × 9"), "{e}");
        let e = Features::at(&net, &[], 8, 64, &device).unwrap_err();
        assert!(e.to_string().contains("no images"), "{e}");
    }
}
