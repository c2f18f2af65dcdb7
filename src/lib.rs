//! monkeysee: real-time image reconstruction from macaque multi-unit activity.
//!
//! The library is the daemon's parts, usable on their own:
//! [`config`] reads and validates a rig's firmware config, [`ingest`] pulls MUA
//! and markers from Lab Streaming Layer into a lock-free ring, [`window`] cuts the
//! per-area latency windows into feature frames, [`decoder`] turns a frame into an
//! image with a Burn U-Net, [`display`] shows or writes the images, and
//! [`telemetry`] measures every stage with HDR histograms. [`replay`] republishes a
//! recorded XDF session as live LSL streams; [`xdf`] reads and writes sessions.
//! [`lsl`] is the one place liblsl is called (every `unsafe` LSL call and handle).

pub mod config;
pub mod daemon;
pub mod dataset;
pub mod decoder;
pub mod demo;
pub mod display;
pub mod eval;
pub mod ingest;
pub mod lsl;
pub mod norm;
pub mod plot;
pub mod record;
pub mod replay;
pub mod rf;
pub mod sim;
pub mod telemetry;
pub mod train;
pub mod tvsd;
pub mod units;
pub mod window;
pub mod xdf;
