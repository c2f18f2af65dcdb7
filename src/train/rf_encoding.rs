//! An encoding loss for the learned RF layer: each electrode's response predicted from the
//! image inside its Gaussian RF, so the RF centres and sizes learn what RF mapping measures.
//!
//! Why: the decoding loss alone does not place the centres at the truth. A U-Net trained on
//! the true centres and then frozen still moves them to wherever its reconstructions improve,
//! mostly sideways of the truth (`README`'s RF experiments: at 0.2 px/step the mean V1
//! error grew from 0.37° to 0.47° while pixel r rose), and with Adam's default ε of 1e-5 the
//! tiny centre gradients (~1e-6 per pixel) barely moved them at all.
//!
//! The encoding model, per electrode e (slot of the RF layer):
//! `r̂ₑ = Σₖ wₑₖ·⟨Gₑ, Φₖ⟩ + cₑ`, with `⟨Gₑ, Φ⟩` the Gaussian-weighted mean of feature map Φ
//! over the image (the layer's own separable factors, normalised to unit sum), Φ the
//! luminance, the red–green and blue–yellow opponent signals and the local contrast energy
//! of the stimulus, and w, c per-electrode weights of this head (trained with it, not saved
//! with the model). The loss is the mean squared error against the electrode's z-scored
//! window mean (the decoder's own input). Its gradient reaches μ and σ through the same
//! factors the decoder uses.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::decoder::GaussianRfLayer;

/// Feature maps per image.
pub const N_FEATURES: usize = 4;

/// The encoding head: per slot of the RF layer, weights on the feature maps and a bias.
#[derive(Module, Debug)]
pub struct RfEncoder<B: Backend> {
    /// `[slots, N_FEATURES]`
    pub weight: Param<Tensor<B, 2>>,
    /// `[slots]`
    pub bias: Param<Tensor<B, 1>>,
}

/// Φ for images `[n][3][size][size]` in [0, 1] → `[n][N_FEATURES][size][size]`:
/// luminance − ½, R − G, (R + G)/2 − B, and the squared gradient of the luminance
/// (central differences, one-sided at the edges).
pub fn feature_maps(images: &[f32], size: usize) -> Vec<f32> {
    let plane = size * size;
    let mut out = vec![0.0f32; images.len() / 3 * N_FEATURES];
    for (img, o) in images
        .chunks_exact(3 * plane)
        .zip(out.chunks_exact_mut(N_FEATURES * plane))
    {
        let (r, rest) = img.split_at(plane);
        let (g, b) = rest.split_at(plane);
        let (lum, rest) = o.split_at_mut(plane);
        let (rg, rest) = rest.split_at_mut(plane);
        let (by, energy) = rest.split_at_mut(plane);
        for i in 0..plane {
            lum[i] = (r[i] + g[i] + b[i]) / 3.0 - 0.5;
            rg[i] = r[i] - g[i];
            by[i] = 0.5 * (r[i] + g[i]) - b[i];
        }
        for y in 0..size {
            for x in 0..size {
                let at = |yy: usize, xx: usize| lum[yy * size + xx];
                let dx = (at(y, (x + 1).min(size - 1)) - at(y, x.saturating_sub(1)))
                    / ((x + 1).min(size - 1) - x.saturating_sub(1)).max(1) as f32;
                let dy = (at((y + 1).min(size - 1), x) - at(y.saturating_sub(1), x))
                    / ((y + 1).min(size - 1) - y.saturating_sub(1)).max(1) as f32;
                energy[y * size + x] = dx * dx + dy * dy;
            }
        }
    }
    out
}

impl<B: Backend> RfEncoder<B> {
    /// Zero weights and biases for the slots of `layer`.
    pub fn new(layer: &GaussianRfLayer<B>, device: &B::Device) -> Self {
        let slots = layer.n_slots();
        Self {
            weight: Param::from_tensor(Tensor::zeros([slots, N_FEATURES], device)),
            bias: Param::from_tensor(Tensor::zeros([slots], device)),
        }
    }

    /// The mean squared error of the predicted responses: `features [batch, N_FEATURES, H, W]`
    /// (from [`feature_maps`]), `responses [batch, electrodes]` (the decoder's input).
    pub fn loss(
        &self,
        layer: &GaussianRfLayer<B>,
        features: Tensor<B, 4>,
        responses: Tensor<B, 2>,
    ) -> Tensor<B, 1> {
        let [batch, k, h, w] = features.dims();
        let (gy_t, gx) = layer.factors(); // [A, H, M], [A, M, W]
        let [a, _, m] = gy_t.dims();
        let s = a * m;
        let gx = gx.reshape([s, w]); // [S, W]
        let gy = gy_t.swap_dims(1, 2).reshape([s, h]); // [S, H]
                                                       // Unit-sum weights: the Gaussian-weighted mean, whatever the RF size.
        let norm = (gx.clone().sum_dim(1) * gy.clone().sum_dim(1))
            .add_scalar(1e-12)
            .recip()
            .reshape([1, 1, s]); // [1, 1, S]
        let t = features
            .reshape([batch * k * h, w])
            .matmul(gx.transpose()) // [B·K·H, S]
            .reshape([batch * k, h, s]);
        let inner = (t * gy.transpose().unsqueeze::<3>()) // [B·K, H, S]
            .sum_dim(1)
            .reshape([batch, k, s])
            * norm; // [B, K, S]
        let predicted = (inner.swap_dims(1, 2) * self.weight.val().unsqueeze::<3>())
            .sum_dim(2)
            .reshape([batch, s])
            + self.bias.val().unsqueeze::<2>(); // [B, S]
        let electrodes = responses.dims()[1];
        let target = layer.slot_responses(responses); // [B, S]
        let mask = layer.slot_mask_row(); // [1, S]: 0 in padding
        ((predicted - target).powi_scalar(2) * mask)
            .sum()
            .div_scalar((batch * electrodes.max(1)) as f64)
    }
}

/// Feature maps as a tensor `[n, N_FEATURES, size, size]`.
pub fn feature_tensor<B: Backend>(images: &[f32], size: usize, device: &B::Device) -> Tensor<B, 4> {
    let n = images.len() / (3 * size * size);
    Tensor::from_data(
        TensorData::new(feature_maps(images, size), [n, N_FEATURES, size, size]),
        device,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::{CpuTrainBackend as AD, DecoderConfig, DecoderKind, ElectrodeSpec};
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn config(rfs: &[[f32; 3]]) -> DecoderConfig {
        let electrodes = rfs
            .iter()
            .map(|&rf| ElectrodeSpec {
                array: 0,
                area: 0,
                rf_px: Some(rf),
            })
            .collect();
        DecoderConfig::for_test(DecoderKind::EndToEnd, 1, 1, electrodes)
    }

    /// Responses made by Gaussian RFs at the truth (the luminance they weigh, with noise);
    /// the layer starts 4 px off and learns its centres from the encoding loss alone.
    #[test]
    fn the_encoding_loss_pulls_rf_centres_to_where_the_electrodes_respond() {
        let dev = Default::default();
        let size = 32;
        let truth = [[10.0f32, 12.0, 2.5], [20.0, 9.0, 3.0], [16.0, 22.0, 2.0]];
        let start: Vec<[f32; 3]> = truth
            .iter()
            .zip([[4.0f32, 0.0], [-3.0, 3.0], [0.0, -4.0]])
            .map(|(t, d)| [t[0] + d[0], t[1] + d[1], t[2]])
            .collect();
        let mut rng = StdRng::seed_from_u64(1);
        // Blocky random images, so luminance varies on the scale of the RFs.
        let image = |rng: &mut StdRng| -> Vec<f32> {
            let blocks: Vec<f32> = (0..3 * 16).map(|_| rng.random_range(0.0f32..1.0)).collect();
            (0..3 * size * size)
                .map(|i| {
                    let (c, p) = (i / (size * size), i % (size * size));
                    blocks[c * 16 + (p / size / 8) * 4 + (p % size) / 8]
                })
                .collect()
        };
        let respond = |img: &[f32], rng: &mut StdRng| -> Vec<f32> {
            truth
                .iter()
                .map(|&[x, y, s]| {
                    let (mut num, mut den) = (0.0f32, 0.0f32);
                    for py in 0..size {
                        for px in 0..size {
                            let d2 = (px as f32 + 0.5 - x).powi(2) + (py as f32 + 0.5 - y).powi(2);
                            let g = (-d2 / (2.0 * s * s)).exp();
                            let p = py * size + px;
                            let lum =
                                (img[p] + img[size * size + p] + img[2 * size * size + p]) / 3.0;
                            num += g * lum;
                            den += g;
                        }
                    }
                    3.0 * (num / den - 0.5) + rng.random_range(-0.05f32..0.05)
                })
                .collect()
        };
        let mut layer = GaussianRfLayer::<AD>::new(&config(&start), &dev);
        let mut head = RfEncoder::<AD>::new(&layer, &dev);
        let mut opt_rf = AdamConfig::new()
            .with_epsilon(1e-8)
            .init::<AD, GaussianRfLayer<AD>>();
        let mut opt_head = AdamConfig::new().init::<AD, RfEncoder<AD>>();
        let distance = |layer: &GaussianRfLayer<AD>| -> f32 {
            let mx: Vec<f32> = layer.mu_x.val().into_data().to_vec().unwrap();
            let my: Vec<f32> = layer.mu_y.val().into_data().to_vec().unwrap();
            truth
                .iter()
                .enumerate()
                .map(|(e, t)| ((mx[e] - t[0]).powi(2) + (my[e] - t[1]).powi(2)).sqrt())
                .sum::<f32>()
                / 3.0
        };
        let before = distance(&layer);
        for _ in 0..300 {
            let imgs: Vec<Vec<f32>> = (0..8).map(|_| image(&mut rng)).collect();
            let r: Vec<f32> = imgs.iter().flat_map(|i| respond(i, &mut rng)).collect();
            let flat: Vec<f32> = imgs.concat();
            let loss = head.loss(
                &layer,
                feature_tensor::<AD>(&flat, size, &dev),
                Tensor::from_data(TensorData::new(r, [8, 3]), &dev),
            );
            let mut grads = loss.backward();
            let g_layer = GradientsParams::from_module(&mut grads, &layer);
            let g_head = GradientsParams::from_module(&mut grads, &head);
            layer = opt_rf.step(0.05, layer, g_layer);
            head = opt_head.step(0.05, head, g_head);
        }
        let after = distance(&layer);
        assert!(
            after < 0.3 * before,
            "mean distance to the truth {before:.2} → {after:.2} px"
        );
    }
}
