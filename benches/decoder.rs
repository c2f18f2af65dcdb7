//! Decoder benchmarks: the whole `reconstruct` at 96 px (width 64 and 16, batch 1), with
//! Burn's own conv ops on the width-64 U-Net for comparison; the end-to-end Gaussian RF
//! layer for 960 electrodes in 15 arrays; the fixed RF maps.
//!
//! `cargo bench --bench decoder` (about a minute).

use std::hint::black_box;
use std::time::Duration;

use burn::tensor::{Tensor, TensorData};
use criterion::{criterion_group, criterion_main, Criterion};
use monkeysee::decoder::infer::FoldedUNet;
use monkeysee::decoder::input::CachedGaussianMaps;
use monkeysee::decoder::{
    CpuBackend as B, Decoder, DecoderConfig, DecoderKind, ElectrodeSpec, FixedRfMaps,
    GaussianRfLayer,
};

const SIZE: usize = 96;

/// 960 electrodes in 15 arrays of 64 (7 V1, 4 V4, 4 IT), RFs spread over the image.
fn rig(kind: DecoderKind, width: usize) -> DecoderConfig {
    let windows = if kind == DecoderKind::Spatiotemporal {
        5
    } else {
        1
    };
    let electrodes = (0..960)
        .map(|e: usize| {
            let array = e / 64;
            let area = match array {
                0..=6 => 0,
                7..=10 => 1,
                _ => 2,
            };
            let h = (e as u32).wrapping_mul(2_654_435_761);
            let x = (h % 9600) as f32 / 100.0;
            let y = ((h / 9600) % 9600) as f32 / 100.0;
            ElectrodeSpec {
                array,
                area,
                rf_px: Some([x, y, 2.0 + (h % 7) as f32]),
            }
        })
        .collect();
    DecoderConfig {
        kind,
        width,
        levels: monkeysee::decoder::arch::DEFAULT_LEVELS.to_vec(),
        image_size: SIZE,
        n_arrays: 15,
        windows_per_electrode: windows,
        window_names: (0..windows).map(|w| format!("w{w}")).collect(),
        electrodes,
        linear_pathway: None,
        channel_per_electrode: false,
        input_scale: 1.0,
    }
}

fn features(cfg: &DecoderConfig) -> Vec<f32> {
    (0..cfg.n_features())
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect()
}

fn forward(c: &mut Criterion) {
    let dev = Default::default();
    let mut group = c.benchmark_group("decoder_96px");
    for width in [64, 16] {
        let cfg = rig(DecoderKind::Spatial, width);
        let dec = Decoder::<B>::random(cfg.clone(), 0, &dev).expect("decoder");
        let f = features(&cfg);
        let mut out = vec![0.0f32; cfg.image_len()];
        group.bench_function(format!("spatial_w{width}_batch1"), |b| {
            b.iter(|| {
                dec.reconstruct(black_box(&f), &mut out)
                    .expect("reconstruct")
            })
        });
        if width == 64 {
            // What the CPU path replaced: the BatchNorm network and the folded network run
            // with Burn's own conv ops (U-Net only, same input).
            let unet = &dec.model().unet;
            let folded = FoldedUNet::from_unet(unet);
            let x = Tensor::<B, 4>::ones([1, 15, SIZE, SIZE], &dev);
            group.bench_function("unet_w64_burn_ops_batchnorm", |b| {
                b.iter(|| unet.forward(black_box(x.clone())).into_data())
            });
            group.bench_function("unet_w64_burn_ops_folded", |b| {
                b.iter(|| folded.forward(black_box(x.clone())).into_data())
            });
        }
    }
    group.finish();
}

/// Burn's NdArray backend on the same width-64 model (`--features compare-backends`):
/// the whole decoder (folded U-Net on Burn's conv ops, since the host path is Flex-only)
/// and the BatchNorm U-Net.
#[cfg(feature = "compare-backends")]
fn ndarray_backend(c: &mut Criterion) {
    use burn::backend::NdArray;
    let dev = Default::default();
    let mut group = c.benchmark_group("decoder_96px_ndarray");
    let cfg = rig(DecoderKind::Spatial, 64);
    let dec = Decoder::<NdArray>::random(cfg.clone(), 0, &dev).expect("decoder");
    let f = features(&cfg);
    let mut out = vec![0.0f32; cfg.image_len()];
    group.bench_function("spatial_w64_batch1", |b| {
        b.iter(|| {
            dec.reconstruct(black_box(&f), &mut out)
                .expect("reconstruct")
        })
    });
    let x = Tensor::<NdArray, 4>::ones([1, 15, SIZE, SIZE], &dev);
    group.bench_function("unet_w64_burn_ops_batchnorm", |b| {
        b.iter(|| dec.model().unet.forward(black_box(x.clone())).into_data())
    });
    group.finish();
}

#[cfg(not(feature = "compare-backends"))]
fn ndarray_backend(_: &mut Criterion) {}

fn gaussian_rf(c: &mut Criterion) {
    let dev = Default::default();
    let cfg = rig(DecoderKind::EndToEnd, 16);
    let layer = GaussianRfLayer::<B>::new(&cfg, &dev);
    let r: Tensor<B, 2> = Tensor::from_data(TensorData::new(features(&cfg), [1, 960]), &dev);
    let mut group = c.benchmark_group("gaussian_rf_960e_15a_96px");
    // What training pays: build the separable factors from (μ, σ), then the batched product.
    group.bench_function("forward", |b| {
        b.iter(|| black_box(layer.forward(r.clone())).into_data())
    });
    // What inference pays: the maps frozen on the host, each Gaussian cut to its support.
    let maps = CachedGaussianMaps::new(&layer, &cfg).expect("maps");
    let f = features(&cfg);
    let mut out = vec![0.0f32; maps.image_len()];
    group.bench_function("cached_maps_fill", |b| {
        b.iter(|| maps.fill(black_box(&f), &mut out))
    });
    group.finish();
}

fn fixed_rf_maps(c: &mut Criterion) {
    let mut group = c.benchmark_group("fixed_rf_maps_960e_96px");
    for kind in [DecoderKind::Spatial, DecoderKind::Spatiotemporal] {
        let cfg = rig(kind, 16);
        group.bench_function(format!("build_{kind}"), |b| {
            b.iter(|| FixedRfMaps::build(black_box(&cfg)).expect("maps"))
        });
        let maps = FixedRfMaps::build(&cfg).expect("maps");
        let f = features(&cfg);
        let mut out = vec![0.0f32; maps.image_len()];
        group.bench_function(format!("fill_{kind}"), |b| {
            b.iter(|| maps.fill(black_box(&f), &mut out))
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = forward, ndarray_backend, gaussian_rf, fixed_rf_maps
}
criterion_main!(benches);
