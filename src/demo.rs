//! `monkeysee demo`: the whole loop on one machine with nothing to prepare.
//!
//! It simulates a short session of the synthetic monkey the shipped model was trained
//! on (new images, the same animal), replays it over LSL on loopback at real time,
//! and runs the daemon on it with the shipped end-to-end decoder (with its linear
//! pathway): reconstructions beside the true stimuli in a window, or PNG frames and a
//! contact sheet without a display, and the latency summary at the end.
//!
//! The synthetic rig (`firmware-config/synthetic.toml` + its RF table) and the demo
//! model (`models/demo-e2e`, rebuilt by `tools/train-demo-model`) are built into the
//! binary, so the demo runs from any folder.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;

use crate::config::RigConfig;
use crate::daemon::{self, ModelSource, Output, RunOptions, RunSummary};
use crate::replay::{self, ReplayOptions};
use crate::sim::{self, SimOptions};

const RIG_TOML: &str = include_str!("../firmware-config/synthetic.toml");
const RIG_RF: &str = include_str!("../firmware-config/synthetic-rf.csv");
const MODEL_CONFIG: &str = include_str!("../models/demo-e2e/decoder.json");
const MODEL_WEIGHTS: &[u8] = include_bytes!("../models/demo-e2e/weights.mpk");
const MODEL_NORMALIZATION: &str = include_str!("../models/demo-e2e/normalization.json");

pub use crate::sim::DEMO_ANIMAL_SEED;

pub struct DemoOptions {
    /// A model folder to use instead of the built-in one.
    pub model: Option<PathBuf>,
    pub output: Output,
    /// Images in the simulated session (4 per trial).
    pub images: usize,
    /// Session seed; other seeds show other images (training used seed 1).
    pub seed: u64,
    pub decode_threads: usize,
    /// Overrides the rig's `[realtime]` mode (`--realtime`).
    pub realtime: Option<crate::realtime::RealtimeMode>,
    /// `--trace FILE`.
    pub trace: Option<PathBuf>,
    pub status: bool,
    pub stop: Arc<AtomicBool>,
}

impl DemoOptions {
    pub fn new(output: Output) -> DemoOptions {
        DemoOptions {
            model: None,
            output,
            images: 16,
            seed: 7,
            decode_threads: 0,
            realtime: None,
            trace: None,
            status: true,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Writes the built-in rig and model into `dir`; returns the rig path and model folder.
pub fn unpack(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let model = dir.join("demo-e2e");
    std::fs::create_dir_all(&model).with_context(|| format!("creating {}", model.display()))?;
    let rig = dir.join("synthetic.toml");
    std::fs::write(&rig, RIG_TOML)?;
    std::fs::write(dir.join("synthetic-rf.csv"), RIG_RF)?;
    std::fs::write(model.join("decoder.json"), MODEL_CONFIG)?;
    std::fs::write(model.join("weights.mpk"), MODEL_WEIGHTS)?;
    std::fs::write(model.join("normalization.json"), MODEL_NORMALIZATION)?;
    Ok((rig, model))
}

/// Runs the demo; returns the daemon's summary.
pub fn run(opts: DemoOptions) -> anyhow::Result<RunSummary> {
    let work = tempfile::Builder::new()
        .prefix("monkeysee-demo-")
        .tempdir()
        .context("creating a temporary folder")?;
    let (rig_path, builtin_model) = unpack(work.path())?;
    let mut rig = RigConfig::load(&rig_path)?;
    // Stream ids of this run only, so other demos or rigs on the network are not picked up.
    let tag = format!("monkeysee-demo-{}-{}", std::process::id(), opts.seed);
    rig.mua.source_id = Some(format!("{tag}-mua"));
    rig.markers.source_id = Some(format!("{tag}-markers"));

    if let Some(mode) = opts.realtime {
        rig.realtime.mode = mode;
    }
    let session = work.path().join("session");
    if opts.status {
        eprintln!(
            "monkeysee demo: simulating {} images of the synthetic monkey (animal seed {DEMO_ANIMAL_SEED}, session seed {})",
            opts.images, opts.seed
        );
    }
    let summary = sim::simulate(&SimOptions::live_session(
        rig.clone(),
        opts.images,
        opts.seed,
        session.clone(),
    )?)?;

    let mut replay_opts = ReplayOptions::new(session.join("session.xdf"));
    replay_opts.wait_for_consumer = Some(60.0);
    // Let the daemon's inlets settle before the first onset.
    replay_opts.start_delay = 0.5;
    let replay = replay::spawn(replay_opts).context("starting the replay thread")?;

    let model = opts.model.clone().unwrap_or(builtin_model);
    let outlet_side = rig.image_size;
    let result = daemon::run(RunOptions {
        frames: Some(summary.trials as u64),
        seconds: Some(summary.simulated_s + 30.0),
        stimuli_dir: Some(session.join("images")),
        decode_threads: opts.decode_threads,
        outlet: Some(outlet_side),
        trace: opts.trace,
        status: opts.status,
        stop: opts.stop,
        ..RunOptions::new(rig, ModelSource::Dir(model), opts.output)
    });
    replay.stop();
    let replayed = replay.join();
    let summary = result?;
    replayed.context("replaying the simulated session")?;
    Ok(summary)
}
