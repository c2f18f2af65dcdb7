//! The CPU training engine: one pix2pix step (discriminator, then generator) written on
//! the `gemm` crate's matrix product and plain-Rust kernels, as the CPU inference path
//! ([`crate::decoder::infer::HostUNet`]) is.
//!
//! Why: on Burn 0.21's Flex backend a width-16 training step spent ~45 % of its time in
//! strided iteration and `to_contiguous` copies around the autodiff graph's ops, and the
//! convolutions' own kernels ran on one core (perf, `monkeysee train --kind spatial`):
//! 21.5 samples/s against PyTorch's 93 on the same two cores. Here a convolution over a
//! whole batch is one product on `[channels][batch·h·w]` activations, its backward pass two
//! more, and everything else is a channel-parallel loop; buffers are reused from step to
//! step ([`layers::Workspace`]).
//!
//! The networks are the Burn modules' ([`crate::decoder::UNet`], [`crate::train::Discriminator`]):
//! weights are read from them at the start and written back to them for checkpoints and
//! the saved model, and tests hold this engine's outputs and gradients to Burn autodiff's.
//! A learned input layer (end-to-end, baseline) stays a Burn module: the engine returns the
//! gradient at the U-Net's input and the caller runs that layer's backward pass in Burn.

pub mod layers;
pub mod nets;

use burn::tensor::backend::Backend;
use rand::Rng;

use self::layers::{AdamSettings, ConvInput, Workspace};
pub use self::nets::{HostDiscriminator, HostGenerator};
use super::{Discriminator, LossWeights};
use crate::decoder::kernels::{swap_outer, Grid};
use crate::decoder::UNet;

/// One step's losses (means over the batch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLosses {
    /// `None` when the adversarial term is off (the discriminator does not run).
    pub d: Option<f64>,
    pub g_adversarial: Option<f64>,
    pub g_pixel_l1: f64,
    /// The extra generator term, if one was given (unweighted).
    pub g_extra: Option<f64>,
    /// The learned RF layer's encoding loss, if on (unweighted; set by the caller).
    pub rf_encoding: Option<f64>,
}

/// An extra generator loss computed outside the engine (the VGG19 perceptual loss, in
/// Burn): given the reconstructions `[batch][3][H][W]`, its unweighted value and its
/// gradient with respect to them, same layout.
pub type ExtraLoss<'a> = &'a mut (dyn FnMut(&[f32]) -> anyhow::Result<(f64, Vec<f32>)> + Send);

/// The pix2pix history pool on the host: each item is one (condition, image) pair
/// `[channels][H·W]`. Half the time the discriminator sees an older fake.
#[derive(Debug, Default)]
struct HistoryPool {
    size: usize,
    items: Vec<Vec<f32>>,
}

/// Generator, discriminator, their Adam states and the step's buffers.
#[derive(Debug)]
pub struct HostGan {
    pub gen: HostGenerator,
    pub disc: HostDiscriminator,
    /// The generator's weights are not updated (its gradients still reach the input).
    pub freeze_generator: bool,
    adam: AdamSettings,
    pool: HistoryPool,
    ws: Workspace,
}

/// `[outer][inner][n]` → `[inner][outer][n]` into a workspace buffer.
fn swapped(src: &[f32], outer: usize, inner: usize, n: usize, ws: &mut Workspace) -> Vec<f32> {
    let mut dst = ws.take(src.len());
    swap_outer(src, outer, inner, n, &mut dst);
    dst
}

/// Mean binary cross-entropy of logits against a constant target, and its gradient
/// (scaled by `scale`) per logit.
fn bce_logits(z: &[f32], target: f32, scale: f32) -> (f64, Vec<f32>) {
    let n = z.len() as f64;
    let loss = z
        .iter()
        .map(|&z| {
            let z = z as f64;
            z.max(0.0) - z * target as f64 + (-z.abs()).exp().ln_1p()
        })
        .sum::<f64>()
        / n;
    let k = scale / z.len() as f32;
    let grad = z
        .iter()
        .map(|&z| k * (1.0 / (1.0 + (-z).exp()) - target))
        .collect();
    (loss, grad)
}

impl HostGan {
    /// Copies the networks' weights; `pool_size` fakes are kept for the discriminator.
    pub fn new<B: Backend>(
        unet: &UNet<B>,
        disc: &Discriminator<B>,
        pool_size: usize,
        beta1: f64,
    ) -> Self {
        Self {
            gen: HostGenerator::from_unet(unet),
            disc: HostDiscriminator::from_module(disc),
            freeze_generator: false,
            adam: AdamSettings::new(beta1 as f32),
            pool: HistoryPool {
                size: pool_size,
                items: Vec::new(),
            },
            ws: Workspace::default(),
        }
    }

    /// One training step on `x [batch][in][size][size]` (the U-Net input) and the stimuli
    /// `y [batch][3][size][size]`: the discriminator learns on a real and a pooled fake
    /// pair, then the generator on `weights.adversarial · BCE(D(x, ŷ), 1) +
    /// weights.pixel · L1(ŷ, y)` (+ `weights.vgg ·` the extra loss). The condition x is
    /// detached from the adversarial term, as in the Burn loop. Returns the losses and, if
    /// `input_grad`, the gradient at x (same layout as x).
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        x: &[f32],
        y: &[f32],
        batch: usize,
        size: usize,
        lr: f64,
        weights: LossWeights,
        rng: &mut (impl Rng + Send),
        input_grad: bool,
        extra: Option<ExtraLoss<'_>>,
    ) -> anyhow::Result<(StepLosses, Option<Vec<f32>>)> {
        // The whole step runs on one of Rayon's workers: its many short parallel loops then
        // split by work stealing instead of each handing a job from this thread to the pool
        // and waiting (a context switch each; ~12 % of a step on two cores). Not with an
        // extra loss: that runs Burn's autodiff, whose graph lock must never be waited for on
        // a worker (a thread holding it may be waiting for the workers: a deadlock, seen
        // with two trainings in one process).
        if extra.is_some() {
            return self.step_on_worker(x, y, batch, size, lr, weights, rng, input_grad, extra);
        }
        rayon::scope(|_| {
            self.step_on_worker(x, y, batch, size, lr, weights, rng, input_grad, extra)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn step_on_worker(
        &mut self,
        x: &[f32],
        y: &[f32],
        batch: usize,
        size: usize,
        lr: f64,
        weights: LossWeights,
        rng: &mut impl Rng,
        input_grad: bool,
        extra: Option<ExtraLoss<'_>>,
    ) -> anyhow::Result<(StepLosses, Option<Vec<f32>>)> {
        let plane = size * size;
        let c_in = self.gen.in_channels();
        anyhow::ensure!(
            x.len() == batch * c_in * plane && y.len() == batch * 3 * plane,
            "training batch of the wrong size"
        );
        let grid = Grid { batch, side: size };
        let ws = &mut self.ws;
        let xc = swapped(x, batch, c_in, plane, ws); // [in][batch·plane]
        let yc = swapped(y, batch, 3, plane, ws); // [3][batch·plane]
                                                  // The generator's stem and the discriminator's condition read the same input.
        let input = ConvInput::new(&xc, c_in, grid, !input_grad, ws);
        let base = self.gen.residual().then(|| &xc[(c_in - 3) * grid.n()..]);
        let tape = self.gen.forward_train(&input, base, grid, ws);

        // With the adversarial term off the discriminator has no part in the objective
        // and does not run.
        let adversarial = weights.adversarial != 0.0;
        let (d, mut dy, adv) = if adversarial {
            let d = self.discriminator_step(&input, &xc, &yc, &tape.out, grid, lr, rng);
            let (dy, adv) = self.adversarial_gradient(&input, &tape.out, grid, weights.adversarial);
            (Some(d), dy, Some(adv))
        } else {
            (None, self.ws.zeros(tape.out.len()), None)
        };
        let ws = &mut self.ws;
        self.gen.params.zero_grad();
        let n_pix = tape.out.len() as f64;
        let k = (weights.pixel / n_pix) as f32;
        let mut l1 = 0.0f64;
        for ((d, &f), &t) in dy.iter_mut().zip(&tape.out).zip(&yc) {
            let diff = f - t;
            l1 += diff.abs() as f64;
            *d += k * diff.signum() * f32::from(diff != 0.0);
        }
        let l1 = l1 / n_pix;
        let g_extra = match extra {
            Some(f) => {
                let fake = swapped(&tape.out, 3, batch, plane, ws); // [batch][3][plane]
                let (value, grad) = f(&fake)?;
                ws.give(fake);
                anyhow::ensure!(
                    grad.len() == dy.len(),
                    "extra loss gradient of the wrong size"
                );
                let grad_c = swapped(&grad, batch, 3, plane, ws);
                let w = weights.vgg as f32;
                for (d, &g) in dy.iter_mut().zip(&grad_c) {
                    *d += w * g;
                }
                ws.give(grad_c);
                Some(value)
            }
            None => None,
        };
        let dx = self.gen.backward(tape, &input, dy, input_grad, ws);
        input.release(ws);
        if !self.freeze_generator {
            self.gen.params.adam_step(lr as f32, self.adam);
        }
        let dx = dx.map(|dx| {
            let out = swapped(&dx, c_in, batch, plane, ws);
            ws.give(dx);
            out
        });
        ws.give(xc);
        ws.give(yc);
        Ok((
            StepLosses {
                d,
                g_adversarial: adv,
                g_pixel_l1: l1,
                g_extra,
                rf_encoding: None,
            },
            dx,
        ))
    }

    /// The discriminator learns `½ (BCE(D(x, pool(ŷ)), 0) + BCE(D(x, y), 1))` for one
    /// Adam step; returns that loss.
    #[allow(clippy::too_many_arguments)]
    fn discriminator_step(
        &mut self,
        input: &ConvInput,
        xc: &[f32],
        yc: &[f32],
        fake: &[f32],
        grid: Grid,
        lr: f64,
        rng: &mut impl Rng,
    ) -> f64 {
        let ws = &mut self.ws;
        let c_in = self.gen.in_channels();
        self.disc.params.zero_grad();
        let mut cond = self.disc.condition(input, grid, ws);
        let (d_real, t_real) = self.disc.forward(&cond, Vec::new(), yc, grid, ws);
        let (loss_real, g_real) = bce_logits(&d_real, 1.0, 0.5);
        self.disc
            .backward(t_real, &mut cond, &g_real, true, false, ws);
        ws.give(d_real);
        let mut pooled = ws.take(fake.len());
        pooled.copy_from_slice(fake);
        let replaced = self.pool.query(xc, &mut pooled, c_in, grid, rng);
        let patches = replaced
            .into_iter()
            .map(|(b, x_old)| self.disc.patch(b, &x_old, grid.side, ws))
            .collect();
        let (d_fake, t_fake) = self.disc.forward(&cond, patches, &pooled, grid, ws);
        ws.give(pooled);
        let (loss_fake, g_fake) = bce_logits(&d_fake, 0.0, 0.5);
        self.disc
            .backward(t_fake, &mut cond, &g_fake, true, false, ws);
        ws.give(d_fake);
        self.disc.finish_condition(input, &mut cond);
        cond.release(ws);
        self.disc.params.adam_step(lr as f32, self.adam);
        0.5 * (loss_real + loss_fake)
    }

    /// The (updated) discriminator on `(x, ŷ)` without the pool: `weight · BCE(D(x, ŷ), 1)`'s
    /// gradient at ŷ `[3][grid]`, and the unweighted BCE.
    fn adversarial_gradient(
        &mut self,
        input: &ConvInput,
        fake: &[f32],
        grid: Grid,
        weight: f64,
    ) -> (Vec<f32>, f64) {
        let ws = &mut self.ws;
        let mut cond = self.disc.condition(input, grid, ws);
        let (d_gen, t_gen) = self.disc.forward(&cond, Vec::new(), fake, grid, ws);
        let (adv, g_adv) = bce_logits(&d_gen, 1.0, weight as f32);
        let dy = self
            .disc
            .backward(t_gen, &mut cond, &g_adv, false, true, ws)
            .expect("image gradient asked for"); // [3][batch·plane]
        cond.release(ws);
        ws.give(d_gen);
        (dy, adv)
    }
}

impl HistoryPool {
    /// pix2pix's ImagePool on (condition, fake) pairs: once the pool is full, each sample
    /// of the batch is, half the time, swapped for an older pair (the same random draws as
    /// the Burn engine's pool). `fake [3][grid]` is updated in place; returns the samples
    /// whose condition changed, with that condition `[in][side²]`.
    fn query(
        &mut self,
        x: &[f32],
        fake: &mut [f32],
        c_in: usize,
        grid: Grid,
        rng: &mut impl Rng,
    ) -> Vec<(usize, Vec<f32>)> {
        let mut replaced = Vec::new();
        if self.size == 0 {
            return replaced;
        }
        let plane = grid.side * grid.side;
        let n = grid.n();
        // One sample's pair, [in + 3][plane].
        let read = |fake: &[f32], b: usize| -> Vec<f32> {
            let mut item = vec![0.0f32; (c_in + 3) * plane];
            for (c, dst) in item.chunks_exact_mut(plane).enumerate() {
                let src = if c < c_in {
                    &x[c * n + b * plane..]
                } else {
                    &fake[(c - c_in) * n + b * plane..]
                };
                dst.copy_from_slice(&src[..plane]);
            }
            item
        };
        for b in 0..grid.batch {
            if self.items.len() < self.size {
                self.items.push(read(fake, b));
            } else if rng.random_bool(0.5) {
                let j = rng.random_range(0..self.size);
                let mut old = std::mem::replace(&mut self.items[j], read(fake, b));
                for c in 0..3 {
                    fake[c * n + b * plane..][..plane]
                        .copy_from_slice(&old[(c_in + c) * plane..][..plane]);
                }
                old.truncate(c_in * plane);
                replaced.push((b, old));
            }
        }
        replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::arch::{test_architectures, Architecture};
    use crate::decoder::CpuTrainBackend as AD;
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    use burn::tensor::backend::AutodiffBackend;
    use burn::tensor::{Tensor, TensorData};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
    }

    fn tensor<const D: usize>(v: &[f32], shape: [usize; D]) -> Tensor<AD, D> {
        Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
    }

    fn host_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    /// Every float tensor a module visits (parameters and running statistics), in order:
    /// its value, or its gradient (`None` for the running statistics, which have none).
    struct Collect<'a> {
        grads: Option<&'a <AD as AutodiffBackend>::Gradients>,
        out: Vec<Option<Vec<f32>>>,
    }

    impl ModuleVisitor<AD> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
            self.out.push(match self.grads {
                Some(g) => param.grad(g).map(host_vec),
                None => Some(host_vec(param.val())),
            });
        }
    }

    fn collect<M: Module<AD>>(
        m: &M,
        grads: Option<&<AD as AutodiffBackend>::Gradients>,
    ) -> Vec<Option<Vec<f32>>> {
        let mut c = Collect {
            grads,
            out: Vec::new(),
        };
        m.visit(&mut c);
        c.out
    }

    /// Largest |a − b| over the largest |b| (1 if b is all zeros).
    fn rel_err(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        a.iter()
            .zip(b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    fn to_cb(x: &[f32], batch: usize, c: usize, plane: usize) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        swap_outer(x, batch, c, plane, &mut out);
        out
    }

    #[test]
    fn generator_forward_and_gradients_equal_burn_autodiff() {
        for arch in test_architectures(5, 4) {
            generator_matches_burn(&arch);
        }
    }

    /// See the test above, for one architecture.
    fn generator_matches_burn(arch: &Architecture) {
        let (batch, c_in, size) = (3, arch.in_channels, arch.size_multiple().max(32));
        let residual = arch.residual;
        let plane = size * size;
        let mut rng = StdRng::seed_from_u64(1);
        let dev = Default::default();
        let mut unet: UNet<AD> = UNet::init_pix2pix(arch, &mut rng, &dev);
        // A residual head starts at zero; give it weights so its gradients are tested.
        let plain = arch.clone().with_residual(false);
        unet.head = UNet::init_pix2pix(&plain, &mut rng, &dev).head;
        let mut gen = HostGenerator::from_unet(&unet);
        let mut x = values(batch * c_in * plane, 2);
        // The base image (the last 3 channels) inside (0, 1), as an image is.
        for b in 0..batch {
            for v in &mut x[(b * c_in + c_in - 3) * plane..(b + 1) * c_in * plane] {
                *v = 0.5 + 0.2 * *v;
            }
        }
        let r = values(batch * 3 * plane, 3);

        let xt = tensor(&x, [batch, c_in, size, size]).require_grad();
        let out = unet.forward(xt.clone());
        let grads = (out.clone() * tensor(&r, [batch, 3, size, size]))
            .sum()
            .backward();

        let mut ws = Workspace::default();
        let grid = Grid { batch, side: size };
        let xc = to_cb(&x, batch, c_in, plane);
        let input = ConvInput::new(&xc, c_in, grid, false, &mut ws);
        let base = residual.then(|| &xc[(c_in - 3) * grid.n()..]);
        let tape = gen.forward_train(&input, base, grid, &mut ws);
        let ours = to_cb(&tape.out, 3, batch, plane);
        assert!(rel_err(&ours, &host_vec(out)) < 1e-5, "{arch:?}");
        let dx = gen
            .backward(tape, &input, to_cb(&r, batch, 3, plane), true, &mut ws)
            .unwrap();
        let burn_dx = host_vec(xt.grad(&grads).unwrap());
        assert!(
            rel_err(&to_cb(&dx, c_in, batch, plane), &burn_dx) < 1e-4,
            "{arch:?}"
        );

        // Parameter gradients, through a copy of the network holding them as its weights.
        let mut as_grads = gen.clone();
        as_grads.params.value = gen.params.grad.clone();
        let mut holder = unet.clone();
        as_grads.write_into(&mut holder);
        let (ours, theirs) = (collect(&holder, None), collect(&unet, Some(&grads)));
        assert_eq!(ours.len(), theirs.len());
        let pairs = ours.iter().zip(&theirs).enumerate();
        let compared = pairs.clone().filter(|(_, (_, b))| b.is_some()).count();
        // Stem and head: weight and bias; each block: two convs and two norms, two each.
        let expected = 2 + 8 * arch.depth() + 2;
        assert_eq!(compared, expected, "every parameter has a gradient");
        let largest = theirs
            .iter()
            .flatten()
            .flatten()
            .fold(0.0f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in pairs.filter_map(|(i, (a, b))| Some((i, (a.as_ref()?, b.as_ref()?)))) {
            // Biases in front of a BatchNorm have a true gradient of zero; both sides are
            // rounding noise there (relative to the largest gradient).
            if b.iter().all(|v| v.abs() < 1e-5 * largest) {
                assert!(a.iter().all(|v| v.abs() < 1e-4 * largest), "param {i}");
                continue;
            }
            assert!(rel_err(a, b) < 1e-4, "param {i}: {}", rel_err(a, b));
        }

        // Running statistics after one training pass.
        let mut back = unet.clone();
        gen.write_into(&mut back);
        let running = |u: &UNet<AD>| {
            let inner = u.blocks.last().expect("at least one block");
            host_vec(inner.down_norm.running_var.value_sync())
        };
        assert!(rel_err(&running(&back), &running(&unet)) < 1e-5, "{arch:?}");
    }

    /// The host discriminator on `pair [batch][in + 3][size²]` (NCHW), sample `patched`'s
    /// condition (if any) given as a pooled patch instead: logits, the image gradient and
    /// the parameter gradients for the logit weights `r`.
    fn host_discriminator_pass(
        host: &mut HostDiscriminator,
        pair: &[f32],
        shape: (usize, usize, usize),
        patched: Option<(usize, &[f32])>,
        r: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (batch, c_in, size) = shape;
        let plane = size * size;
        let grid = Grid { batch, side: size };
        let cb = to_cb(pair, batch, c_in + 3, plane);
        let (x, img) = cb.split_at(c_in * batch * plane);
        let mut ws = Workspace::default();
        host.params.zero_grad();
        let input = ConvInput::new(x, c_in, grid, true, &mut ws);
        let mut cond = host.condition(&input, grid, &mut ws);
        let patches = patched
            .map(|(b, xb)| vec![host.patch(b, xb, size, &mut ws)])
            .unwrap_or_default();
        let (logits, tape) = host.forward(&cond, patches, img, grid, &mut ws);
        let dx = host
            .backward(tape, &mut cond, r, true, true, &mut ws)
            .unwrap();
        host.finish_condition(&input, &mut cond);
        cond.release(&mut ws);
        (logits, dx, host.params.grad.clone())
    }

    #[test]
    fn discriminator_gradients_equal_burn_autodiff() {
        let (batch, c_in, width, size) = (3, 4, 4, 32);
        let plane = size * size;
        let mut rng = StdRng::seed_from_u64(4);
        let disc: Discriminator<AD> =
            Discriminator::new(c_in, width, &mut rng, &Default::default());
        let mut host = HostDiscriminator::from_module(&disc);
        let x = values(batch * (c_in + 3) * plane, 5);
        let n_out = batch * (size / 16) * (size / 16);
        let r = values(n_out, 6);

        let xt = tensor(&x, [batch, c_in + 3, size, size]).require_grad();
        let logits = disc.forward(xt.clone());
        let grads = (logits.clone() * tensor(&r, [batch, 1, size / 16, size / 16]))
            .sum()
            .backward();

        let (ours, dx, grad) =
            host_discriminator_pass(&mut host, &x, (batch, c_in, size), None, &r);
        assert!(rel_err(&ours, &host_vec(logits)) < 1e-5);
        // Only the image channels' gradient is computed.
        let burn_dx = to_cb(&host_vec(xt.grad(&grads).unwrap()), batch, c_in + 3, plane);
        assert!(rel_err(&dx, &burn_dx[c_in * batch * plane..]) < 1e-4);

        let mut as_grads = host.clone();
        as_grads.params.value = grad;
        let mut holder = disc.clone();
        as_grads.write_into(&mut holder);
        for (i, (a, b)) in collect(&holder, None)
            .iter()
            .zip(&collect(&disc, Some(&grads)))
            .enumerate()
            .filter_map(|(i, (a, b))| Some((i, (a.as_ref()?, b.as_ref()?))))
        {
            assert!(rel_err(a, b) < 1e-4, "param {i}: {}", rel_err(a, b));
        }

        // A pooled pair's condition given as a patch is the same as that condition in place.
        let pooled_x = values(c_in * plane, 9);
        let mut swapped_pair = x.clone();
        swapped_pair[(c_in + 3) * plane..][..c_in * plane].copy_from_slice(&pooled_x);
        let whole =
            host_discriminator_pass(&mut host, &swapped_pair, (batch, c_in, size), None, &r);
        let patched =
            host_discriminator_pass(&mut host, &x, (batch, c_in, size), Some((1, &pooled_x)), &r);
        assert!(rel_err(&patched.0, &whole.0) < 1e-5);
        assert!(rel_err(&patched.1, &whole.1) < 1e-5);
        assert!(rel_err(&patched.2, &whole.2) < 1e-5);
        assert!(
            rel_err(&patched.0, &ours) > 1e-3,
            "the patch changed the logits"
        );
    }

    #[test]
    fn adam_step_equals_burns_adam() {
        use burn::nn::{Linear, LinearConfig};
        let dev = Default::default();
        let layer: Linear<AD> = LinearConfig::new(6, 5).init(&dev);
        let mut params = layers::Params::default();
        let w = params.push(&host_vec(layer.weight.val()));
        let b = params.push(&host_vec(layer.bias.as_ref().unwrap().val()));
        let mut opt = AdamConfig::new().with_beta_1(0.5).init::<AD, Linear<AD>>();
        let mut burn_layer = layer;
        for step in 0..4 {
            let x = tensor(&values(3 * 6, step), [3, 6]);
            let loss = burn_layer.forward(x).powi_scalar(2).mean();
            let grads = loss.backward();
            params.grad[w.clone()]
                .copy_from_slice(&host_vec(burn_layer.weight.grad(&grads).unwrap()));
            params.grad[b.clone()].copy_from_slice(&host_vec(
                burn_layer.bias.as_ref().unwrap().grad(&grads).unwrap(),
            ));
            let grads = GradientsParams::from_grads(grads, &burn_layer);
            burn_layer = opt.step(1e-2, burn_layer, grads);
            params.adam_step(1e-2, AdamSettings::new(0.5));
            let burn_w = host_vec(burn_layer.weight.val());
            assert!(
                rel_err(&params.value[w.clone()], &burn_w) < 1e-5,
                "step {step}"
            );
        }
    }

    #[test]
    fn bce_with_logits_matches_its_definition() {
        let z = [-3.0f32, -0.5, 0.0, 0.7, 9.0];
        for target in [0.0f32, 1.0] {
            let (loss, grad) = bce_logits(&z, target, 2.0);
            let want = z
                .iter()
                .map(|&z| {
                    let p = 1.0 / (1.0 + (-(z as f64)).exp());
                    -(target as f64 * p.max(1e-300).ln()
                        + (1.0 - target as f64) * (1.0 - p).max(1e-300).ln())
                })
                .sum::<f64>()
                / z.len() as f64;
            assert!(
                (loss - want).abs() < 1e-6 * want.max(1.0),
                "{loss} vs {want}"
            );
            for (g, &z) in grad.iter().zip(&z) {
                let p = 1.0 / (1.0 + (-z).exp());
                assert!((g - 2.0 * (p - target) / 5.0).abs() < 1e-6);
            }
        }
    }
}
