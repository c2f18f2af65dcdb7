//! Plain-Rust data-movement kernels for the CPU inference path ([`super::infer::HostUNet`]).
//!
//! Activations are `[channels][n]` with `n = batch · h · w` (batch inside the channel), so
//! a convolution is one matrix product over the whole batch and a channel concat is two
//! buffers one after the other. Every convolution here is 4×4, stride 2, padding 1.
//! None of these allocate; the caller sizes the buffers.

/// Geometry of a batch of square feature maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub batch: usize,
    /// Side in pixels (square maps).
    pub side: usize,
}

impl Grid {
    /// Values per channel: batch · side².
    pub fn n(self) -> usize {
        self.batch * self.side * self.side
    }

    /// The grid a stride-2 conv makes of this one.
    pub fn half(self) -> Grid {
        Grid {
            batch: self.batch,
            side: self.side / 2,
        }
    }
}

/// im2col for a 4×4 stride-2 pad-1 conv: `x [c][batch][s][s]` → `cols [c·16][batch][s/2][s/2]`,
/// row `(c·4 + kh)·4 + kw`, zero where the window hangs over the edge.
///
/// Each input plane is first split into its even and odd columns (`scratch`, at least s²
/// values), after which every output row is a contiguous copy: input column 2·ow + kw − 1
/// is odd[ow − 1], even[ow], odd[ow], even[ow + 1] for kw = 0, 1, 2, 3.
pub fn im2col_down(x: &[f32], channels: usize, input: Grid, scratch: &mut [f32], cols: &mut [f32]) {
    let s = input.side;
    let so = s / 2;
    let plane_out = so * so;
    let n_out = input.batch * plane_out;
    debug_assert_eq!(x.len(), channels * input.n());
    debug_assert_eq!(cols.len(), channels * 16 * n_out);
    let (even, odd) = scratch[..s * s].split_at_mut(s * so);
    for (c, rows) in cols.chunks_exact_mut(16 * n_out).enumerate() {
        for b in 0..input.batch {
            let plane = &x[(c * input.batch + b) * s * s..][..s * s];
            for ((row, e), o) in plane
                .chunks_exact(s)
                .zip(even.chunks_exact_mut(so))
                .zip(odd.chunks_exact_mut(so))
            {
                for ((pair, e), o) in row.chunks_exact(2).zip(e.iter_mut()).zip(o.iter_mut()) {
                    *e = pair[0];
                    *o = pair[1];
                }
            }
            for (k, row) in rows.chunks_exact_mut(n_out).enumerate() {
                let (kh, kw) = (k / 4, k % 4);
                let dst_plane = &mut row[b * plane_out..(b + 1) * plane_out];
                for (oh, out_row) in dst_plane.chunks_exact_mut(so).enumerate() {
                    // ih = 2·oh + kh − 1
                    let ih = 2 * oh + kh;
                    if ih == 0 || ih > s {
                        out_row.fill(0.0);
                        continue;
                    }
                    let (e, o) = (&even[(ih - 1) * so..ih * so], &odd[(ih - 1) * so..ih * so]);
                    match kw {
                        0 => {
                            out_row[0] = 0.0;
                            out_row[1..].copy_from_slice(&o[..so - 1]);
                        }
                        1 => out_row.copy_from_slice(e),
                        2 => out_row.copy_from_slice(o),
                        _ => {
                            out_row[..so - 1].copy_from_slice(&e[1..]);
                            out_row[so - 1] = 0.0;
                        }
                    }
                }
            }
        }
    }
}

/// What runs after a layer's bias add.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    LeakyRelu(f32),
    Relu,
    Sigmoid,
}

impl Activation {
    #[inline(always)]
    fn apply(self, v: f32) -> f32 {
        match self {
            Self::LeakyRelu(slope) => {
                if v >= 0.0 {
                    v
                } else {
                    v * slope
                }
            }
            Self::Relu => v.max(0.0),
            Self::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        }
    }
}

/// In place: `y[c][·] = act(y[c][·] + bias[c])`.
pub fn bias_activation(y: &mut [f32], bias: &[f32], act: Activation) {
    let n = y.len() / bias.len().max(1);
    for (row, &b) in y.chunks_exact_mut(n).zip(bias) {
        match act {
            Activation::LeakyRelu(slope) => {
                for v in row {
                    let t = *v + b;
                    *v = if t >= 0.0 { t } else { t * slope };
                }
            }
            Activation::Relu => {
                for v in row {
                    *v = (*v + b).max(0.0);
                }
            }
            Activation::Sigmoid => {
                for v in row {
                    *v = Activation::Sigmoid.apply(*v + b);
                }
            }
        }
    }
}

/// Copies `src` to `dst` through ReLU.
pub fn relu_into(src: &[f32], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s.max(0.0);
    }
}

/// The (kernel tap, input offset) pairs that reach output parity `p` of a 4×4 stride-2
/// pad-1 transposed conv: out index 2i + p gets tap k from input i + offset.
/// p = 0: k = 1 from i, k = 3 from i − 1; p = 1: k = 2 from i, k = 0 from i + 1.
const TAPS: [[(usize, isize); 2]; 2] = [[(1, 0), (3, -1)], [(2, 0), (0, 1)]];

/// col2im for a 4×4 stride-2 pad-1 transposed conv, as a gather (each output written once),
/// fused with bias and activation.
///
/// `cols [c_out·16][batch][s][s]` (row `(o·4 + kh)·4 + kw`, the product `Wᵀ · x`) →
/// `out [c_out][batch][2s][2s]`. `zeros` is a scratch row of at least `s` zeros.
pub fn col2im_up(
    cols: &[f32],
    channels_out: usize,
    input: Grid,
    bias: &[f32],
    act: Activation,
    zeros: &[f32],
    out: &mut [f32],
) {
    let s = input.side;
    let so = 2 * s;
    let n_in = input.n();
    let plane_in = s * s;
    debug_assert_eq!(cols.len(), channels_out * 16 * n_in);
    debug_assert_eq!(out.len(), channels_out * input.batch * so * so);
    let zeros = &zeros[..s];
    for (o, out_c) in out.chunks_exact_mut(input.batch * so * so).enumerate() {
        let co = &cols[o * 16 * n_in..(o + 1) * 16 * n_in];
        let bo = bias[o];
        for (b, out_b) in out_c.chunks_exact_mut(so * so).enumerate() {
            let base = b * plane_in;
            for (oh, out_row) in out_b.chunks_exact_mut(so).enumerate() {
                let (i, ph) = (oh / 2, oh % 2);
                let [(kh0, _), (kh1, dh1)] = TAPS[ph];
                // Tap row kh0 reads input row i, which always exists; tap row kh1 reads
                // i + dh1, which may hang over the edge (then it contributes zeros).
                let ih1 = i as isize + dh1;
                let row1 = (ih1 >= 0 && (ih1 as usize) < s).then(|| base + ih1 as usize * s);
                let r0 = base + i * s;
                let tap = |kh: usize, kw: usize, r: Option<usize>| match r {
                    Some(r) => &co[(kh * 4 + kw) * n_in + r..(kh * 4 + kw) * n_in + r + s],
                    None => zeros,
                };
                for (pw, taps) in TAPS.iter().enumerate() {
                    let [(kw0, _), (kw1, dw1)] = *taps;
                    let (a0, b0) = (tap(kh0, kw0, Some(r0)), tap(kh1, kw0, row1));
                    let (a1, b1) = (tap(kh0, kw1, Some(r0)), tap(kh1, kw1, row1));
                    // Column j reads j + dw1 through the kw1 taps: valid for j in lo..hi.
                    let (lo, hi, edge) = if dw1 < 0 {
                        (1, s, 0)
                    } else {
                        (0, s - 1, s - 1)
                    };
                    out_row[2 * edge + pw] = act.apply(bo + a0[edge] + b0[edge]);
                    let (from, to) = if dw1 < 0 {
                        (lo - 1, hi - 1)
                    } else {
                        (lo + 1, hi + 1)
                    };
                    let (a1, b1) = (&a1[from..to], &b1[from..to]);
                    for (j, ((&x0, &y0), (&x1, &y1))) in a0[lo..hi]
                        .iter()
                        .zip(&b0[lo..hi])
                        .zip(a1.iter().zip(b1))
                        .enumerate()
                    {
                        out_row[2 * (lo + j) + pw] = act.apply(bo + x0 + y0 + x1 + y1);
                    }
                }
            }
        }
    }
}

/// `[batch][c][n]` ↔ `[c][batch][n]` (the same function both ways with the roles swapped).
pub fn swap_outer(src: &[f32], outer: usize, inner: usize, n: usize, dst: &mut [f32]) {
    debug_assert_eq!(src.len(), outer * inner * n);
    debug_assert_eq!(dst.len(), outer * inner * n);
    for a in 0..outer {
        for b in 0..inner {
            let s = (a * inner + b) * n;
            let d = (b * outer + a) * n;
            dst[d..d + n].copy_from_slice(&src[s..s + n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919) % 211) as f32 / 50.0 - 2.0)
            .collect()
    }

    #[test]
    fn im2col_matches_the_padded_stride_2_window_definition() {
        for (c, batch, s) in [(3, 2, 8), (2, 1, 2), (1, 3, 6)] {
            let grid = Grid { batch, side: s };
            let x = values(c * grid.n(), 1);
            let so = s / 2;
            let n_out = batch * so * so;
            let mut cols = vec![f32::NAN; c * 16 * n_out];
            let mut scratch = vec![0.0; s * s];
            im2col_down(&x, c, grid, &mut scratch, &mut cols);
            for ci in 0..c {
                for kh in 0..4 {
                    for kw in 0..4 {
                        for b in 0..batch {
                            for oh in 0..so {
                                for ow in 0..so {
                                    let (ih, iw) = (
                                        2 * oh as isize + kh as isize - 1,
                                        2 * ow as isize + kw as isize - 1,
                                    );
                                    let inside = (0..s as isize).contains(&ih)
                                        && (0..s as isize).contains(&iw);
                                    let want = if inside {
                                        x[((ci * batch + b) * s + ih as usize) * s + iw as usize]
                                    } else {
                                        0.0
                                    };
                                    let row = (ci * 4 + kh) * 4 + kw;
                                    assert_eq!(cols[row * n_out + (b * so + oh) * so + ow], want);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn col2im_gather_equals_the_transposed_conv_scatter() {
        for (c_out, batch, s) in [(2, 2, 4), (3, 1, 1), (1, 2, 3)] {
            let grid = Grid { batch, side: s };
            let n_in = grid.n();
            let cols = values(c_out * 16 * n_in, 3);
            let bias: Vec<f32> = (0..c_out).map(|o| o as f32 * 0.25 - 0.1).collect();
            let so = 2 * s;
            // Scatter: out[2i + kh − 1][2j + kw − 1] += cols[o, kh, kw][i][j].
            let mut want = vec![0.0f32; c_out * batch * so * so];
            for o in 0..c_out {
                for kh in 0..4 {
                    for kw in 0..4 {
                        for b in 0..batch {
                            for i in 0..s {
                                for j in 0..s {
                                    let (oh, ow) = (
                                        2 * i as isize + kh as isize - 1,
                                        2 * j as isize + kw as isize - 1,
                                    );
                                    if (0..so as isize).contains(&oh)
                                        && (0..so as isize).contains(&ow)
                                    {
                                        want[((o * batch + b) * so + oh as usize) * so
                                            + ow as usize] += cols
                                            [((o * 4 + kh) * 4 + kw) * n_in + (b * s + i) * s + j];
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let mut got = vec![f32::NAN; want.len()];
            col2im_up(
                &cols,
                c_out,
                grid,
                &bias,
                Activation::Relu,
                &vec![0.0; s],
                &mut got,
            );
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                let w = (w + bias[k / (batch * so * so)]).max(0.0);
                assert!(
                    (g - w).abs() < 1e-5,
                    "{c_out} {batch} {s} at {k}: {g} vs {w}"
                );
            }
        }
    }
}
