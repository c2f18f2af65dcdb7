use std::time::Instant;

use monkeysee::config::{RigConfig, WindowSetKind};
use monkeysee::telemetry::Counters;
use monkeysee::units::Millis;
use monkeysee::window::{
    AssemblerConfig, FeatureFrame, FrameStatus, ImageId, Mode, NormStats, Onset, SampleMeta,
    SkipReason, WindowAssembler,
};

use super::common::synthetic_rig_path;

const T0: f64 = 1000.0;

fn value(k: usize, c: usize) -> f32 {
    // Deterministic, channel- and time-dependent, not smooth.
    let x = ((k * 7919 + c * 104_729) % 1000) as f32 / 1000.0;
    x * 3.0 + (c % 17) as f32 * 0.5
}

fn time(k: usize) -> f64 {
    T0 + k as f64 / 1000.0
}

fn stats(rig: &RigConfig) -> NormStats {
    let n = rig.electrodes.len();
    NormStats {
        mean: (0..n).map(|e| 1.0 + (e % 5) as f32 * 0.3).collect(),
        std: (0..n).map(|e| 0.5 + (e % 7) as f32 * 0.1).collect(),
    }
}

fn assembler(rig: &RigConfig, set: WindowSetKind, mode: Mode) -> WindowAssembler {
    let mut cfg = AssemblerConfig::from_rig(rig, set, mode);
    // Freeze the running normalisation so the reference can use the given statistics.
    cfg.norm_time_constant = Millis(1e15);
    WindowAssembler::new(cfg, Some(&stats(rig)))
}

fn push(
    asm: &mut WindowAssembler,
    ks: std::ops::Range<usize>,
    counters: &Counters,
    edit: impl Fn(usize, &mut Vec<f32>),
) {
    let ch = asm.config().channel_count;
    let mut row = vec![0.0f32; ch];
    for k in ks {
        for (c, v) in row.iter_mut().enumerate() {
            *v = value(k, c);
        }
        edit(k, &mut row);
        asm.push_sample(
            &row,
            SampleMeta {
                lsl_time: time(k),
                arrival: Instant::now(),
                transport_delay: 0.0,
            },
            counters,
        );
    }
}

/// Direct computation: mean over samples with onset+start <= t < onset+end, z-scored.
fn reference(rig: &RigConfig, set: WindowSetKind, onset: f64) -> (Vec<f32>, Vec<f32>) {
    let s = stats(rig);
    let n = rig.electrodes.len();
    let kw = rig.windows.windows_per_electrode(set);
    let mut feats = vec![0.0f32; kw * n];
    let mean_over = |c: usize, a: f64, b: f64| {
        let (mut sum, mut cnt) = (0.0f64, 0);
        for k in 0..5000 {
            let t = time(k);
            if t >= a - 1e-7 && t < b - 1e-7 {
                sum += value(k, c) as f64;
                cnt += 1;
            }
        }
        sum / cnt as f64
    };
    for (e, el) in rig.electrodes.iter().enumerate() {
        for (k, w) in rig.windows.windows_for(set, el.area).iter().enumerate() {
            let m = mean_over(
                el.channel,
                onset + w.start.seconds(),
                onset + w.end().seconds(),
            );
            feats[k * n + e] = ((m - s.mean[e] as f64) / s.std[e] as f64) as f32;
        }
    }
    let b = rig.windows.baseline;
    let base = rig
        .electrodes
        .iter()
        .enumerate()
        .map(|(e, el)| {
            let m = mean_over(
                el.channel,
                onset + b.start.seconds(),
                onset + b.end().seconds(),
            );
            ((m - s.mean[e] as f64) / s.std[e] as f64) as f32
        })
        .collect();
    (feats, base)
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-3 * (1.0 + y.abs()),
            "{what}[{i}]: got {x}, reference {y}"
        );
    }
}

fn event_frame_matches_reference(set: WindowSetKind) {
    let rig = RigConfig::load(&synthetic_rig_path()).unwrap();
    let counters = Counters::default();
    let mut asm = assembler(&rig, set, Mode::Event);
    let mut frame = asm.new_frame();
    // Onset between two samples, 300.4 ms into the stream.
    let onset = time(300) + 0.0004;
    push(&mut asm, 0..310, &counters, |_, _| {});
    asm.push_onset(
        Onset {
            lsl_time: onset,
            image: ImageId::new("cat_01"),
        },
        &counters,
    );
    assert_eq!(asm.next_frame(&mut frame, &counters), FrameStatus::Pending);
    push(&mut asm, 310..800, &counters, |_, _| {});
    assert_eq!(asm.next_frame(&mut frame, &counters), FrameStatus::Ready);
    let (feats, base) = reference(&rig, set, onset);
    assert_close(&frame.features, &feats, "features");
    assert_close(&frame.baseline, &base, "baseline");
    assert_eq!(frame.image.unwrap().as_str(), "cat_01");
    assert_eq!(
        frame.features.len(),
        rig.windows.windows_per_electrode(set) * rig.electrodes.len()
    );
}

#[test]
fn tw15_event_frame_matches_direct_computation() {
    event_frame_matches_reference(WindowSetKind::Tw15);
}

#[test]
fn tw3_event_frame_matches_direct_computation() {
    event_frame_matches_reference(WindowSetKind::Tw3);
}

fn sliding_frames_match_reference(set: WindowSetKind) {
    let rig = RigConfig::load(&synthetic_rig_path()).unwrap();
    let counters = Counters::default();
    let mut asm = assembler(&rig, set, Mode::Sliding);
    let mut frame = asm.new_frame();
    let span = rig.windows.span_end(set).seconds();
    let mut frames = Vec::new();
    for k in 0..700 {
        push(&mut asm, k..k + 1, &counters, |_, _| {});
        loop {
            match asm.next_frame(&mut frame, &counters) {
                FrameStatus::Ready => frames.push((k, frame.clone())),
                FrameStatus::Pending => break,
                FrameStatus::Skipped(_) => {}
            }
        }
    }
    // Frames come every hop (10 ms) once the history covers baseline + windows.
    assert!(frames.len() >= 35, "got {} sliding frames", frames.len());
    for w in frames.windows(2) {
        assert_eq!(w[1].0 - w[0].0, 10, "hop");
    }
    for (k, f) in frames.iter().step_by(7) {
        // Virtual onset: the newest sample is the last one inside the latest window.
        let onset = time(*k) + 0.0005 - span;
        assert!((f.onset_lsl - onset).abs() < 1e-9);
        let (feats, mut base) = reference(&rig, set, onset);
        if onset - 0.1 < time(0) {
            // The baseline precedes the first sample: written as 0, the normalised mean.
            base.iter_mut().for_each(|b| *b = 0.0);
        }
        assert_close(&f.features, &feats, "features");
        assert_close(&f.baseline, &base, "baseline");
        assert!(f.image.is_none());
    }
}

#[test]
fn tw15_sliding_frames_match_direct_computation() {
    sliding_frames_match_reference(WindowSetKind::Tw15);
}

#[test]
fn tw3_sliding_frames_match_direct_computation() {
    sliding_frames_match_reference(WindowSetKind::Tw3);
}

#[test]
fn window_closes_when_its_last_sample_arrives() {
    let rig = RigConfig::load(&synthetic_rig_path()).unwrap();
    let counters = Counters::default();
    let mut asm = assembler(&rig, WindowSetKind::Tw15, Mode::Event);
    let mut frame = asm.new_frame();
    push(&mut asm, 0..200, &counters, |_, _| {});
    asm.push_onset(
        Onset {
            lsl_time: time(150),
            image: ImageId::new("x"),
        },
        &counters,
    );
    // IT's TW-15 window is [66, 199): its last sample is at onset + 198 ms.
    push(&mut asm, 200..348, &counters, |_, _| {});
    assert_eq!(asm.next_frame(&mut frame, &counters), FrameStatus::Pending);
    push(&mut asm, 348..349, &counters, |_, _| {});
    assert_eq!(asm.next_frame(&mut frame, &counters), FrameStatus::Ready);
}

#[test]
fn nan_samples_are_counted_and_frame_is_skipped() {
    let rig = RigConfig::load(&synthetic_rig_path()).unwrap();
    let counters = Counters::default();
    let mut asm = assembler(&rig, WindowSetKind::Tw15, Mode::Event);
    let mut frame: FeatureFrame = asm.new_frame();
    let c = rig.electrodes[10].channel;
    push(&mut asm, 0..600, &counters, |k, row| {
        if k == 350 {
            row[c] = f32::NAN;
        }
    });
    asm.push_onset(
        Onset {
            lsl_time: time(300),
            image: ImageId::new("a"),
        },
        &counters,
    );
    asm.push_onset(
        Onset {
            lsl_time: time(380),
            image: ImageId::new("b"),
        },
        &counters,
    );
    push(&mut asm, 600..700, &counters, |_, _| {});
    assert_eq!(
        asm.next_frame(&mut frame, &counters),
        FrameStatus::Skipped(SkipReason::BadSamples)
    );
    assert_eq!(asm.next_frame(&mut frame, &counters), FrameStatus::Ready);
    assert_eq!(frame.image.unwrap().as_str(), "b");
    assert_eq!(Counters::get(&counters.frames_skipped_bad), 1);
    // The NaN did not poison the running statistics.
    assert!(asm.norm_stats().mean.iter().all(|m| m.is_finite()));
}

#[test]
fn frames_across_a_gap_are_skipped_and_counted() {
    let rig = RigConfig::load(&synthetic_rig_path()).unwrap();
    let counters = Counters::default();
    let mut asm = assembler(&rig, WindowSetKind::Tw15, Mode::Event);
    let mut frame = asm.new_frame();
    push(&mut asm, 0..400, &counters, |_, _| {});
    // 60 ms of samples never arrive.
    push(&mut asm, 460..700, &counters, |_, _| {});
    assert_eq!(Counters::get(&counters.gaps), 1);
    asm.push_onset(
        Onset {
            lsl_time: time(350),
            image: ImageId::new("a"),
        },
        &counters,
    );
    push(&mut asm, 700..701, &counters, |_, _| {});
    assert_eq!(
        asm.next_frame(&mut frame, &counters),
        FrameStatus::Skipped(SkipReason::Gap)
    );
    assert_eq!(Counters::get(&counters.frames_skipped_gap), 1);
}

#[test]
fn onsets_older_than_the_history_are_skipped_as_late() {
    let rig = RigConfig::load(&synthetic_rig_path()).unwrap();
    let counters = Counters::default();
    let mut asm = assembler(&rig, WindowSetKind::Tw15, Mode::Event);
    let mut frame = asm.new_frame();
    push(&mut asm, 0..3000, &counters, |_, _| {});
    asm.push_onset(
        Onset {
            lsl_time: time(100),
            image: ImageId::new("old"),
        },
        &counters,
    );
    assert_eq!(
        asm.next_frame(&mut frame, &counters),
        FrameStatus::Skipped(SkipReason::Late)
    );
    assert_eq!(Counters::get(&counters.frames_skipped_late), 1);
}

#[test]
fn running_normalisation_starts_from_the_data_without_statistics() {
    let rig = RigConfig::load(&synthetic_rig_path()).unwrap();
    let counters = Counters::default();
    let mut asm = WindowAssembler::new(
        AssemblerConfig::from_rig(&rig, WindowSetKind::Tw15, Mode::Event),
        None,
    );
    push(&mut asm, 0..2000, &counters, |_, _| {});
    let s = asm.norm_stats();
    let c = rig.electrodes[3].channel;
    let mean: f64 = (0..2000).map(|k| value(k, c) as f64).sum::<f64>() / 2000.0;
    assert!(
        (s.mean[3] as f64 - mean).abs() < 0.05,
        "running mean {} vs {}",
        s.mean[3],
        mean
    );
    assert!(s.std[3] > 0.5 && s.std[3] < 1.2, "running std {}", s.std[3]);
}
