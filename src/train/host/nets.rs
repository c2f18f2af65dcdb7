//! The pix2pix generator and PatchGAN discriminator on the CPU training engine's layers,
//! with their weights read from and written back to the Burn modules
//! ([`crate::decoder::UNet`], [`crate::train::Discriminator`]) that the rest of monkeysee
//! saves, loads and runs. Same networks as those modules' `forward` (tests hold them equal).

use burn::module::{Param, RunningState};
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::BatchNorm;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::layers::{
    activation_backward, add_row_sums, bias_act, col2im_up, im2col_down, Conv3, ConvInput,
    DownConv, DownTape, Norm, NormTape, Params, UpConv, Workspace,
};
use crate::decoder::arch::LEAKY_SLOPE;
use crate::decoder::host_values;
use crate::decoder::kernels::{matmul, transpose, Activation, Grid, MatRef};
use crate::decoder::unet::UNet;
use crate::train::Discriminator;

const LEAKY: Activation = Activation::LeakyRelu(LEAKY_SLOPE as f32);

/// `grid` after `k` stride-2 convs.
fn halved(grid: Grid, k: usize) -> Grid {
    Grid {
        batch: grid.batch,
        side: grid.side >> k,
    }
}

/// A float tensor's values on the host.
fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    host_values(t).expect("a converted f32 tensor reads back as f32")
}

fn set<B: Backend, const D: usize>(param: &mut Param<Tensor<B, D>>, values: &[f32]) {
    let shape = param.dims();
    let device = param.device();
    *param = Param::from_tensor(Tensor::from_data(
        TensorData::new(values.to_vec(), shape),
        &device,
    ));
}

fn set_running<B: Backend>(state: &mut RunningState<Tensor<B, 1>>, values: &[f32]) {
    let device = state.value().device();
    *state = RunningState::new(Tensor::from_data(
        TensorData::new(values.to_vec(), [values.len()]),
        &device,
    ));
}

fn down_conv<B: Backend>(params: &mut Params, conv: &Conv2d<B>) -> DownConv {
    let [c_out, c_in, ..] = conv.weight.dims();
    DownConv {
        c_in,
        c_out,
        weight: params.push(&host(conv.weight.val())),
        bias: conv.bias.as_ref().map(|b| params.push(&host(b.val()))),
    }
}

fn write_down_conv<B: Backend>(p: &[f32], layer: &DownConv, conv: &mut Conv2d<B>) {
    set(&mut conv.weight, &p[layer.weight.clone()]);
    if let (Some(r), Some(b)) = (layer.bias.clone(), conv.bias.as_mut()) {
        set(b, &p[r]);
    }
}

/// Burn's `[in, out, 4, 4]` → `[out·16][in]`.
fn up_conv<B: Backend>(params: &mut Params, conv: &ConvTranspose2d<B>) -> UpConv {
    let [c_in, c_out, kh, kw] = conv.weight.dims();
    let rows = transpose(&host(conv.weight.val()), c_in, c_out * kh * kw);
    UpConv {
        c_in,
        c_out,
        weight: params.push(&rows),
        bias: conv.bias.as_ref().map(|b| params.push(&host(b.val()))),
    }
}

fn write_up_conv<B: Backend>(p: &[f32], layer: &UpConv, conv: &mut ConvTranspose2d<B>) {
    let burn = transpose(&p[layer.weight.clone()], layer.c_out * 16, layer.c_in);
    set(&mut conv.weight, &burn);
    if let (Some(r), Some(b)) = (layer.bias.clone(), conv.bias.as_mut()) {
        set(b, &p[r]);
    }
}

fn norm<B: Backend>(params: &mut Params, bn: &BatchNorm<B>) -> Norm {
    let [c] = bn.gamma.dims();
    Norm {
        channels: c,
        gamma: params.push(&host(bn.gamma.val())),
        beta: params.push(&host(bn.beta.val())),
        running_mean: host(bn.running_mean.value_sync()),
        running_var: host(bn.running_var.value_sync()),
        momentum: bn.momentum as f32,
        epsilon: bn.epsilon as f32,
    }
}

fn write_norm<B: Backend>(p: &[f32], layer: &Norm, bn: &mut BatchNorm<B>) {
    set(&mut bn.gamma, &p[layer.gamma.clone()]);
    set(&mut bn.beta, &p[layer.beta.clone()]);
    set_running(&mut bn.running_mean, &layer.running_mean);
    set_running(&mut bn.running_var, &layer.running_var);
}

/// One skip block's layers.
#[derive(Debug, Clone)]
struct Block {
    down: DownConv,
    down_norm: Norm,
    up: UpConv,
    up_norm: Norm,
}

/// The U-Net generator ([`UNet`]) on the host.
#[derive(Debug, Clone)]
pub struct HostGenerator {
    pub params: Params,
    stem: DownConv,
    blocks: Vec<Block>,
    head: UpConv,
    /// Output `clamp(base + head, 0, 1)` instead of `sigmoid(head)` ([`UNet::residual`]).
    residual: bool,
}

/// What the generator's forward pass keeps for its backward pass.
#[derive(Debug)]
pub struct GeneratorTape {
    grid: Grid,
    stem_out: Vec<f32>,
    /// Per block, outermost first: the down path.
    downs: Vec<(DownTape, NormTape, Vec<f32>)>,
    /// Per block, outermost first: the up path's norm tape and the block output.
    ups: Vec<Option<(NormTape, Vec<f32>)>>,
    /// The reconstruction `[3][grid]`.
    pub out: Vec<f32>,
}

impl HostGenerator {
    /// Copies `unet`'s weights and running statistics.
    pub fn from_unet<B: Backend>(unet: &UNet<B>) -> Self {
        let mut params = Params::default();
        let stem = down_conv(&mut params, &unet.stem);
        let blocks = unet
            .blocks
            .iter()
            .map(|b| Block {
                down: down_conv(&mut params, &b.down),
                down_norm: norm(&mut params, &b.down_norm),
                up: up_conv(&mut params, &b.up),
                up_norm: norm(&mut params, &b.up_norm),
            })
            .collect();
        let head = up_conv(&mut params, &unet.head);
        Self {
            params,
            stem,
            blocks,
            head,
            residual: unet.residual,
        }
    }

    /// Writes the weights and running statistics back into `unet` (same shape).
    pub fn write_into<B: Backend>(&self, unet: &mut UNet<B>) {
        let p = &self.params.value;
        write_down_conv(p, &self.stem, &mut unet.stem);
        for (b, block) in self.blocks.iter().zip(unet.blocks.iter_mut()) {
            write_down_conv(p, &b.down, &mut block.down);
            write_norm(p, &b.down_norm, &mut block.down_norm);
            write_up_conv(p, &b.up, &mut block.up);
            write_norm(p, &b.up_norm, &mut block.up_norm);
        }
        write_up_conv(p, &self.head, &mut unet.head);
    }

    pub fn in_channels(&self) -> usize {
        self.stem.c_in
    }

    /// The stem's weight `[w][in·16]`.
    fn stem_weight(&self) -> MatRef<'_> {
        MatRef::new(
            &self.params.value[self.stem.weight.clone()],
            self.stem.c_out,
            self.stem.c_in * 16,
        )
    }

    /// The stem on `x`: `leaky(W·im2col(x) + b)` `[w][grid/2]`.
    fn stem_forward(&self, x: &ConvInput, grid: Grid, ws: &mut Workspace) -> Vec<f32> {
        let n = grid.half().n();
        let mut y = ws.take(self.stem.c_out * n);
        x.product(self.stem_weight(), &mut y, false);
        let bias = self.stem.bias.clone().map(|b| &self.params.value[b]);
        bias_act(&mut y, bias, n, LEAKY);
        y
    }

    /// Whether the output corrects an image given with the input.
    pub fn residual(&self) -> bool {
        self.residual
    }

    /// The head's output: `sigmoid(h)`, or `clamp(base + h, 0, 1)` for a residual network.
    fn finish(&self, mut h: Vec<f32>, base: Option<&[f32]>) -> Vec<f32> {
        match (self.residual, base) {
            (true, Some(base)) => {
                for (v, &b) in h.iter_mut().zip(base) {
                    *v = (*v + b).clamp(0.0, 1.0);
                }
            }
            (true, None) => unreachable!("a residual generator is given its base image"),
            (false, _) => {
                for v in h.iter_mut() {
                    *v = 1.0 / (1.0 + (-*v).exp());
                }
            }
        }
        h
    }

    /// Training forward pass (batch statistics, running ones updated):
    /// `x [in][batch·H·W]` → reconstruction `[3][batch·H·W]` in the tape. A residual
    /// network adds its output to `base` `[3][batch·H·W]` (the input's last 3 channels).
    pub fn forward_train(
        &mut self,
        x: &ConvInput,
        base: Option<&[f32]>,
        grid: Grid,
        ws: &mut Workspace,
    ) -> GeneratorTape {
        let stem_out = self.stem_forward(x, grid, ws); // [w][grid/2]
        let p = &self.params.value;
        let depth = self.blocks.len();
        let mut g = grid.half();
        let mut downs: Vec<(DownTape, NormTape, Vec<f32>)> = Vec::with_capacity(depth);
        for (i, block) in self.blocks.iter_mut().enumerate() {
            let input = if i == 0 { &stem_out } else { &downs[i - 1].2 };
            let (mut z, tape) = block.down.forward(p, input, g, Activation::Identity, ws);
            let nt = block.down_norm.forward_train(p, &mut z, LEAKY, true, ws); // [inner][g/2]
            downs.push((tape, nt, z));
            g = g.half();
        }
        let mut ups: Vec<Option<(NormTape, Vec<f32>)>> = (0..depth).map(|_| None).collect();
        for i in (0..depth).rev() {
            let outer_grid = halved(grid, i + 1);
            let block = &mut self.blocks[i];
            let inner: &[f32] = match &ups.get(i + 1) {
                Some(Some((_, out))) => out,
                _ => &downs[i].2,
            };
            let mut u = block
                .up
                .forward(p, inner, outer_grid.half(), Activation::Identity, ws);
            let nt = block
                .up_norm
                .forward_train(p, &mut u, Activation::Relu, true, ws);
            let x_i: &[f32] = if i == 0 { &stem_out } else { &downs[i - 1].2 };
            let mut out = ws.take(x_i.len() + u.len());
            let (skip, up) = out.split_at_mut(x_i.len());
            for (o, &v) in skip.iter_mut().zip(x_i) {
                *o = v.max(0.0);
            }
            up.copy_from_slice(&u);
            ws.give(u);
            ups[i] = Some((nt, out));
        }
        let top = &ups[0].as_ref().expect("filled above").1;
        let h = self
            .head
            .forward(p, top, grid.half(), Activation::Identity, ws);
        let out = self.finish(h, base);
        GeneratorTape {
            grid,
            stem_out,
            downs,
            ups,
            out,
        }
    }

    /// Backward pass from `dy` (gradient at the reconstruction, `[3][grid]`): adds every
    /// parameter gradient; returns the gradient at the input `x` (the forward pass's) if
    /// `input_grad`.
    pub fn backward(
        &mut self,
        tape: GeneratorTape,
        x: &ConvInput,
        mut dy: Vec<f32>,
        input_grad: bool,
        ws: &mut Workspace,
    ) -> Option<Vec<f32>> {
        let GeneratorTape {
            grid,
            stem_out,
            mut downs,
            mut ups,
            out,
        } = tape;
        // A residual output passes its gradient straight to the base image (the input's
        // last 3 channels) too.
        let mut to_base = None;
        if self.residual {
            // clamp passes the gradient where it did not clip.
            for (d, &o) in dy.iter_mut().zip(&out) {
                if o <= 0.0 || o >= 1.0 {
                    *d = 0.0;
                }
            }
            if input_grad {
                let mut copy = ws.take(dy.len());
                copy.copy_from_slice(&dy);
                to_base = Some(copy);
            }
        } else {
            activation_backward(&mut dy, &out, Activation::Sigmoid);
        }
        ws.give(out);
        let p = &self.params.value;
        let g = &mut self.params.grad;
        let top = &ups[0].as_ref().expect("forward filled it").1;
        let mut d_h = self.head.backward(p, g, top, grid.half(), &dy, ws); // [2w][grid/2]
        ws.give(dy);
        // Up path, outermost first: each block's concat, norm and transposed conv.
        let depth = self.blocks.len();
        let mut d_skip: Vec<Vec<f32>> = Vec::with_capacity(depth);
        for i in 0..depth {
            let (nt, out) = ups[i].take().expect("forward filled it");
            let outer_grid = halved(grid, i + 1);
            let block = &self.blocks[i];
            activation_backward(&mut d_h, &out, Activation::Relu);
            let skip_len = block.up.c_out * outer_grid.n();
            let mut du = ws.take(d_h.len() - skip_len);
            du.copy_from_slice(&d_h[skip_len..]);
            d_h.truncate(skip_len);
            d_skip.push(d_h);
            block.up_norm.backward(p, g, nt, &mut du, true, ws);
            let inner: &[f32] = match ups.get(i + 1) {
                Some(Some((_, o))) => o,
                _ => &downs[i].2,
            };
            d_h = block.up.backward(p, g, inner, outer_grid.half(), &du, ws);
            ws.give(du);
            ws.give(out);
        }
        // Down path, innermost first: d_h is the gradient at the innermost block's down output.
        for i in (0..depth).rev() {
            let (dt, nt, d) = downs.pop().expect("one per block");
            let block = &self.blocks[i];
            activation_backward(&mut d_h, &d, LEAKY);
            block.down_norm.backward(p, g, nt, &mut d_h, true, ws);
            let mut dx = block
                .down
                .backward(p, g, dt, &d_h, true, Some(0), ws)
                .expect("dx asked for");
            ws.give(std::mem::take(&mut d_h));
            for (a, &b) in dx.iter_mut().zip(&d_skip[i]) {
                *a += b;
            }
            ws.give(d);
            d_h = dx;
        }
        for v in d_skip {
            ws.give(v);
        }
        activation_backward(&mut d_h, &stem_out, LEAKY);
        ws.give(stem_out);
        let n = grid.half().n();
        x.weight_grad(
            &d_h,
            self.stem.c_out,
            &mut g[self.stem.weight.clone()],
            self.stem.c_in * 16,
        );
        if let Some(b) = self.stem.bias.clone() {
            add_row_sums(&mut g[b], &d_h, n);
        }
        let mut dx = input_grad.then(|| x.input_grad(self.stem_weight(), &d_h, ws));
        ws.give(d_h);
        if let (Some(dx), Some(base)) = (dx.as_mut(), to_base) {
            let start = dx.len() - base.len();
            dx[start..].iter_mut().zip(&base).for_each(|(d, b)| *d += b);
            ws.give(base);
        }
        dx
    }
}

/// The conditional PatchGAN ([`Discriminator`]) on the host. It always runs on batch
/// statistics (it is never used for inference), so its running statistics are not kept.
///
/// Its first convolution sees `cat(x, image)`: `W₁·im2col(cat(x, ŷ)) = W₁ₓ·im2col(x) +
/// W₁ᵢ·im2col(ŷ)`. A step runs the discriminator three times on the same condition x (real,
/// fake, and for the generator), so the condition's input is a [`ConvInput`] made once per
/// batch and its product a [`Condition`] made once per weight update; a fake drawn from the
/// history pool with another condition brings a [`Patch`] for its sample.
#[derive(Debug, Clone)]
pub struct HostDiscriminator {
    pub params: Params,
    /// The first convolution over `cat(x, image)`; the rest take one input each.
    convs: Vec<DownConv>,
    norms: Vec<Norm>,
    head: Conv3,
}

/// The condition's share of the first layer for a batch: `W₁ₓ·im2col(x)` `[w][n]`, and the
/// gradient at the first layer's output summed over the passes that used it, for one
/// weight-gradient product. The condition itself is a [`ConvInput`] the caller keeps (the
/// generator's stem reads the same one).
#[derive(Debug)]
pub struct Condition {
    pre: Vec<f32>,
    dz: Vec<f32>,
}

/// One sample's condition from the history pool: its input and product.
#[derive(Debug)]
pub struct Patch {
    sample: usize,
    input: ConvInput,
    pre: Vec<f32>,
}

/// What the discriminator's forward pass keeps for its backward pass.
#[derive(Debug)]
pub struct DiscriminatorTape {
    grid: Grid,
    /// The image's columns for the first layer.
    image_cols: Vec<f32>,
    patches: Vec<Patch>,
    /// Per conv: its tape (all but the first), the norm tape (all but the first) and its
    /// activated output.
    layers: Vec<(Option<DownTape>, Option<NormTape>, Vec<f32>)>,
    head_cols: Vec<f32>,
}

impl HostDiscriminator {
    pub fn from_module<B: Backend>(d: &Discriminator<B>) -> Self {
        let mut params = Params::default();
        let convs = d.convs.iter().map(|c| down_conv(&mut params, c)).collect();
        let norms = d.norms.iter().map(|n| norm(&mut params, n)).collect();
        let [c_out, c_in, ..] = d.head.weight.dims();
        let head = Conv3 {
            c_in,
            c_out,
            weight: params.push(&host(d.head.weight.val())),
            bias: params.push(&host(
                d.head
                    .bias
                    .as_ref()
                    .map(|b| b.val())
                    .unwrap_or_else(|| Tensor::zeros([c_out], &d.head.weight.device())),
            )),
        };
        Self {
            params,
            convs,
            norms,
            head,
        }
    }

    /// Writes the weights back into `d` (same shape).
    pub fn write_into<B: Backend>(&self, d: &mut Discriminator<B>) {
        let p = &self.params.value;
        for (layer, conv) in self.convs.iter().zip(d.convs.iter_mut()) {
            write_down_conv(p, layer, conv);
        }
        for (layer, bn) in self.norms.iter().zip(d.norms.iter_mut()) {
            set(&mut bn.gamma, &p[layer.gamma.clone()]);
            set(&mut bn.beta, &p[layer.beta.clone()]);
        }
        set(&mut d.head.weight, &p[self.head.weight.clone()]);
        if let Some(b) = d.head.bias.as_mut() {
            set(b, &p[self.head.bias.clone()]);
        }
    }

    /// Channels of the condition (the first layer's input less the image's 3).
    pub fn condition_channels(&self) -> usize {
        self.convs[0].c_in - 3
    }

    /// `W₁ₓ` (or `W₁ᵢ` for `image`) as a matrix view `[w][channels·16]`.
    fn first_weight(&self, image: bool) -> MatRef<'_> {
        let c = &self.convs[0];
        let k = self.condition_channels() * 16;
        let w = MatRef::new(&self.params.value[c.weight.clone()], c.c_out, c.c_in * 16);
        if image {
            w.columns(k, 48)
        } else {
            w.columns(0, k)
        }
    }

    /// The condition `x`'s share of the first layer.
    pub fn condition(&self, x: &ConvInput, grid: Grid, ws: &mut Workspace) -> Condition {
        let n = grid.half().n();
        let mut pre = ws.take(self.convs[0].c_out * n);
        x.product(self.first_weight(false), &mut pre, false);
        Condition {
            pre,
            dz: ws.zeros(self.convs[0].c_out * n),
        }
    }

    /// Sample `sample`'s condition replaced by `x [in][side²]` (a pooled fake's).
    pub fn patch(&self, sample: usize, x: &[f32], side: usize, ws: &mut Workspace) -> Patch {
        let one = Grid { batch: 1, side };
        let input = ConvInput::new(x, self.condition_channels(), one, true, ws);
        let mut pre = ws.take(self.convs[0].c_out * one.half().n());
        input.product(self.first_weight(false), &mut pre, false);
        Patch { sample, input, pre }
    }

    /// `(cond with patches, image [3][grid])` → logits `[1][grid/16]`.
    pub fn forward(
        &mut self,
        cond: &Condition,
        patches: Vec<Patch>,
        image: &[f32],
        grid: Grid,
        ws: &mut Workspace,
    ) -> (Vec<f32>, DiscriminatorTape) {
        let half = grid.half();
        let n = half.n();
        let per_sample = n / grid.batch;
        let first = &self.convs[0];
        let image_cols = im2col_down(image, grid, ws, 3);
        let mut z = ws.take(first.c_out * n);
        z.copy_from_slice(&cond.pre);
        for patch in &patches {
            for (row, pre) in z
                .chunks_exact_mut(n)
                .zip(patch.pre.chunks_exact(per_sample))
            {
                row[patch.sample * per_sample..][..per_sample].copy_from_slice(pre);
            }
        }
        matmul(
            &mut z,
            self.first_weight(true),
            MatRef::new(&image_cols, 48, n),
            true,
        );
        let p = &self.params.value;
        bias_act(&mut z, first.bias.clone().map(|b| &p[b]), n, LEAKY);
        let mut layers: Vec<(Option<DownTape>, Option<NormTape>, Vec<f32>)> = vec![(None, None, z)];
        let mut g = half;
        for i in 1..self.convs.len() {
            let (mut h, tape) =
                self.convs[i].forward(p, &layers[i - 1].2, g, Activation::Identity, ws);
            let nt = self.norms[i - 1].forward_train(p, &mut h, LEAKY, false, ws);
            layers.push((Some(tape), Some(nt), h));
            g = g.half();
        }
        let last = &layers.last().expect("four convs").2;
        let (logits, head_cols) = self.head.forward(p, last, g, ws);
        (
            logits,
            DiscriminatorTape {
                grid,
                image_cols,
                patches,
                layers,
                head_cols,
            },
        )
    }

    /// Backward from `d_logits`: adds parameter gradients if `param_grads` (the shared
    /// condition's weight gradient waits in `cond` for [`HostDiscriminator::finish_condition`]);
    /// returns the gradient at the image `[3][grid]` if `image_grad`.
    pub fn backward(
        &mut self,
        tape: DiscriminatorTape,
        cond: &mut Condition,
        d_logits: &[f32],
        param_grads: bool,
        image_grad: bool,
        ws: &mut Workspace,
    ) -> Option<Vec<f32>> {
        let DiscriminatorTape {
            grid,
            image_cols,
            patches,
            mut layers,
            head_cols,
        } = tape;
        let k = self.condition_channels() * 16;
        let p = &self.params.value;
        let g = &mut self.params.grad;
        let n_layers = layers.len();
        let head_grid = halved(grid, n_layers);
        let mut d = self
            .head
            .backward(p, g, head_cols, head_grid, d_logits, param_grads, ws);
        for i in (1..n_layers).rev() {
            let (tape, nt, h) = layers.pop().expect("one per conv");
            activation_backward(&mut d, &h, LEAKY);
            ws.give(h);
            if let Some(nt) = nt {
                self.norms[i - 1].backward(p, g, nt, &mut d, param_grads, ws);
            }
            let tape = tape.expect("every conv but the first has a tape");
            let dx = self.convs[i]
                .backward(p, g, tape, &d, param_grads, Some(0), ws)
                .expect("dx asked for");
            ws.give(std::mem::replace(&mut d, dx));
        }
        // The first layer.
        let (_, _, h) = layers.pop().expect("the first conv");
        activation_backward(&mut d, &h, LEAKY);
        ws.give(h);
        let first = &self.convs[0];
        let n = grid.half().n();
        let per_sample = n / grid.batch;
        if param_grads {
            let w = first.weight.clone();
            // Image columns: W₁ᵢ's gradient, a column block of W₁'s.
            let mut dw = ws.take(first.c_out * 48);
            matmul(
                &mut dw,
                MatRef::new(&d, first.c_out, n),
                MatRef::new(&image_cols, 48, n).t(),
                false,
            );
            let row_len = first.c_in * 16;
            for (o, row) in dw.chunks_exact(48).enumerate() {
                for (gv, v) in g[w.start + o * row_len + k..][..48].iter_mut().zip(row) {
                    *gv += v;
                }
            }
            ws.give(dw);
            if let Some(b) = first.bias.clone() {
                add_row_sums(&mut g[b], &d, n);
            }
            // Patched samples: their own condition now; the rest through the shared one.
            for patch in &patches {
                let mut dz = ws.take(first.c_out * per_sample);
                for (dst, row) in dz.chunks_exact_mut(per_sample).zip(d.chunks_exact(n)) {
                    dst.copy_from_slice(&row[patch.sample * per_sample..][..per_sample]);
                }
                patch
                    .input
                    .weight_grad(&dz, first.c_out, &mut g[w.clone()], row_len);
                ws.give(dz);
            }
            let patched: Vec<bool> = (0..grid.batch)
                .map(|b| patches.iter().any(|p| p.sample == b))
                .collect();
            for (acc_row, d_row) in cond.dz.chunks_exact_mut(n).zip(d.chunks_exact(n)) {
                for ((acc, dv), &skip) in acc_row
                    .chunks_exact_mut(per_sample)
                    .zip(d_row.chunks_exact(per_sample))
                    .zip(&patched)
                {
                    if !skip {
                        acc.iter_mut().zip(dv).for_each(|(a, v)| *a += v);
                    }
                }
            }
        }
        for patch in patches {
            patch.input.release(ws);
            ws.give(patch.pre);
        }
        ws.give(image_cols);
        let dx = image_grad.then(|| {
            let mut dcols = ws.take(48 * n);
            matmul(
                &mut dcols,
                self.first_weight(true).t(),
                MatRef::new(&d, first.c_out, n),
                false,
            );
            let dx = col2im_up(&dcols, grid.half(), 3, None, Activation::Identity, ws);
            ws.give(dcols);
            dx
        });
        ws.give(d);
        dx
    }

    /// Adds the shared condition's weight gradient (summed over the passes since the last
    /// call) and clears it.
    pub fn finish_condition(&mut self, x: &ConvInput, cond: &mut Condition) {
        let first = &self.convs[0];
        let w = first.weight.clone();
        x.weight_grad(
            &cond.dz,
            first.c_out,
            &mut self.params.grad[w],
            first.c_in * 16,
        );
        cond.dz.fill(0.0);
    }
}

impl Condition {
    /// Hands the buffers back.
    pub fn release(self, ws: &mut Workspace) {
        ws.give(self.pre);
        ws.give(self.dz);
    }
}
