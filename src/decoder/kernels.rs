//! Plain-Rust data-movement kernels for the CPU inference path ([`super::infer::HostUNet`]).
//!
//! Activations are `[channels][n]` with `n = batch · h · w` (batch inside the channel), so
//! a convolution is one matrix product over the whole batch and a channel concat is two
//! buffers one after the other. Every convolution here is 4×4, stride 2, padding 1.
//! None of the data-movement kernels allocate; the caller sizes the buffers.
//!
//! Two matrix products: [`matmul`] (the `gemm` crate on strided views, for training, which
//! allocates its packing buffers on every call) and [`product_into`] / [`product_seq`]
//! (faer's, for inference: its packing workspace is one buffer per thread, made on the
//! thread's first product, so once every thread of the pool has run one, a product
//! allocates nothing, which the decode thread's real-time contract needs).

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

/// Buffers kept from one pass (or training step) to the next, found by length: every
/// pass asks for the same sizes, so after the first nothing is allocated (nor page-faulted
/// and zeroed by the kernel).
#[derive(Debug, Default)]
pub struct BufferPool(Vec<Vec<f32>>);

impl BufferPool {
    /// Most buffers kept (an inference pass holds about three per block, a generator +
    /// discriminator training step ~150 at once).
    const MAX: usize = 512;

    /// A buffer of exactly `len` values, contents unspecified.
    pub fn take(&mut self, len: usize) -> Vec<f32> {
        match self.0.iter().rposition(|v| v.len() == len) {
            Some(i) => self.0.swap_remove(i),
            None => vec![0.0; len],
        }
    }

    /// A buffer of `len` zeros.
    pub fn zeros(&mut self, len: usize) -> Vec<f32> {
        let mut v = self.take(len);
        v.fill(0.0);
        v
    }

    pub fn give(&mut self, v: Vec<f32>) {
        if self.0.len() < Self::MAX && !v.is_empty() {
            self.0.push(v);
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
    let n_out = input.half().n();
    debug_assert_eq!(x.len(), channels * input.n());
    debug_assert_eq!(cols.len(), channels * 16 * n_out);
    for (x_c, rows) in x
        .chunks_exact(input.n())
        .zip(cols.chunks_exact_mut(16 * n_out))
    {
        im2col_down_channel(x_c, input, scratch, rows);
    }
}

/// [`im2col_down`] for one channel: `x [batch][s][s]` → `rows [16][batch][s/2][s/2]`.
/// Channels are independent, so callers may run them in parallel (one `scratch` each).
pub fn im2col_down_channel(x: &[f32], input: Grid, scratch: &mut [f32], rows: &mut [f32]) {
    let s = input.side;
    let so = s / 2;
    let plane_out = so * so;
    let n_out = input.batch * plane_out;
    let (even, odd) = scratch[..s * s].split_at_mut(s * so);
    for b in 0..input.batch {
        let plane = &x[b * s * s..][..s * s];
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

/// What runs after a layer's bias add.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// No activation (a layer whose BatchNorm comes after it, in training).
    Identity,
    LeakyRelu(f32),
    Relu,
    Sigmoid,
}

impl Activation {
    #[inline(always)]
    fn apply(self, v: f32) -> f32 {
        match self {
            Self::Identity => v,
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
            Activation::Identity => {
                for v in row {
                    *v += b;
                }
            }
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
    let n_in = input.n();
    let so = 2 * input.side;
    debug_assert_eq!(cols.len(), channels_out * 16 * n_in);
    debug_assert_eq!(out.len(), channels_out * input.batch * so * so);
    for ((co, out_c), &bo) in cols
        .chunks_exact(16 * n_in)
        .zip(out.chunks_exact_mut(input.batch * so * so))
        .zip(bias)
    {
        col2im_up_channel(co, input, bo, act, zeros, out_c);
    }
}

/// [`col2im_up`] for one output channel: `co [16][batch][s][s]` → `out [batch][2s][2s]`.
/// Channels are independent, so callers may run them in parallel.
pub fn col2im_up_channel(
    co: &[f32],
    input: Grid,
    bo: f32,
    act: Activation,
    zeros: &[f32],
    out_c: &mut [f32],
) {
    let s = input.side;
    let so = 2 * s;
    let n_in = input.n();
    let plane_in = s * s;
    let zeros = &zeros[..s];
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

/// The transpose of the row-major `[rows][cols]` matrix `src`. A transposed conv's Burn
/// weight `[in][out][k]` is `[in][out·k]`; its transpose `[out·k][in]` is what the
/// products read row by row (and the transpose of that gives Burn's layout back).
pub fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut dst = vec![0.0f32; src.len()];
    swap_outer(src, rows, cols, 1, &mut dst);
    dst
}

/// The `[n_out, n_in]` matrix of torch's bilinear `interpolate(align_corners=False)`
/// along one axis: output pixel d samples the input at (d + ½)·n_in/n_out − ½,
/// clamped at 0, between its two neighbours.
pub fn bilinear_matrix(n_in: usize, n_out: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; n_out * n_in];
    let scale = n_in as f64 / n_out as f64;
    for d in 0..n_out {
        let src = ((d as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        let w1 = (src - i0 as f64) as f32;
        m[d * n_in + i0] += 1.0 - w1;
        m[d * n_in + i1] += w1;
    }
    m
}

/// A read-only matrix view over a slice: element (i, j) is `data[i·row_stride + j·col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows × cols` matrix at the start of `data`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose (a view; nothing moves).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Columns `start..start + len` (a view).
    pub fn columns(self, start: usize, len: usize) -> Self {
        assert!(start + len <= self.cols, "columns out of range");
        Self {
            data: &self.data[(start * self.col_stride).min(self.data.len())..],
            cols: len,
            ..self
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Element (i, j). Panics outside the view.
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> f32 {
        assert!(i < self.rows && j < self.cols, "element outside the view");
        self.data[i * self.row_stride + j * self.col_stride]
    }

    /// Whether every element the view addresses lies inside its slice.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// Columns below which a product is not split between threads (one SIMD panel's worth
/// per thread at least; smaller parts cost more in hand-over than they save).
const MIN_COLUMNS_PER_THREAD: usize = 64;

/// `dst = a · b` for row-major `a [m][k]`, `b [k][n]` and `dst [m][n]`, on the current
/// Rayon pool: the columns are split between its threads, each part one single-threaded
/// faer product. Allocates nothing once each pool thread has run a product (see the
/// module doc); splitting columns never splits a sum, so the result does not depend on
/// the thread count.
///
/// Panics if a slice is shorter than its shape.
pub fn product_into(dst: &mut [f32], a: &[f32], m: usize, k: usize, b: &[f32], n: usize) {
    assert!(a.len() >= m * k && b.len() >= k * n && dst.len() >= m * n);
    let dst = faer::MatMut::from_row_major_slice_mut(&mut dst[..m * n], m, n);
    let a = faer::MatRef::from_row_major_slice(&a[..m * k], m, k);
    let b = faer::MatRef::from_row_major_slice(&b[..k * n], k, n);
    split_columns(dst, a, b, rayon::current_num_threads());
}

fn split_columns(
    dst: faer::MatMut<'_, f32>,
    a: faer::MatRef<'_, f32>,
    b: faer::MatRef<'_, f32>,
    parts: usize,
) {
    let n = dst.ncols();
    if parts <= 1 || n < 2 * MIN_COLUMNS_PER_THREAD || a.nrows() * a.ncols() * n < PARALLEL_MACS {
        product_seq(dst, a, b, false);
        return;
    }
    let left = parts / 2;
    // Split on a multiple of 16 columns (a whole number of SIMD registers on either side).
    let mid = ((n * left / parts) / 16 * 16).clamp(MIN_COLUMNS_PER_THREAD, n - 16);
    let (dst_l, dst_r) = dst.split_at_col_mut(mid);
    let (b_l, b_r) = b.split_at_col(mid);
    rayon::join(
        || split_columns(dst_l, a, b_l, left),
        || split_columns(dst_r, a, b_r, parts - left),
    );
}

/// `dst = a · b` (or `dst += a · b` with `accumulate`) on this thread, any strides: faer's
/// product, allocation-free once this thread has run one.
pub fn product_seq(
    dst: faer::MatMut<'_, f32>,
    a: faer::MatRef<'_, f32>,
    b: faer::MatRef<'_, f32>,
    accumulate: bool,
) {
    let accum = if accumulate {
        faer::Accum::Add
    } else {
        faer::Accum::Replace
    };
    faer::linalg::matmul::matmul(dst, accum, a, b, 1.0f32, faer::Par::Seq);
    clear_upper_vector_state();
}

/// `vzeroupper` after faer's AVX-512/AVX2 kernels, which return with the upper halves of
/// the vector registers dirty: on this machine's Xeon the SSE code that ran next (glibc's
/// `expf` in the head's sigmoid) then took 3.3 ms instead of 0.08 ms for a 96 px image
/// (the AVX–SSE transition penalty; `decoder::infer::host_profile`).
#[inline]
fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked above); vzeroupper only clears the upper
        // halves of the vector registers, which hold nothing live between functions.
        unsafe { std::arch::x86_64::_mm256_zeroupper() };
    }
}

/// Runs one product large enough for faer's packed path on this thread, so that the
/// thread's packing workspace exists before a real-time loop needs it.
pub fn warm_up_products() {
    let n = 96;
    let a = vec![0.5f32; n * n];
    let mut c = vec![0.0f32; n * n];
    product_seq(
        faer::MatMut::from_row_major_slice_mut(&mut c, n, n),
        faer::MatRef::from_row_major_slice(&a, n, n),
        faer::MatRef::from_row_major_slice(&a, n, n),
        false,
    );
    std::hint::black_box(&c);
}

/// Products smaller than this many multiply-adds run on one thread (gemm's own
/// threading costs more than it saves below it).
const PARALLEL_MACS: usize = 1 << 18;

/// `dst = a · b` (or `dst += a · b` with `accumulate`), `dst` row-major `a.rows × b.cols`.
/// The `gemm` crate's kernels (AVX-512/AVX2/NEON picked at run time), on Rayon's pool
/// for large products. Deterministic: no product splits its inner dimension across threads.
///
/// Panics if the shapes do not chain or a view runs past its slice.
pub fn matmul(dst: &mut [f32], a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: inner dimensions differ");
    assert_eq!(dst.len(), m * n, "matmul: destination size");
    assert!(a.in_bounds() && b.in_bounds(), "matmul: view out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    let parallelism = if m * n * k >= PARALLEL_MACS {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // A long reduction into a short, wide result (a convolution's weight gradient:
    // dW [16][288] = dz [16][18432] · colsᵀ) runs 3–6× faster when gemm writes the result
    // column-major (measured on the training engine's shapes, AVX-512 and one core: 2.8 vs
    // 17 ms for the one above); it is small, so transpose it into place afterwards.
    if m < n && k > n {
        let mut t = vec![0.0f32; m * n];
        // SAFETY: as below; `t` is a fresh m·n buffer addressed column-major (row stride 1,
        // column stride m).
        unsafe { raw_gemm(m, n, k, t.as_mut_ptr(), 1, m, false, a, b, parallelism) };
        for (i, row) in dst.chunks_exact_mut(n).enumerate() {
            for (j, d) in row.iter_mut().enumerate() {
                let v = t[i + j * m];
                *d = if accumulate { *d + v } else { v };
            }
        }
        return;
    }
    // SAFETY: the three views were checked to lie inside their slices (`in_bounds`,
    // `dst.len() == m·n` for the row-major destination); `dst` is borrowed mutably, so it
    // cannot alias `a` or `b`.
    unsafe {
        raw_gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            n,
            1,
            accumulate,
            a,
            b,
            parallelism,
        )
    };
}

/// `gemm::gemm` on checked views into `dst` with the given strides.
///
/// # Safety
/// `dst` must address `m·n` writable elements at the given strides, not aliasing `a` or
/// `b`, whose views must be in bounds.
#[allow(clippy::too_many_arguments)]
unsafe fn raw_gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_row_stride: usize,
    dst_col_stride: usize,
    accumulate: bool,
    a: MatRef<'_>,
    b: MatRef<'_>,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's contract; strides fit in isize because they index real slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_col_stride as isize,
            dst_row_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
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

    #[test]
    fn matmul_matches_the_definition_with_transposes_and_accumulation() {
        // The second shape (short, wide result, long reduction) takes the column-major path.
        for (m, k, n) in [(5, 7, 3), (3, 40, 9)] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let want =
                |i: usize, j: usize| (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum::<f32>();
            let mut c = vec![f32::NAN; m * n];
            matmul(&mut c, MatRef::new(&a, m, k), MatRef::new(&b, k, n), false);
            // The same product from stored transposes, accumulated onto 1.
            let at: Vec<f32> = (0..k * m).map(|p| a[(p % m) * k + p / m]).collect();
            let bt: Vec<f32> = (0..n * k).map(|p| b[(p % k) * n + p / k]).collect();
            let mut d = vec![1.0; m * n];
            matmul(
                &mut d,
                MatRef::new(&at, k, m).t(),
                MatRef::new(&bt, n, k).t(),
                true,
            );
            // Columns 2..5 of a against rows 2..5 of b.
            let mut e = vec![0.0; m * n];
            matmul(
                &mut e,
                MatRef::new(&a, m, k).columns(2, 3),
                MatRef::new(&b[2 * n..5 * n], 3, n),
                false,
            );
            for i in 0..m {
                for j in 0..n {
                    assert!((c[i * n + j] - want(i, j)).abs() < 1e-4);
                    assert!((d[i * n + j] - 1.0 - want(i, j)).abs() < 1e-4);
                    let part = (2..5).map(|l| a[i * k + l] * b[l * n + j]).sum::<f32>();
                    assert!((e[i * n + j] - part).abs() < 1e-4);
                }
            }
        }
    }
}
