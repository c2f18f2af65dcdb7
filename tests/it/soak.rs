//! The soak's one-minute CI version: a minute of wall time at 10× (ten minutes of
//! recording) with a fault every 5 s on average. The long run is
//! `monkeysee bench --soak --speed 10 --minutes 48` (see the README).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use monkeysee::daemon::ModelSource;
use monkeysee::decoder::DecoderKind;
use monkeysee::soak::{self, SoakOptions};

use super::common::small_rig;

#[test]
fn a_minute_at_ten_times_loses_no_sample_and_no_frame_unexplained() {
    let dir = tempfile::tempdir().unwrap();
    let r = soak::run(SoakOptions {
        rig: small_rig(dir.path()),
        model: ModelSource::Random {
            kind: DecoderKind::EndToEnd,
            width: 4,
            seed: 7,
        },
        speed: 10.0,
        seconds: 60.0,
        fault_every_s: 5.0,
        seed: 3,
        sample_every_s: 10.0,
        decode_threads: 1,
        progress: false,
        stop: Arc::new(AtomicBool::new(false)),
    })
    .unwrap();
    soak::write_report(&r, dir.path()).unwrap();
    let faults = &r.faults;
    let injected = faults.nan_bursts
        + faults.short_pauses
        + faults.long_pauses
        + faults.marker_storms
        + faults.clock_jumps;
    assert!(injected >= 3, "{faults:?}");
    assert!(r.stream_s > 500.0, "{r:?}");
    assert_eq!(r.samples_lost, 0, "{:?}", r.run.counters);
    assert_eq!(r.samples_received, r.samples_sent);
    assert_eq!(r.unexplained_frame_losses, 0, "{:?}", r.run.counters);
    assert!(r.frames_shown > 1000, "{:?}", r.run.counters);
    assert_eq!(
        r.run.counter("bad_samples") > 0,
        faults.nan_bursts > 0,
        "{:?}",
        r.run.counters
    );
    assert!(dir.path().join("soak.json").exists() && dir.path().join("rss.csv").exists());
}
