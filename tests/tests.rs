//! monkeysee integration tests: one binary, one module per area of behaviour.

mod it {
    /// AlexNet feature correlation against torch's layers, r and MSE; refused AlexNet files.
    mod alexnet;
    /// `monkeysee bench`: the report of a short run, and of a short run under load.
    mod bench;
    /// Broadband → MUA online against scipy's offline filtering.
    mod broadband;
    /// The command line: bad flags are refused with a message naming them, never a panic.
    mod cli;
    /// Shared helpers: test rigs, LSL outlets, the counting allocator.
    pub mod common;
    /// Rig configs: the shipped ones load, bad ones give located errors.
    mod config;
    /// `monkeysee learning-curve`: a killed curve resumed, its points and files.
    mod curve;
    /// The daemon end to end over real liblsl on loopback.
    mod daemon;
    /// Datasets: train/serve feature parity, rig mismatches, damaged files.
    mod dataset;
    /// `monkeysee demo --headless`: simulate, replay, decode with the shipped model.
    mod demo;
    /// Headless frames, contact sheet, and a real window under Xvfb.
    mod display;
    /// Faults injected over real liblsl: pauses, NaN bursts, storms, clock jumps, rates.
    mod faults;
    /// The file readers (XDF, rig config, decoder.json, datasets, normalization.json) fuzzed: no panic, hang or huge allocation.
    mod fuzz;
    /// The ingest, window and decode loops allocate nothing after start-up.
    mod hot_loop;
    /// A lab's path: datasets from recorded XDF sessions, online vs offline inputs.
    mod lab_path;
    /// The library's top-level modules import each other without a cycle.
    mod layers;
    /// Model loading refuses models that do not fit the rig.
    mod model;
    /// Decoded frames, their info and events as LSL streams, received by pylsl; no frame
    /// lost with a consumer connected.
    mod outlet;
    /// `--realtime` granted and refused, `[realtime]` errors, and `--trace`.
    mod realtime;
    /// Replaying XDF sessions as live LSL streams, and `run --record`.
    mod replay;
    /// `eval --report`: every analysis of the paper on tiny models.
    mod report;
    /// The synthetic cortex: session, dataset and truth agree; responses look cortical.
    mod simulate;
    /// The soak, one minute at 10×: no sample lost, no frame lost unexplained.
    mod soak;
    /// Training: the loss falls, models round-trip, resume, RF-layer gradients, rig mismatch.
    mod train;
    /// TVSD files: trials reordered exactly, ALLMAT/tb, image paths, normMUA, damaged files (h5py fixtures).
    mod tvsd;
    /// The VGG19 perceptual loss against torch's, and refused VGG files.
    mod vgg;
    /// Window means and z-scores against a direct reference computation.
    mod window_math;
    /// XDF sessions: the reference files as pyxdf reads them, round trips, damaged files.
    mod xdf;
}
