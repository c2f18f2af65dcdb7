//! The decoder on an NVIDIA GPU (burn-cuda), beside the CPU in the same run.
//!
//! 1. Correctness: the shipped demo model (`models/demo-e2e`) reconstructs the same
//!    images on CUDA as on the CPU (largest absolute pixel difference, batch 1 and 8).
//! 2. Speed: the forward pass (features in, image back on the host, as the daemon needs
//!    it) at U-Net widths 16, 32, 64 and 128 with random weights, batch 1, on both.
//!
//! Needs `--features cuda` and a GPU; prints one line per measurement.
//!
//! ```sh
//! cargo run --release --features cuda --example cuda-check -- [REPO_DIR]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::backend::Backend;
use monkeysee::config::decoder_config;
use monkeysee::config::RigConfig;
use monkeysee::decoder::{CpuBackend, Decoder, DecoderKind};

type Gpu = burn::backend::Cuda;

/// Deterministic features in [-1, 1).
fn features(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i + 1) * 2654435761usize.wrapping_add(seed * 97)) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

/// p50, p99 and max of `runs` timed forward passes (after 10 untimed), ms.
fn time<B: Backend>(dec: &Decoder<B>, runs: usize) -> anyhow::Result<(f64, f64, f64)> {
    let cfg = dec.config();
    let input = features(cfg.n_features(), 1);
    let mut image = vec![0.0f32; cfg.image_len()];
    for _ in 0..10 {
        dec.reconstruct(&input, &mut image)?;
    }
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            dec.reconstruct(&input, &mut image)?;
            Ok(start.elapsed().as_secs_f64() * 1000.0)
        })
        .collect::<anyhow::Result<_>>()?;
    t.sort_by(f64::total_cmp);
    let q = |p: f64| t[((t.len() - 1) as f64 * p).round() as usize];
    Ok((q(0.5), q(0.99), t[t.len() - 1]))
}

fn main() -> anyhow::Result<()> {
    let repo = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let rig = RigConfig::load(&repo.join("firmware-config/synthetic.toml"))?;
    let gpu = burn::backend::cuda::CudaDevice::default();
    let model = repo.join("models/demo-e2e");
    let cpu_dec = Decoder::<CpuBackend>::load(&model, &Default::default())?;
    let gpu_dec = Decoder::<Gpu>::load(&model, &gpu)?;
    let cfg = cpu_dec.config().clone();
    for batch in [1usize, 8] {
        let input = features(batch * cfg.n_features(), 7);
        let (mut a, mut b) = (
            vec![0.0f32; batch * cfg.image_len()],
            vec![0.0f32; batch * cfg.image_len()],
        );
        cpu_dec.reconstruct_batch(&input, batch, &mut a)?;
        gpu_dec.reconstruct_batch(&input, batch, &mut b)?;
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        let mean = a.iter().map(|v| *v as f64).sum::<f64>() / a.len() as f64;
        println!(
            "correctness demo-e2e batch {batch}: max |cuda - cpu| = {diff:.3e} (pixels 0..1, mean {mean:.3})"
        );
    }
    for width in [16usize, 32, 64, 128] {
        let cfg = decoder_config(&rig, DecoderKind::Spatial, width);
        let on_gpu = Decoder::<Gpu>::random(cfg.clone(), 0, &gpu)?;
        let on_cpu = Decoder::<CpuBackend>::random(cfg, 0, &Default::default())?;
        let (g50, g99, gmax) = time(&on_gpu, 200)?;
        let (c50, c99, cmax) = time(&on_cpu, 50)?;
        println!(
            "forward width {width} (96 px, batch 1, image to host): cuda p50 {g50:.2} p99 {g99:.2} max {gmax:.2} ms; cpu ({} threads) p50 {c50:.2} p99 {c99:.2} max {cmax:.2} ms",
            rayon::current_num_threads()
        );
    }
    Ok(())
}
