//! `run --save-inputs DIR`: every decoded frame's inputs and reconstruction, for offline
//! analysis (`inputs.npy` float32 `[frames, features]`, `reconstructions.npy` float32
//! `[frames, 3, H, W]`, `frames.csv`: seq, onset LSL time, image id).
//!
//! The decode thread copies each frame into a buffer of a fixed pool ([`SaveEnds::offer`],
//! no allocation once [`SaveEnds::reserve`] has sized them) and the `save-inputs` thread
//! writes it: file I/O never sits on the decode path. A frame that finds no free buffer
//! (the disk is behind) is counted (`inputs_unsaved`); a write error stops the saving,
//! not the run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};

use crate::dataset::writer::NpyRows;
use crate::telemetry::Counters;
use crate::window::{FeatureFrame, ImageId};

/// Frames that may wait for the disk.
const QUEUE: usize = 32;

/// One decoded frame to save.
pub struct SavedFrame {
    seq: u64,
    onset_lsl: f64,
    image: Option<ImageId>,
    features: Vec<f32>,
    rgb: Vec<f32>,
}

/// The decode thread's end.
pub struct SaveEnds {
    tx: Sender<SavedFrame>,
    free: Receiver<SavedFrame>,
    give_back: Sender<SavedFrame>,
}

impl SaveEnds {
    /// Sizes every pooled buffer for frames of `features` values and `image_len` pixels
    /// values (start-up).
    pub fn reserve(&self, features: usize, image_len: usize) {
        let mut all = Vec::with_capacity(QUEUE);
        while let Ok(mut f) = self.free.try_recv() {
            f.features.reserve(features);
            f.rgb.reserve(image_len);
            all.push(f);
        }
        for f in all {
            let _ = self.give_back.send(f);
        }
    }

    /// Queues a copy of `frame` and its reconstruction for the saver, without waiting.
    pub fn offer(&self, frame: &FeatureFrame, rgb: &[f32], counters: &Counters) {
        let Ok(mut f) = self.free.try_recv() else {
            Counters::inc(&counters.inputs_unsaved);
            return;
        };
        f.seq = frame.seq;
        f.onset_lsl = frame.onset_lsl;
        f.image = frame.image;
        f.features.clear();
        f.features.extend_from_slice(&frame.features);
        f.rgb.clear();
        f.rgb.extend_from_slice(rgb);
        if self.tx.try_send(f).is_err() {
            Counters::inc(&counters.inputs_unsaved);
        }
    }
}

/// The saver thread's state: the folder, and its files once the first frame arrived.
pub struct InputSaver {
    dir: PathBuf,
    files: Option<Files>,
    frames: Receiver<SavedFrame>,
    free: Sender<SavedFrame>,
}

struct Files {
    inputs: NpyRows,
    recons: NpyRows,
    csv: std::io::BufWriter<std::fs::File>,
}

impl InputSaver {
    /// Creates `dir` and checks it takes files (at start-up, so a bad folder fails
    /// before anything connects); the decode thread's end beside it.
    pub fn create(dir: &Path) -> anyhow::Result<(InputSaver, SaveEnds)> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let csv = dir.join("frames.csv");
        std::fs::File::create(&csv).with_context(|| format!("creating {}", csv.display()))?;
        let (tx, frames) = bounded(QUEUE);
        let (give_back, free_rx) = bounded(QUEUE);
        for _ in 0..QUEUE {
            let _ = give_back.send(SavedFrame {
                seq: 0,
                onset_lsl: 0.0,
                image: None,
                features: Vec::new(),
                rgb: Vec::new(),
            });
        }
        let saver = InputSaver {
            dir: dir.to_path_buf(),
            files: None,
            frames,
            free: give_back.clone(),
        };
        let ends = SaveEnds {
            tx,
            free: free_rx,
            give_back,
        };
        Ok((saver, ends))
    }

    /// Creates the files for frames of `features` values and `size`-pixel images (once
    /// the decoder is built and the shapes are known).
    pub fn open(&mut self, features: usize, size: usize) -> anyhow::Result<()> {
        self.files = Some(Files::create(&self.dir, features, size)?);
        Ok(())
    }

    /// The `save-inputs` thread: writes every frame queued until `stop` and the queue is
    /// empty, then closes the files.
    pub fn run(mut self, stop: &AtomicBool) {
        let mut failed = false;
        loop {
            // Polled: a receiver blocked in the channel would make the decode thread's
            // `try_send` take the channel's lock to wake it.
            match self.frames.try_recv() {
                Ok(f) => {
                    if !failed {
                        if let Err(e) = self.write(&f) {
                            eprintln!("monkeysee: saving the decoder inputs stopped: {e:#}");
                            failed = true;
                        }
                    }
                    let _ = self.free.try_send(f);
                }
                Err(TryRecvError::Empty) if stop.load(Ordering::Relaxed) => break,
                Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(10)),
                Err(TryRecvError::Disconnected) => break,
            }
        }
        if let (Some(files), false) = (self.files.take(), failed) {
            if let Err(e) = files.finish() {
                eprintln!("monkeysee: saving the decoder inputs failed: {e:#}");
            }
        }
    }

    fn write(&mut self, f: &SavedFrame) -> anyhow::Result<()> {
        let Some(files) = self.files.as_mut() else {
            anyhow::bail!("the files were not opened");
        };
        files.inputs.push(&f.features)?;
        files.recons.push(&f.rgb)?;
        writeln!(
            files.csv,
            "{},{:.6},{}",
            f.seq,
            f.onset_lsl,
            f.image.as_ref().map_or("", |i| i.as_str())
        )?;
        Ok(())
    }
}

impl Files {
    fn create(dir: &Path, features: usize, size: usize) -> anyhow::Result<Files> {
        let csv = dir.join("frames.csv");
        let mut csv = std::io::BufWriter::new(
            std::fs::File::create(&csv).with_context(|| format!("creating {}", csv.display()))?,
        );
        writeln!(csv, "seq,onset_lsl,image")?;
        Ok(Files {
            inputs: NpyRows::create(&dir.join("inputs.npy"), &[features])?,
            recons: NpyRows::create(&dir.join("reconstructions.npy"), &[3, size, size])?,
            csv,
        })
    }

    fn finish(mut self) -> anyhow::Result<()> {
        self.csv.flush()?;
        self.inputs.finish()?;
        self.recons.finish()
    }
}
