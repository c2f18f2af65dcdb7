//! `run --save-inputs DIR`: the decode thread writes every decoded frame's inputs and
//! reconstruction here, for offline analysis. This is file I/O on the decode thread,
//! after the frame has been reconstructed; a failure stops the saving, not the run.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::dataset::writer::NpyRows;
use crate::window::FeatureFrame;

/// `run --save-inputs DIR`: every decoded frame's inputs and reconstruction, for
/// offline analysis (`inputs.npy` float32 `[frames, features]`, `reconstructions.npy`
/// float32 `[frames, 3, H, W]`, `frames.csv`: seq, onset LSL time, image id).
pub(super) struct InputSaver {
    inputs: NpyRows,
    recons: NpyRows,
    csv: std::io::BufWriter<std::fs::File>,
}

impl InputSaver {
    pub(super) fn create(dir: &Path, features: usize, size: usize) -> anyhow::Result<InputSaver> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let csv = dir.join("frames.csv");
        let mut csv = std::io::BufWriter::new(
            std::fs::File::create(&csv).with_context(|| format!("creating {}", csv.display()))?,
        );
        writeln!(csv, "seq,onset_lsl,image")?;
        Ok(InputSaver {
            inputs: NpyRows::create(&dir.join("inputs.npy"), &[features])?,
            recons: NpyRows::create(&dir.join("reconstructions.npy"), &[3, size, size])?,
            csv,
        })
    }

    pub(super) fn push(&mut self, frame: &FeatureFrame, rgb: &[f32]) -> anyhow::Result<()> {
        self.inputs.push(&frame.features)?;
        self.recons.push(rgb)?;
        writeln!(
            self.csv,
            "{},{:.6},{}",
            frame.seq,
            frame.onset_lsl,
            frame.image.as_ref().map_or("", |i| i.as_str())
        )?;
        Ok(())
    }

    pub(super) fn finish(mut self) -> anyhow::Result<()> {
        self.csv.flush()?;
        self.inputs.finish()?;
        self.recons.finish()
    }
}
