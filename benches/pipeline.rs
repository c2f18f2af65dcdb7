//! Hot-path benchmarks: the ingest ring, window assembly and broadband → MUA extraction
//! at 1024 channels.
//!
//! `cargo bench --bench pipeline`. The broadband bench filters 100 ms of 30 kHz: its
//! time over 100 ms is the extraction's real-time factor on one core.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use monkeysee::config::{RigConfig, WindowSetKind};
use monkeysee::ingest::broadband::MuaExtractor;
use monkeysee::ingest::SampleRing;
use monkeysee::telemetry::Counters;
use monkeysee::window::{
    AssemblerConfig, FrameStatus, ImageId, Mode, Onset, SampleMeta, WindowAssembler,
};
use rand::{Rng, SeedableRng};

fn rig() -> RigConfig {
    RigConfig::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("firmware-config/synthetic.toml"),
    )
    .expect("synthetic rig")
}

fn meta(k: usize) -> SampleMeta {
    SampleMeta {
        lsl_time: 100.0 + k as f64 / 1000.0,
        arrival: Instant::now(),
        transport_delay: 0.0,
    }
}

fn filled(rig: &RigConfig, set: WindowSetKind, mode: Mode) -> (WindowAssembler, usize) {
    let counters = Counters::default();
    let mut asm = WindowAssembler::new(AssemblerConfig::from_rig(rig, set, mode), None);
    let row: Vec<f32> = (0..rig.channel_count).map(|c| (c % 13) as f32).collect();
    for k in 0..1000 {
        asm.push_sample(&row, meta(k), &counters);
    }
    (asm, 1000)
}

fn bench_window(c: &mut Criterion) {
    let rig = rig();
    let counters = Counters::default();
    let row: Vec<f32> = (0..rig.channel_count).map(|c| (c % 13) as f32).collect();

    let (mut asm, mut k) = filled(&rig, WindowSetKind::Tw15, Mode::Event);
    c.bench_function("window/push_sample_1024ch", |b| {
        b.iter(|| {
            asm.push_sample(black_box(&row), meta(k), &counters);
            k += 1;
        })
    });

    for (name, set) in [("tw15", WindowSetKind::Tw15), ("tw3", WindowSetKind::Tw3)] {
        let (mut asm, k) = filled(&rig, set, Mode::Event);
        let mut frame = asm.new_frame();
        let onset = 100.0 + (k - 400) as f64 / 1000.0;
        c.bench_function(&format!("window/event_frame_{name}_960_electrodes"), |b| {
            b.iter(|| {
                asm.push_onset(
                    Onset {
                        lsl_time: onset,
                        image: ImageId::new("x"),
                    },
                    &counters,
                );
                let s = asm.next_frame(&mut frame, &counters);
                assert_eq!(s, FrameStatus::Ready);
                black_box(&frame.features);
            })
        });
    }

    let (mut prod, mut cons) = SampleRing::new(rig.channel_count, 4096);
    let chunk: Vec<f32> = (0..10 * rig.channel_count).map(|v| v as f32).collect();
    let stamps: Vec<f64> = (0..10).map(|v| v as f64).collect();
    let mut out = vec![0.0f32; rig.channel_count];
    c.bench_function("ring/push_pop_10_samples_1024ch", |b| {
        b.iter(|| {
            prod.push_chunk(&chunk, &stamps, 10, Instant::now(), 0.0, &counters);
            while cons.pop(&mut out).is_some() {}
        })
    });
}

fn bench_broadband(c: &mut Criterion) {
    let rig = rig();
    let ch = rig.channel_count;
    let mut x = MuaExtractor::new(&rig.broadband, ch, rig.sampling_rate_hz).expect("filters");
    let rows = (rig.broadband.sampling_rate_hz * 0.1) as usize;
    // Spiky noise, like a headstage's signal.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let input: Vec<f32> = (0..rows * ch)
        .map(|_| rng.random_range(-50.0..50.0))
        .collect();
    let mut out = vec![0.0f32; (rows / x.decimation() + 1) * ch];
    let mut taken = vec![0usize; rows / x.decimation() + 1];
    let simd = if x.uses_avx2() { "avx2" } else { "sse2" };
    c.bench_function(
        &format!("broadband/extract_100ms_1024ch_30khz_{simd}"),
        |b| b.iter(|| black_box(x.process(black_box(&input), rows, &mut out, &mut taken))),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = bench_window, bench_broadband
}
criterion_main!(benches);
