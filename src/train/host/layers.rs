//! The layers of the CPU training engine, each with its forward pass (returning what its
//! backward pass needs) and its backward pass (adding parameter gradients, returning the
//! input gradient).
//!
//! Activations are `[channels][batch·h·w]` ([`Grid`] layout), so a convolution over a whole
//! batch is one [`matmul`]. Parameters and their gradients live in one flat buffer per
//! network ([`Params`]); a layer holds the ranges of its own. Channels are independent in
//! im2col, col2im and BatchNorm, so those run channel-parallel on Rayon's pool.
//!
//! Buffers come from and go back to a [`Workspace`]: every step asks for the same sizes, so
//! after the first step nothing is allocated (nor page-faulted and zeroed by the kernel).

use std::ops::Range;

use rayon::prelude::*;

pub use crate::decoder::kernels::BufferPool as Workspace;
use crate::decoder::kernels::{
    col2im_up_channel, im2col_down_channel, matmul, Activation, Grid, MatRef,
};

/// One network's parameters, gradients and Adam moments, flat.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pub value: Vec<f32>,
    pub grad: Vec<f32>,
    /// Adam's first and second moments.
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Adam steps taken.
    pub steps: u32,
}

/// Adam's constants (Burn's `AdamConfig` defaults but β1, which pix2pix sets to 0.5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamSettings {
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
}

impl AdamSettings {
    pub fn new(beta1: f32) -> Self {
        Self {
            beta1,
            beta2: 0.999,
            epsilon: 1e-5,
        }
    }
}

impl Params {
    /// Reserves `values.len()` parameters initialised to `values`.
    pub fn push(&mut self, values: &[f32]) -> Range<usize> {
        let start = self.value.len();
        self.value.extend_from_slice(values);
        let end = self.value.len();
        self.grad.resize(end, 0.0);
        self.m.resize(end, 0.0);
        self.v.resize(end, 0.0);
        start..end
    }

    pub fn len(&self) -> usize {
        self.value.len()
    }

    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    pub fn zero_grad(&mut self) {
        self.grad.fill(0.0);
    }

    /// One Adam step on the accumulated gradients, as Burn 0.21's `Adam` computes it:
    /// `p −= lr · m·√(1−β2ᵗ)/(1−β1ᵗ) / (√v + ε·√(1−β2ᵗ))`.
    pub fn adam_step(&mut self, lr: f32, adam: AdamSettings) {
        self.steps += 1;
        let t = self.steps as i32;
        let bc2 = (1.0 - adam.beta2.powi(t)).sqrt();
        let factor = lr * bc2 / (1.0 - adam.beta1.powi(t));
        let eps = adam.epsilon * bc2;
        let (b1, b2) = (adam.beta1, adam.beta2);
        const CHUNK: usize = 1 << 14;
        self.value
            .par_chunks_mut(CHUNK)
            .zip(self.grad.par_chunks(CHUNK))
            .zip(self.m.par_chunks_mut(CHUNK))
            .zip(self.v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *p -= factor * *m / (v.sqrt() + eps);
                }
            });
    }
}

/// `dst[c] += Σ rows[c][·]` for rows of length `n`.
pub(super) fn add_row_sums(dst: &mut [f32], rows: &[f32], n: usize) {
    for (d, row) in dst.iter_mut().zip(rows.chunks_exact(n)) {
        *d += row.iter().sum::<f32>();
    }
}

/// LeakyReLU's (slope > 0) or ReLU's backward in place: `grad *= act'(z)`, read off the
/// activation's output (its sign is the input's).
pub fn activation_backward(grad: &mut [f32], out: &[f32], act: Activation) {
    const CHUNK: usize = 1 << 14;
    grad.par_chunks_mut(CHUNK)
        .zip(out.par_chunks(CHUNK))
        .for_each(|(g, o)| match act {
            Activation::LeakyRelu(slope) => {
                for (g, &o) in g.iter_mut().zip(o) {
                    if o < 0.0 {
                        *g *= slope;
                    }
                }
            }
            Activation::Relu => {
                for (g, &o) in g.iter_mut().zip(o) {
                    if o <= 0.0 {
                        *g = 0.0;
                    }
                }
            }
            Activation::Sigmoid => {
                for (g, &o) in g.iter_mut().zip(o) {
                    *g *= o * (1.0 - o);
                }
            }
            Activation::Identity => {}
        });
}

/// In place, channel-parallel: `y[c][·] = act(y[c][·] + bias[c])`.
pub(super) fn bias_act(y: &mut [f32], bias: Option<&[f32]>, n: usize, act: Activation) {
    y.par_chunks_mut(n).enumerate().for_each(|(c, row)| {
        let b = bias.map_or(0.0, |b| b[c]);
        match act {
            Activation::Identity => {
                if b != 0.0 {
                    row.iter_mut().for_each(|v| *v += b);
                }
            }
            Activation::LeakyRelu(slope) => row.iter_mut().for_each(|v| {
                let t = *v + b;
                *v = if t >= 0.0 { t } else { t * slope };
            }),
            Activation::Relu => row.iter_mut().for_each(|v| *v = (*v + b).max(0.0)),
            Activation::Sigmoid => row
                .iter_mut()
                .for_each(|v| *v = 1.0 / (1.0 + (-(*v + b)).exp())),
        }
    });
}

/// Channel-parallel im2col of a 4×4 stride-2 pad-1 conv: `x [c][grid]` → `[c·16][grid/2]`.
pub(super) fn im2col_down(x: &[f32], grid: Grid, ws: &mut Workspace, channels: usize) -> Vec<f32> {
    let n_out = grid.half().n();
    let mut cols = ws.take(channels * 16 * n_out);
    let s2 = grid.side * grid.side;
    cols.par_chunks_mut(16 * n_out)
        .zip(x.par_chunks(grid.n()))
        .for_each_init(
            || vec![0.0f32; s2],
            |scratch, (rows, x_c)| im2col_down_channel(x_c, grid, scratch, rows),
        );
    cols
}

/// Channel-parallel col2im (a gather): `cols [c·16][grid]` → `[c][2·grid]`, + bias, act.
pub(super) fn col2im_up(
    cols: &[f32],
    grid: Grid,
    channels: usize,
    bias: Option<&[f32]>,
    act: Activation,
    ws: &mut Workspace,
) -> Vec<f32> {
    let n_in = grid.n();
    let n_out = 4 * n_in;
    let mut out = ws.take(channels * n_out);
    let zeros = vec![0.0f32; grid.side];
    out.par_chunks_mut(n_out)
        .zip(cols.par_chunks(16 * n_in))
        .enumerate()
        .for_each(|(c, (o, co))| {
            col2im_up_channel(co, grid, bias.map_or(0.0, |b| b[c]), act, &zeros, o)
        });
    out
}

/// A 4×4 stride-2 pad-1 convolution. Weight `[out][in·16]` (Burn's `[out, in, 4, 4]`).
#[derive(Debug, Clone)]
pub struct DownConv {
    pub c_in: usize,
    pub c_out: usize,
    pub weight: Range<usize>,
    pub bias: Option<Range<usize>>,
}

/// What [`DownConv::forward`] keeps for the backward pass.
#[derive(Debug)]
pub struct DownTape {
    cols: Vec<f32>,
    grid: Grid,
}

impl DownConv {
    /// `x [c_in][grid]` → `act(W·im2col(x) + b)` `[c_out][grid/2]`.
    pub fn forward(
        &self,
        p: &[f32],
        x: &[f32],
        grid: Grid,
        act: Activation,
        ws: &mut Workspace,
    ) -> (Vec<f32>, DownTape) {
        let n_out = grid.half().n();
        let cols = im2col_down(x, grid, ws, self.c_in);
        let mut y = ws.take(self.c_out * n_out);
        matmul(
            &mut y,
            MatRef::new(&p[self.weight.clone()], self.c_out, self.c_in * 16),
            MatRef::new(&cols, self.c_in * 16, n_out),
            false,
        );
        bias_act(&mut y, self.bias.clone().map(|b| &p[b]), n_out, act);
        (y, DownTape { cols, grid })
    }

    /// `dz` is the gradient at the pre-activation output. Adds dW, db to `g` if
    /// `param_grads`; returns dx of the input channels `from..` (`[c_in − from][grid]`)
    /// for `dx_from: Some(from)`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        p: &[f32],
        g: &mut [f32],
        tape: DownTape,
        dz: &[f32],
        param_grads: bool,
        dx_from: Option<usize>,
        ws: &mut Workspace,
    ) -> Option<Vec<f32>> {
        let DownTape { cols, grid } = tape;
        let half = grid.half();
        let n_out = half.n();
        let k = self.c_in * 16;
        if param_grads {
            matmul(
                &mut g[self.weight.clone()],
                MatRef::new(dz, self.c_out, n_out),
                MatRef::new(&cols, k, n_out).t(),
                true,
            );
            if let Some(b) = self.bias.clone() {
                add_row_sums(&mut g[b], dz, n_out);
            }
        }
        ws.give(cols);
        let from = dx_from?;
        let c = self.c_in - from;
        let mut dcols = ws.take(c * 16 * n_out);
        matmul(
            &mut dcols,
            MatRef::new(&p[self.weight.clone()], self.c_out, k)
                .columns(from * 16, c * 16)
                .t(),
            MatRef::new(dz, self.c_out, n_out),
            false,
        );
        // The adjoint of im2col is the transposed conv's col2im (see the kernels).
        let dx = col2im_up(&dcols, half, c, None, Activation::Identity, ws);
        ws.give(dcols);
        Some(dx)
    }
}

/// The input of a first layer (the U-Net's stem, the discriminator's condition) as a 4×4
/// stride-2 pad-1 convolution needs it: a prefix of mostly-zero channels as a list of their
/// nonzero values (a fixed RF map marks one pixel per electrode: ~1 % of its pixels), the
/// remaining channels as im2col columns. A product with the prefix costs 4 multiply-adds per
/// nonzero and output channel instead of 16 per pixel, and no column is written for it.
#[derive(Debug)]
pub struct ConvInput {
    channels: usize,
    /// Channels `0..sparse` are kept as nonzeros.
    sparse: usize,
    /// (channel, sample, row, column, value).
    nonzeros: Vec<(u32, u32, u16, u16, f32)>,
    /// im2col of channels `sparse..`: `[(channels − sparse)·16][grid/2]`.
    cols: Vec<f32>,
    grid: Grid,
}

/// A channel is kept sparse when at most this share of its values is nonzero.
const SPARSE_SHARE: usize = 32;

/// The (output index, tap) pairs a stride-2 pad-1 4-tap kernel connects to input index
/// `i` of a side `s` input: `i = 2·o + k − 1`.
fn taps_of(i: usize, s: usize) -> impl Iterator<Item = (usize, usize)> {
    let so = s / 2;
    let lo = (i + 1).saturating_sub(3).div_ceil(2);
    let hi = i.div_ceil(2).min(so.saturating_sub(1));
    (lo..=hi).map(move |o| (o, i + 1 - 2 * o))
}

impl ConvInput {
    /// `x [channels][grid]`; with `allow_sparse` false every channel is dense (needed for an
    /// input gradient).
    pub fn new(
        x: &[f32],
        channels: usize,
        grid: Grid,
        allow_sparse: bool,
        ws: &mut Workspace,
    ) -> Self {
        let n = grid.n();
        let sparse = if allow_sparse {
            x.chunks_exact(n)
                .take_while(|c| c.iter().filter(|&&v| v != 0.0).count() * SPARSE_SHARE <= n)
                .count()
        } else {
            0
        };
        let mut nonzeros = Vec::new();
        let (side, plane) = (grid.side, grid.side * grid.side);
        for (c, ch) in x.chunks_exact(n).take(sparse).enumerate() {
            for (i, &v) in ch.iter().enumerate() {
                if v != 0.0 {
                    let (b, r) = (i / plane, i % plane);
                    nonzeros.push((c as u32, b as u32, (r / side) as u16, (r % side) as u16, v));
                }
            }
        }
        let cols = im2col_down(&x[sparse * n..channels * n], grid, ws, channels - sparse);
        Self {
            channels,
            sparse,
            nonzeros,
            cols,
            grid,
        }
    }

    /// `out [c_out][grid/2] (+)= W·im2col(x)` for `w [c_out][channels·16]`.
    pub fn product(&self, w: MatRef<'_>, out: &mut [f32], accumulate: bool) {
        let c_out = w.rows();
        let half = self.grid.half();
        let n_out = half.n();
        let dense = self.channels - self.sparse;
        matmul(
            out,
            w.columns(self.sparse * 16, dense * 16),
            MatRef::new(&self.cols, dense * 16, n_out),
            accumulate || dense == 0,
        );
        if dense == 0 && !accumulate {
            out.fill(0.0);
        }
        if self.nonzeros.is_empty() {
            return;
        }
        // Position-major accumulation, so each (nonzero, tap) adds one contiguous row of
        // c_out values; then one transposing pass into `out`.
        let taps = self.sparse * 16;
        let wt: Vec<f32> = (0..taps * c_out)
            .map(|k| w.at(k % c_out, k / c_out))
            .collect(); // [tap][c_out]
        let mut acc = vec![0.0f32; n_out * c_out]; // [position][c_out]
        self.for_each_tap(|pos, t, v| {
            let src = &wt[t * c_out..][..c_out];
            let dst = &mut acc[pos * c_out..][..c_out];
            dst.iter_mut().zip(src).for_each(|(d, &s)| *d += v * s);
        });
        for (pos, row) in acc.chunks_exact(c_out).enumerate() {
            for (o, &a) in row.iter().enumerate() {
                out[o * n_out + pos] += a;
            }
        }
    }

    /// `dw[o][t] += Σ dz[o][·]·im2col(x)[t][·]` for `dz [c_out][grid/2]`, `dw` rows of
    /// `row_stride` values whose first `channels·16` are this input's taps.
    pub fn weight_grad(&self, dz: &[f32], c_out: usize, dw: &mut [f32], row_stride: usize) {
        let half = self.grid.half();
        let n_out = half.n();
        let dense = self.channels - self.sparse;
        if dense > 0 {
            let mut part = vec![0.0f32; c_out * dense * 16];
            matmul(
                &mut part,
                MatRef::new(dz, c_out, n_out),
                MatRef::new(&self.cols, dense * 16, n_out).t(),
                false,
            );
            for (o, row) in part.chunks_exact(dense * 16).enumerate() {
                let dst = &mut dw[o * row_stride + self.sparse * 16..][..dense * 16];
                dst.iter_mut().zip(row).for_each(|(d, v)| *d += v);
            }
        }
        if self.nonzeros.is_empty() {
            return;
        }
        // dz position-major, so each (nonzero, tap) reads one contiguous row.
        let mut dzt = vec![0.0f32; n_out * c_out];
        for (o, row) in dz.chunks_exact(n_out).enumerate() {
            for (pos, &v) in row.iter().enumerate() {
                dzt[pos * c_out + o] = v;
            }
        }
        let taps = self.sparse * 16;
        let mut dwt = vec![0.0f32; taps * c_out]; // [tap][c_out]
        self.for_each_tap(|pos, t, v| {
            let src = &dzt[pos * c_out..][..c_out];
            let dst = &mut dwt[t * c_out..][..c_out];
            dst.iter_mut().zip(src).for_each(|(d, &s)| *d += v * s);
        });
        for (t, row) in dwt.chunks_exact(c_out).enumerate() {
            for (o, &g) in row.iter().enumerate() {
                dw[o * row_stride + t] += g;
            }
        }
    }

    /// `dx [channels][grid]` for `dz [c_out][grid/2]`; every channel must be dense.
    pub fn input_grad(&self, w: MatRef<'_>, dz: &[f32], ws: &mut Workspace) -> Vec<f32> {
        assert_eq!(self.sparse, 0, "an input gradient needs a dense input");
        let half = self.grid.half();
        let n_out = half.n();
        let mut dcols = ws.take(self.channels * 16 * n_out);
        matmul(&mut dcols, w.t(), MatRef::new(dz, w.rows(), n_out), false);
        let dx = col2im_up(&dcols, half, self.channels, None, Activation::Identity, ws);
        ws.give(dcols);
        dx
    }

    /// Calls `f(output position, tap, value)` for every nonzero and each of the (up to 4)
    /// output positions it reaches.
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, f32)) {
        let (s, so) = (self.grid.side, self.grid.side / 2);
        for &(c, b, ih, iw, v) in &self.nonzeros {
            for (oh, kh) in taps_of(ih as usize, s) {
                for (ow, kw) in taps_of(iw as usize, s) {
                    f(
                        (b as usize * so + oh) * so + ow,
                        (c as usize * 4 + kh) * 4 + kw,
                        v,
                    );
                }
            }
        }
    }

    /// Hands the buffers back.
    pub fn release(self, ws: &mut Workspace) {
        ws.give(self.cols);
    }
}

/// A 4×4 stride-2 pad-1 transposed convolution. Weight `[out·16][in]` (Burn's
/// `[in, out, 4, 4]` transposed to the row order col2im reads).
#[derive(Debug, Clone)]
pub struct UpConv {
    pub c_in: usize,
    pub c_out: usize,
    pub weight: Range<usize>,
    pub bias: Option<Range<usize>>,
}

impl UpConv {
    /// `x [c_in][grid]` → `act(col2im(Wᵀ·x) + b)` `[c_out][2·grid]`.
    pub fn forward(
        &self,
        p: &[f32],
        x: &[f32],
        grid: Grid,
        act: Activation,
        ws: &mut Workspace,
    ) -> Vec<f32> {
        let n = grid.n();
        let mut cols = ws.take(self.c_out * 16 * n);
        matmul(
            &mut cols,
            MatRef::new(&p[self.weight.clone()], self.c_out * 16, self.c_in),
            MatRef::new(x, self.c_in, n),
            false,
        );
        let y = col2im_up(
            &cols,
            grid,
            self.c_out,
            self.bias.clone().map(|b| &p[b]),
            act,
            ws,
        );
        ws.give(cols);
        y
    }

    /// `dz [c_out][2·grid]` at the pre-activation output, `x` the forward input. Adds dW,
    /// db to `g`; returns dx `[c_in][grid]`.
    pub fn backward(
        &self,
        p: &[f32],
        g: &mut [f32],
        x: &[f32],
        grid: Grid,
        dz: &[f32],
        ws: &mut Workspace,
    ) -> Vec<f32> {
        let n = grid.n();
        let big = Grid {
            batch: grid.batch,
            side: 2 * grid.side,
        };
        if let Some(b) = self.bias.clone() {
            add_row_sums(&mut g[b], dz, big.n());
        }
        // The adjoint of col2im is im2col.
        let dcols = im2col_down(dz, big, ws, self.c_out); // [c_out·16][n]
        matmul(
            &mut g[self.weight.clone()],
            MatRef::new(&dcols, self.c_out * 16, n),
            MatRef::new(x, self.c_in, n).t(),
            true,
        );
        let mut dx = ws.take(self.c_in * n);
        matmul(
            &mut dx,
            MatRef::new(&p[self.weight.clone()], self.c_out * 16, self.c_in).t(),
            MatRef::new(&dcols, self.c_out * 16, n),
            false,
        );
        ws.give(dcols);
        dx
    }
}

/// A 3×3 stride-1 pad-1 convolution with bias (the PatchGAN's head). Weight `[out][in·9]`.
#[derive(Debug, Clone)]
pub struct Conv3 {
    pub c_in: usize,
    pub c_out: usize,
    pub weight: Range<usize>,
    pub bias: Range<usize>,
}

/// Calls `f(col, src)` for each in-bounds tap of a 3×3 stride-1 pad-1 conv over `c`
/// channels of `grid`: `col` indexes the columns `[c·9][grid]`, `src` the input `[c][grid]`.
/// Only the PatchGAN head's small maps go through it, so it is written for clarity.
fn taps_3(c: usize, grid: Grid, mut f: impl FnMut(usize, usize)) {
    let (s, n) = (grid.side as isize, grid.n());
    let at = |b: usize, h: isize, w: isize| (b * grid.side + h as usize) * grid.side + w as usize;
    for ch in 0..c {
        for k in 0..9 {
            let (dh, dw) = (k as isize / 3 - 1, k as isize % 3 - 1);
            for b in 0..grid.batch {
                for h in 0..s {
                    for w in 0..s {
                        let (ih, iw) = (h + dh, w + dw);
                        if (0..s).contains(&ih) && (0..s).contains(&iw) {
                            f((ch * 9 + k) * n + at(b, h, w), ch * n + at(b, ih, iw));
                        }
                    }
                }
            }
        }
    }
}

/// im2col of a 3×3 stride-1 pad-1 conv: `x [c][batch][s][s]` → `[c·9][batch][s][s]`.
fn im2col_3(x: &[f32], c: usize, grid: Grid, cols: &mut [f32]) {
    cols.fill(0.0);
    taps_3(c, grid, |col, src| cols[col] = x[src]);
}

/// The adjoint of [`im2col_3`]: `dx[c][…] += dcols[c·9 + k][…]` at the shifted positions.
fn col2im_3(dcols: &[f32], c: usize, grid: Grid, dx: &mut [f32]) {
    dx.fill(0.0);
    taps_3(c, grid, |col, src| dx[src] += dcols[col]);
}

impl Conv3 {
    /// `x [c_in][grid]` → `[c_out][grid]` (no activation); keeps the columns.
    pub fn forward(
        &self,
        p: &[f32],
        x: &[f32],
        grid: Grid,
        ws: &mut Workspace,
    ) -> (Vec<f32>, Vec<f32>) {
        let n = grid.n();
        let mut cols = ws.take(self.c_in * 9 * n);
        im2col_3(x, self.c_in, grid, &mut cols);
        let mut y = ws.take(self.c_out * n);
        matmul(
            &mut y,
            MatRef::new(&p[self.weight.clone()], self.c_out, self.c_in * 9),
            MatRef::new(&cols, self.c_in * 9, n),
            false,
        );
        bias_act(&mut y, Some(&p[self.bias.clone()]), n, Activation::Identity);
        (y, cols)
    }

    /// Adds dW, db (if `param_grads`); returns dx `[c_in][grid]`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        p: &[f32],
        g: &mut [f32],
        cols: Vec<f32>,
        grid: Grid,
        dz: &[f32],
        param_grads: bool,
        ws: &mut Workspace,
    ) -> Vec<f32> {
        let n = grid.n();
        let k = self.c_in * 9;
        if param_grads {
            matmul(
                &mut g[self.weight.clone()],
                MatRef::new(dz, self.c_out, n),
                MatRef::new(&cols, k, n).t(),
                true,
            );
            add_row_sums(&mut g[self.bias.clone()], dz, n);
        }
        ws.give(cols);
        let mut dcols = ws.take(k * n);
        matmul(
            &mut dcols,
            MatRef::new(&p[self.weight.clone()], self.c_out, k).t(),
            MatRef::new(dz, self.c_out, n),
            false,
        );
        let mut dx = ws.take(self.c_in * n);
        col2im_3(&dcols, self.c_in, grid, &mut dx);
        ws.give(dcols);
        dx
    }
}

/// BatchNorm over `[channels][n]` rows: batch statistics in training (biased variance,
/// as Burn), running statistics for inference. The running averages are updated as
/// Burn's `BatchNorm` updates them: `r ← (1 − momentum)·r + momentum·batch`.
#[derive(Debug, Clone)]
pub struct Norm {
    pub channels: usize,
    pub gamma: Range<usize>,
    pub beta: Range<usize>,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
    pub momentum: f32,
    pub epsilon: f32,
}

/// What [`Norm::forward_train`] keeps: the normalised input and 1/σ per channel.
#[derive(Debug)]
pub struct NormTape {
    x_hat: Vec<f32>,
    inv_std: Vec<f32>,
}

impl Norm {
    /// In place: `z ← act(γ·(z − μ)/σ + β)` with batch statistics; updates the running ones
    /// if `track`.
    pub fn forward_train(
        &mut self,
        p: &[f32],
        z: &mut [f32],
        act: Activation,
        track: bool,
        ws: &mut Workspace,
    ) -> NormTape {
        let n = z.len() / self.channels;
        let gamma = &p[self.gamma.clone()];
        let beta = &p[self.beta.clone()];
        let mut x_hat = ws.take(z.len());
        let mut stats = vec![(0.0f32, 0.0f32, 0.0f32); self.channels]; // (μ, σ², 1/σ)
        let eps = self.epsilon;
        z.par_chunks_mut(n)
            .zip(x_hat.par_chunks_mut(n))
            .zip(stats.par_iter_mut())
            .enumerate()
            .for_each(|(c, ((row, xh), st))| {
                let mean = (row.iter().map(|&v| v as f64).sum::<f64>() / n as f64) as f32;
                let var = (row
                    .iter()
                    .map(|&v| ((v - mean) as f64).powi(2))
                    .sum::<f64>()
                    / n as f64) as f32;
                let inv = 1.0 / (var + eps).sqrt();
                let (gm, bt) = (gamma[c], beta[c]);
                for (v, xh) in row.iter_mut().zip(xh.iter_mut()) {
                    let h = (*v - mean) * inv;
                    *xh = h;
                    *v = gm * h + bt;
                }
                *st = (mean, var, inv);
            });
        bias_act(z, None, n, act);
        if track {
            let m = self.momentum;
            for ((rm, rv), &(mean, var, _)) in self
                .running_mean
                .iter_mut()
                .zip(self.running_var.iter_mut())
                .zip(&stats)
            {
                *rm = (1.0 - m) * *rm + m * mean;
                *rv = (1.0 - m) * *rv + m * var;
            }
        }
        let inv_std = stats.iter().map(|&(_, _, inv)| inv).collect();
        NormTape { x_hat, inv_std }
    }

    /// In place: `dy` (at the normalised output, before any activation) becomes dz. Adds
    /// dγ, dβ to `g` if `param_grads`.
    pub fn backward(
        &self,
        p: &[f32],
        g: &mut [f32],
        tape: NormTape,
        dy: &mut [f32],
        param_grads: bool,
        ws: &mut Workspace,
    ) {
        let n = dy.len() / self.channels;
        let gamma = &p[self.gamma.clone()];
        let mut sums = vec![(0.0f32, 0.0f32); self.channels];
        dy.par_chunks_mut(n)
            .zip(tape.x_hat.par_chunks(n))
            .zip(sums.par_iter_mut())
            .enumerate()
            .for_each(|(c, ((d, xh), sum))| {
                let (mut db, mut dg) = (0.0f64, 0.0f64);
                for (&d, &h) in d.iter().zip(xh) {
                    db += d as f64;
                    dg += (d * h) as f64;
                }
                let (db, dg) = (db as f32, dg as f32);
                let k = gamma[c] * tape.inv_std[c] / n as f32;
                let nf = n as f32;
                for (d, &h) in d.iter_mut().zip(xh) {
                    *d = k * (nf * *d - db - h * dg);
                }
                *sum = (dg, db);
            });
        if param_grads {
            let (gs, bs) = (self.gamma.start, self.beta.start);
            for (c, &(dg, db)) in sums.iter().enumerate() {
                g[gs + c] += dg;
                g[bs + c] += db;
            }
        }
        ws.give(tape.x_hat);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Mostly-zero leading channels (as fixed RF maps) and dense trailing ones: the product
    /// and the weight gradient through the nonzero list equal the all-dense im2col path.
    #[test]
    fn sparse_channels_give_the_dense_convolution() {
        let mut rng = StdRng::seed_from_u64(1);
        let (channels, c_out) = (5, 6);
        let grid = Grid { batch: 3, side: 16 };
        let n = grid.n();
        let mut x = vec![0.0f32; channels * n];
        for (c, ch) in x.chunks_exact_mut(n).enumerate() {
            for v in ch.iter_mut() {
                // Channels 0–2: ~1 % nonzero (edges included by chance); 3–4 dense.
                if c >= 3 || rng.random_range(0..100) == 0 {
                    *v = rng.random_range(-1.0f32..1.0);
                }
            }
        }
        // A nonzero in every corner of channel 0, sample 0 (the padded edge taps).
        for &i in &[0, 15, 15 * 16, 16 * 16 - 1] {
            x[i] = 0.5;
        }
        let w: Vec<f32> = (0..c_out * channels * 16)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let n_out = grid.half().n();
        let dz: Vec<f32> = (0..c_out * n_out)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let mut ws = Workspace::default();
        let sparse = ConvInput::new(&x, channels, grid, true, &mut ws);
        let dense = ConvInput::new(&x, channels, grid, false, &mut ws);
        assert_eq!((sparse.sparse, dense.sparse), (3, 0));
        let wm = MatRef::new(&w, c_out, channels * 16);
        let (mut ys, mut yd) = (vec![1.0; c_out * n_out], vec![1.0; c_out * n_out]);
        sparse.product(wm, &mut ys, false);
        dense.product(wm, &mut yd, false);
        let (mut gs, mut gd) = (vec![0.5; w.len()], vec![0.5; w.len()]);
        sparse.weight_grad(&dz, c_out, &mut gs, channels * 16);
        dense.weight_grad(&dz, c_out, &mut gd, channels * 16);
        for (a, b) in ys.iter().zip(&yd).chain(gs.iter().zip(&gd)) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}
