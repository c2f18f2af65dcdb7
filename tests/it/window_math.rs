use std::time::Instant;

use monkeysee::config::{RigConfig, WindowSetKind};
use monkeysee::telemetry::Counters;
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

/// Statistics that differ per electrode (the same in every window).
fn stats(rig: &RigConfig, set: WindowSetKind) -> NormStats {
    let n = rig.electrodes.len();
    let per = rig.windows.windows_per_electrode(set);
    let mean: Vec<f32> = (0..n).map(|e| 1.0 + (e % 5) as f32 * 0.3).collect();
    let std: Vec<f32> = (0..n).map(|e| 0.5 + (e % 7) as f32 * 0.1).collect();
    NormStats {
        estimator: monkeysee::norm::ESTIMATOR.into(),
        windows: per,
        mean: mean.repeat(per),
        std: std.repeat(per),
        baseline_mean: mean,
        baseline_std: std,
        presentations: 1000,
        dropped: Vec::new(),
    }
}

fn assembler(rig: &RigConfig, set: WindowSetKind, mode: Mode) -> WindowAssembler {
    let mut cfg = AssemblerConfig::from_rig(rig, set, mode);
    // A prior so heavy that presentations do not move it: the reference can use it.
    cfg.prior_presentations = 1e15;
    WindowAssembler::new(cfg, Some(&stats(rig, set)))
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
    let s = stats(rig, set);
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

/// The statistics move only with presentations: samples between them (blanks,
/// inter-trial intervals) and sliding frames leave them alone; each presentation adds
/// its raw window means, and with no prior they are exactly those presentations' own.
#[test]
fn normalisation_is_updated_by_presentations_only() {
    let rig = RigConfig::load(&synthetic_rig_path()).unwrap();
    let counters = Counters::default();
    let cfg = AssemblerConfig::from_rig(&rig, WindowSetKind::Tw15, Mode::Event);
    let mut asm = WindowAssembler::new(cfg, None);
    let mut frame = asm.new_frame();
    push(&mut asm, 0..2000, &counters, |_, _| {});
    let before = asm.norm_stats();
    assert_eq!(
        before.presentations, 0,
        "samples alone are no presentations"
    );
    assert!(before.mean.iter().all(|&m| m == 0.0));
    // Three presentations, each with a constant offset on every channel.
    let onsets = [2100usize, 2500, 2900];
    let mut frames = 0;
    for (i, &k) in onsets.iter().enumerate() {
        asm.push_onset(
            Onset {
                lsl_time: time(k),
                image: ImageId::new("x"),
            },
            &counters,
        );
        let shift = i as f32 * 2.0;
        push(
            &mut asm,
            2000 + i * 400..2400 + i * 400,
            &counters,
            |_, row| row.iter_mut().for_each(|v| *v += shift),
        );
        while asm.next_frame(&mut frame, &counters) == FrameStatus::Ready {
            frames += 1;
        }
    }
    push(&mut asm, 3200..3400, &counters, |_, row| {
        row.iter_mut().for_each(|v| *v += 4.0)
    });
    while asm.next_frame(&mut frame, &counters) == FrameStatus::Ready {
        frames += 1;
    }
    assert_eq!(frames, 3);
    let s = asm.norm_stats();
    assert_eq!(s.presentations, 3);
    // Electrode 3's window means, directly.
    let (e, el) = (3, &rig.electrodes[3]);
    let w = rig.windows.windows_for(WindowSetKind::Tw15, el.area)[0];
    let raw: Vec<f64> = onsets
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            let lo = k + w.start.0 as usize;
            let hi = k + w.end().0 as usize;
            (lo..hi)
                .map(|j| value(j, el.channel) as f64 + i as f64 * 2.0)
                .sum::<f64>()
                / (hi - lo) as f64
        })
        .collect();
    let mean = raw.iter().sum::<f64>() / 3.0;
    let sd = (raw.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / 3.0).sqrt();
    assert!(
        (s.mean[e] as f64 - mean).abs() < 1e-4,
        "{} vs {mean}",
        s.mean[e]
    );
    assert!((s.std[e] as f64 - sd).abs() < 1e-4, "{} vs {sd}", s.std[e]);
    // The last frame, z-scored with the statistics of the two before it.
    let (m2, sd2) = ((raw[0] + raw[1]) / 2.0, (raw[0] - raw[1]).abs() / 2.0);
    let z = ((raw[2] - m2) / sd2) as f32;
    assert!(
        (frame.features[e] - z).abs() < 1e-3,
        "{} vs {z}",
        frame.features[e]
    );

    // Sliding frames are no presentations.
    let cfg = AssemblerConfig::from_rig(&rig, WindowSetKind::Tw15, Mode::Sliding);
    let mut sliding = WindowAssembler::new(cfg, Some(&s));
    let mut frame = sliding.new_frame();
    push(&mut sliding, 0..1500, &counters, |_, _| {});
    let mut built = 0;
    for k in 1500..1800 {
        push(&mut sliding, k..k + 1, &counters, |_, _| {});
        while sliding.next_frame(&mut frame, &counters) == FrameStatus::Ready {
            built += 1;
        }
    }
    assert!(built > 5);
    assert_eq!(sliding.norm_stats().mean, s.mean);
}
