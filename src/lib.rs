//! monkeysee: real-time image reconstruction from macaque multi-unit activity.
//!
//! The library is the daemon's parts, usable on their own. The modules below are
//! listed in the order the data flows through them.
//!
//! **The rig.** [`config`] reads and validates a rig's firmware config (arrays,
//! electrodes, streams, latency windows, budget); [`units`] holds its typed quantities;
//! [`rf`] the receptive-field tables.
//!
//! **The live loop** (`monkeysee run`; [`daemon`] owns its threads):
//! 1. [`ingest`] pulls MUA and markers from Lab Streaming Layer into a lock-free ring
//!    (through [`lsl`], which holds every liblsl call and the headers of the streams
//!    monkeysee publishes);
//! 2. [`window`] cuts each area's latency windows into a feature frame, normalised by
//!    [`norm`];
//! 3. [`decoder`] turns a frame into an image (a Burn U-Net behind an RF-map input);
//! 4. [`display`] shows it or writes it; [`telemetry`] measures every stage with HDR
//!    histograms and counts every fault; [`record`] writes what came in to XDF.
//!
//! [`realtime`] locks memory and raises the loop's threads to real-time priorities
//! (`run --realtime`); [`trace`] writes every frame's stages as a Chrome trace
//! (`run --trace`).
//!
//! **Sessions.** [`xdf`] reads and writes XDF files; [`replay`] republishes one as live
//! LSL streams; [`sim`] simulates a session from a synthetic cortex; [`soak`] streams
//! hours of one into the daemon with faults injected at random.
//!
//! **Offline.** [`dataset`] turns a session (ours, a lab's XDF, or TVSD via `tvsd`)
//! into training trials; `train` fits a decoder; `eval` scores it beside a linear
//! read-out; `learning_curve` does both on growing numbers of training images; [`plot`]
//! draws the figures; [`demo`] runs the whole loop on the shipped model.
//!
//! **Features.** `offline` (default) adds `train`, `eval`, `tvsd` and the `.pth` readers
//! (`alexnet`, `pth`), with Burn's autodiff and the HDF5 C library; `daemon` (default)
//! builds the `monkeysee` binary. A rig machine that only decodes builds
//! `cargo build --release --no-default-features --features daemon`.

// The rig.
pub mod config;
pub mod rf;
pub mod units;

// The live loop, in data order (one item per group, so rustfmt keeps the order).
pub mod lsl;

pub mod ingest;

pub mod window;

pub mod norm;

pub mod decoder;

pub mod daemon;

pub mod display;

pub mod telemetry;

pub mod record;

pub mod realtime;

pub mod trace;

// Sessions.
pub mod bench;
pub mod replay;
pub mod sim;
pub mod soak;
pub mod xdf;

// Offline.
#[cfg(feature = "offline")]
pub mod alexnet;
pub mod dataset;
pub mod demo;
#[cfg(feature = "offline")]
pub mod eval;
#[cfg(feature = "offline")]
pub mod learning_curve;
pub mod plot;
#[cfg(feature = "offline")]
pub mod pth;
#[cfg(feature = "offline")]
pub mod train;
#[cfg(feature = "offline")]
pub mod tvsd;
