use monkeysee::daemon::Output;
use monkeysee::demo::{self, DemoOptions};

/// `monkeysee demo --headless` end to end with the built-in rig and model: a simulated
/// session replayed over LSL, one decoded frame per image, frames beside the true
/// stimuli, a contact sheet and the latency summary.
#[test]
fn demo_runs_headless_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let mut opts = DemoOptions::new(Output::Headless(out.clone()));
    opts.images = 4;
    opts.seed = 11;
    opts.decode_threads = 1;
    opts.status = false;
    let summary = demo::run(opts).unwrap();
    assert_eq!(summary.frames_shown, 4, "{:?}", summary.counters);
    assert_eq!(summary.images.len(), 4);
    assert!(summary.images.iter().all(|id| id.starts_with("leaves-")));
    assert!(summary.stage("end-to-end").is_some_and(|s| s.count == 4));
    assert!(out.join("contact_sheet.png").exists());
    let frames: Vec<_> = std::fs::read_dir(out.join("frames")).unwrap().collect();
    assert_eq!(frames.len(), 4);
    let frame = image::open(frames[0].as_ref().unwrap().path()).unwrap();
    assert_eq!(
        frame.width(),
        2 * 96 + 4,
        "reconstruction beside the true stimulus"
    );
}
