use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::bounded;
use monkeysee::config::{RigConfig, WindowSetKind};
use monkeysee::daemon::{WindowStage, FRAME_POOL};
use monkeysee::ingest::{hand_on, local_clock, MarkerEvent, MuaInlet, MuaSpec, Pull, SampleRing};
use monkeysee::telemetry::Counters;
use monkeysee::window::{AssemblerConfig, FeatureFrame, ImageId, Mode, Onset, WindowAssembler};

use super::common::{allocations_in, synthetic_rig_path, FakeRig};

/// Feeds 3 s of 1024-channel data and 6 onsets through the ring and the window
/// stage; only the set-up allocates.
fn window_stage_allocates_nothing(mode: Mode, set: WindowSetKind) {
    let rig = RigConfig::load(&synthetic_rig_path()).unwrap();
    let counters = Arc::new(Counters::default());
    let ch = rig.channel_count;
    let (mut producer, consumer) = SampleRing::new(ch, 4000);
    let (marker_tx, marker_rx) = bounded::<MarkerEvent>(64);
    // A model's statistics with a dropped electrode, and a calibration block that ends
    // inside the run: every path of the estimator, after start-up.
    let mut cfg = AssemblerConfig::from_rig(&rig, set, mode);
    cfg.calibration_presentations = 3;
    let per = rig.windows.windows_per_electrode(set);
    let n_e = rig.electrodes.len();
    let stats = monkeysee::norm::NormStats {
        estimator: monkeysee::norm::ESTIMATOR.into(),
        windows: per,
        mean: vec![6.0; per * n_e],
        std: vec![2.0; per * n_e],
        baseline_mean: vec![6.0; n_e],
        baseline_std: vec![2.0; n_e],
        presentations: 100,
        dropped: vec![0, 5],
    };
    let assembler = WindowAssembler::new(cfg, Some(&stats));
    let template = assembler.new_frame();
    let (work_tx, work_rx) = bounded::<FeatureFrame>(FRAME_POOL);
    let (free_tx, free_rx) = bounded::<FeatureFrame>(FRAME_POOL);
    for _ in 0..FRAME_POOL {
        free_tx.send(template.clone()).unwrap();
    }
    let mut stage = WindowStage::new(
        assembler,
        consumer,
        Some(marker_rx),
        work_tx,
        free_rx,
        counters.clone(),
    );
    let chunk = 10;
    let mut values = vec![0.0f32; chunk * ch];
    let mut stamps = vec![0.0f64; chunk];
    let t0 = 500.0;
    let mut frames = 0;
    let ((), allocs) = allocations_in(|| {
        for step in 0..300 {
            for i in 0..chunk {
                let k = step * chunk + i;
                stamps[i] = t0 + k as f64 / 1000.0;
                for c in 0..ch {
                    values[i * ch + c] = ((k + c) % 13) as f32;
                }
            }
            if step % 40 == 5 {
                let _ = marker_tx.try_send(MarkerEvent::Onset(Onset {
                    lsl_time: t0 + step as f64 * chunk as f64 / 1000.0,
                    image: ImageId::new("img"),
                }));
            }
            producer.push_chunk(
                &values,
                &stamps,
                chunk,
                Instant::now(),
                local_clock(),
                &counters,
            );
            stage.step();
            // The decode thread's side: hand buffers back.
            while let Ok(f) = work_rx.try_recv() {
                frames += 1;
                let _ = free_tx.try_send(f);
            }
        }
    });
    assert_eq!(
        allocs, 0,
        "the ingest→window hot path allocated {allocs} times"
    );
    assert!(
        frames >= 6,
        "only {frames} frames came out; the loop did not do its work"
    );
    assert_eq!(Counters::get(&counters.overruns), 0);
}

#[test]
fn event_window_loop_allocates_nothing_after_start_up() {
    window_stage_allocates_nothing(Mode::Event, WindowSetKind::Tw15);
}

#[test]
fn sliding_tw3_window_loop_allocates_nothing_after_start_up() {
    window_stage_allocates_nothing(Mode::Sliding, WindowSetKind::Tw3);
}

#[test]
fn full_ring_counts_overruns_instead_of_blocking() {
    let counters = Counters::default();
    let (mut producer, mut consumer) = SampleRing::new(4, 8);
    let values = vec![1.0f32; 4 * 20];
    let stamps: Vec<f64> = (0..20).map(|k| k as f64).collect();
    producer.push_chunk(&values, &stamps, 20, Instant::now(), 0.0, &counters);
    assert_eq!(Counters::get(&counters.overruns), 12);
    let mut out = [0.0f32; 4];
    let mut n = 0;
    while consumer.pop(&mut out).is_some() {
        n += 1;
    }
    assert_eq!(n, 8);
}

/// A 64-channel outlet with a connected inlet and 500 samples (channel c holds
/// c · `scale`) already pushed; the rig must outlive the inlet's use.
fn inlet_with_500_samples(tag: &str, scale: f32) -> (FakeRig, MuaInlet, Vec<f32>) {
    let rig = FakeRig::new(tag, 64);
    let sel = monkeysee::config::StreamSelector {
        query: Some(rig.mua_query()),
        ..Default::default()
    };
    let inlet = MuaInlet::connect(&sel, &MuaSpec::mua(64, 1000.0, 100), 10.0).unwrap();
    assert!(rig.mua.wait_for_consumers(5.0));
    let sample: Vec<f32> = (0..64).map(|c| c as f32 * scale).collect();
    use lsl::Pushable;
    for _ in 0..500 {
        rig.mua.push_sample(&sample).unwrap();
    }
    (rig, inlet, sample)
}

/// Pulls from a 64-channel inlet into a ring and out again until `want` samples came
/// through (10 s at most), counting allocations; returns the count, the last sample and
/// the allocations.
fn pull_through_ring(inlet: &mut MuaInlet, want: usize) -> (usize, Vec<f32>, u64) {
    let counters = Counters::default();
    let (mut producer, mut consumer) = SampleRing::new(64, 4000);
    let mut got = 0usize;
    let mut out = vec![0.0f32; 64];
    let ((), allocs) = allocations_in(|| {
        let start = Instant::now();
        while got < want && start.elapsed().as_secs() < 10 {
            if let Pull::Samples(n) = inlet.pull(0.05) {
                producer.push_chunk(
                    inlet.values(),
                    inlet.stamps(),
                    n,
                    Instant::now(),
                    local_clock(),
                    &counters,
                );
                while consumer.pop(&mut out).is_some() {
                    got += 1;
                }
            }
        }
    });
    (got, out, allocs)
}

#[test]
fn lsl_pull_loop_allocates_nothing_after_connect() {
    let (_rig, mut inlet, sample) = inlet_with_500_samples("alloc", 1.0);
    let (got, out, allocs) = pull_through_ring(&mut inlet, 500);
    assert_eq!(got, 500, "every sample pushed by the outlet arrives");
    assert_eq!(out, sample);
    assert_eq!(allocs, 0, "the LSL pull loop allocated {allocs} times");
}

#[test]
fn lsl_pull_loop_with_recording_allocates_nothing_after_connect() {
    let (_rig, mut inlet, sample) = inlet_with_500_samples("alloc-rec", 0.5);
    let counters = Counters::default();
    let (mut window, mut window_out) = SampleRing::new(64, 4000);
    let (mut record, mut record_out) = SampleRing::new(64, 4000);
    let (mut got, mut recorded) = (0usize, 0usize);
    let mut out = vec![0.0f32; 64];
    let mut rec = vec![0.0f32; 64];
    let ((), allocs) = allocations_in(|| {
        let start = Instant::now();
        while got < 500 && start.elapsed().as_secs() < 10 {
            if let Pull::Samples(n) = inlet.pull(0.05) {
                hand_on(
                    inlet.values(),
                    inlet.stamps(),
                    n,
                    Instant::now(),
                    local_clock(),
                    &mut window,
                    Some(&mut record),
                    &counters,
                );
                while window_out.pop(&mut out).is_some() {
                    got += 1;
                }
                while record_out.pop(&mut rec).is_some() {
                    recorded += 1;
                }
            }
        }
    });
    assert_eq!(got, 500, "every sample pushed by the outlet arrives");
    assert_eq!(recorded, 500, "and reaches the recorder's ring");
    assert_eq!(rec, sample);
    assert_eq!(Counters::get(&counters.samples), 500);
    assert_eq!(Counters::get(&counters.record_overruns), 0);
    assert_eq!(
        allocs, 0,
        "the LSL pull loop with recording allocated {allocs} times"
    );
}

#[test]
fn a_full_record_ring_counts_record_overruns_not_window_overruns() {
    let counters = Counters::default();
    let (mut window, _window_out) = SampleRing::new(4, 32);
    let (mut record, _record_out) = SampleRing::new(4, 8);
    let values = vec![1.0f32; 4 * 20];
    let stamps: Vec<f64> = (0..20).map(|k| k as f64).collect();
    hand_on(
        &values,
        &stamps,
        20,
        Instant::now(),
        0.0,
        &mut window,
        Some(&mut record),
        &counters,
    );
    assert_eq!(Counters::get(&counters.samples), 20);
    assert_eq!(Counters::get(&counters.overruns), 0);
    assert_eq!(Counters::get(&counters.record_overruns), 12);
}

/// A broadband inlet (int16, 30 kHz, 64 channels) pulls raw chunks, extracts MUA and
/// hands it on without allocating: the extractor's buffers are sized at connect.
#[test]
fn broadband_pull_loop_allocates_nothing_after_connect() {
    use lsl::Pushable;
    let name = super::common::unique("alloc-broadband");
    let info = lsl::StreamInfo::new(
        &name,
        "Broadband",
        64,
        30_000.0,
        lsl::ChannelFormat::Int16,
        &name,
    )
    .unwrap();
    let outlet = lsl::StreamOutlet::new(&info, 300, 60).unwrap();
    let sel = monkeysee::config::StreamSelector {
        query: Some(format!("name='{name}'")),
        ..Default::default()
    };
    let rig = RigConfig::load(&synthetic_rig_path()).unwrap();
    let spec = MuaSpec {
        channels: 64,
        mua_hz: 1000.0,
        broadband: Some(rig.broadband.clone()),
        max_chunk: 100,
    };
    let mut inlet = MuaInlet::connect(&sel, &spec, 10.0).unwrap();
    assert_eq!(
        inlet.broadband_delay_s().map(|d| (d * 1e4).round()),
        Some(21.0),
        "≈2.1 ms"
    );
    assert!(outlet.wait_for_consumers(5.0));
    // 0.5 s of a 2 kHz tone, amplitude 1000 counts: in band, so the MUA is its
    // rectified mean, 2/π · 1000.
    for k in 0..15_000 {
        let v = (1000.0 * (2.0 * std::f64::consts::PI * 2000.0 * k as f64 / 30_000.0).sin()) as i16;
        outlet.push_sample(&vec![v; 64]).unwrap();
    }
    let (got, out, allocs) = pull_through_ring(&mut inlet, 500);
    assert_eq!(got, 500, "one MUA sample per 30 raw samples");
    let mean = 2000.0 / std::f32::consts::PI;
    assert!(
        out.iter().all(|v| (v - mean).abs() < 0.02 * mean),
        "{out:?}"
    );
    assert_eq!(
        allocs, 0,
        "the broadband pull loop allocated {allocs} times"
    );
}

/// The decode loop on a pool of two threads: after the warm-up, 40 frames of each
/// decoder kind are decoded (every product split between both threads), handed to the
/// display's triple buffer, copied for `--save-inputs`, and their buffers returned,
/// without one allocation on any thread of the pool, and with the images the decoder
/// gives on its own.
#[test]
fn decode_loop_allocates_nothing_after_warm_up() {
    use monkeysee::config::{decoder_config, window_set};
    use monkeysee::daemon::{latest_frame, DecodeStage, InputSaver};
    use monkeysee::decoder::{CpuBackend, Decoder, DecoderKind};
    let dir = tempfile::tempdir().unwrap();
    let rig = super::common::small_rig(dir.path());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for kind in [
        DecoderKind::Spatial,
        DecoderKind::Spatiotemporal,
        DecoderKind::EndToEnd,
        DecoderKind::Baseline,
    ] {
        let cfg = decoder_config(&rig, kind, 8);
        let decoder = Decoder::<CpuBackend>::random(cfg.clone(), 3, &Default::default()).unwrap();
        let reference = Decoder::<CpuBackend>::random(cfg.clone(), 3, &Default::default()).unwrap();
        let counters = Arc::new(Counters::default());
        let (work_tx, work_rx) = bounded::<FeatureFrame>(FRAME_POOL);
        let (free_tx, free_rx) = bounded::<FeatureFrame>(FRAME_POOL);
        let set = window_set(kind);
        let template =
            WindowAssembler::new(AssemblerConfig::from_rig(&rig, set, Mode::Event), None)
                .new_frame();
        for _ in 0..FRAME_POOL {
            free_tx.send(template.clone()).unwrap();
        }
        let (out, mut frames) = latest_frame(rig.image_size, std::thread::current());
        let mut stage = DecodeStage::new(
            decoder,
            work_rx,
            free_tx,
            out,
            counters.clone(),
            std::time::Duration::from_millis(50),
        );
        let saved = dir.path().join(format!("saved-{kind}"));
        let (mut saver, ends) = InputSaver::create(&saved).unwrap();
        saver.open(cfg.n_features(), cfg.image_size).unwrap();
        let stop_saver = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let saver = {
            let stop = stop_saver.clone();
            std::thread::spawn(move || saver.run(&stop))
        };
        stage.save_inputs = Some(ends);
        pool.install(|| stage.warm_up());
        let n = cfg.n_features();
        let mut shown = Vec::new();
        let (checksums, allocs) = super::common::allocations_in_pool(&pool, || {
            let mut sums = [0.0f64; 40];
            for (k, sum) in sums.iter_mut().enumerate() {
                let mut f = free_rx.try_recv().expect("a free frame");
                f.seq = k as u64;
                for (i, v) in f.features.iter_mut().enumerate() {
                    *v = (((i * 7 + k * 13) % 17) as f32 - 8.0) / 4.0;
                }
                work_tx.try_send(f).unwrap();
                assert!(stage.step(), "a frame was waiting");
                let img = frames
                    .take_timeout(std::time::Duration::ZERO)
                    .expect("published");
                assert_eq!(img.seq, k as u64);
                *sum = img.rgb.iter().map(|&v| f64::from(v)).sum();
            }
            sums
        });
        assert_eq!(
            allocs, 0,
            "{kind}: the decode loop allocated {allocs} times after its warm-up"
        );
        assert_eq!(Counters::get(&counters.frames_decoded), 40, "{kind}");
        assert_eq!(Counters::get(&counters.decode_errors), 0, "{kind}");
        stop_saver.store(true, std::sync::atomic::Ordering::Relaxed);
        saver.join().unwrap();
        let csv = std::fs::read_to_string(saved.join("frames.csv")).unwrap();
        assert_eq!(
            csv.lines().count() as u64 + Counters::get(&counters.inputs_unsaved),
            41,
            "{kind}: every frame saved or counted"
        );
        // The loop's images are the decoder's: check two frames against a fresh decoder.
        for k in [0usize, 39] {
            let features: Vec<f32> = (0..n)
                .map(|i| (((i * 7 + k * 13) % 17) as f32 - 8.0) / 4.0)
                .collect();
            let mut img = vec![0.0f32; cfg.image_len()];
            reference.reconstruct(&features, &mut img).unwrap();
            shown.push(img.iter().map(|&v| f64::from(v)).sum::<f64>());
            assert!(
                (shown.last().unwrap() - checksums[k]).abs() < 1e-3,
                "{kind} frame {k}: {} vs {}",
                checksums[k],
                shown.last().unwrap()
            );
        }
    }
}
