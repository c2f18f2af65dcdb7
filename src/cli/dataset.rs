//! `monkeysee dataset`: a training dataset from a recorded XDF session.

use std::path::PathBuf;

use clap::Args;

use monkeysee::config::RigConfig;
use monkeysee::dataset::from_xdf::{dataset_from_xdf, XdfDatasetOptions};

use super::write_json;

#[derive(Args)]
#[command(
    after_help = "Cuts -100..+199 ms around every onset marker out of the MUA stream (clock offsets applied as pyxdf does) and writes OUT/responses.npy [trials, 300, channels] float32 as recorded, images.npy, image_ids.txt, trial_image.npy, trial_split.npy (0 train, 1 test), trial_onset.npy (clock-corrected LSL time), channels.csv and dataset.json: the layout `simulate` writes, for `train` and `eval`.\n\nSkipped and reported, never fatal: epochs across a gap or past either end of the stream, epochs with NaN samples, duplicate onsets, ids with no image file.\n\nExamples:\n  monkeysee dataset --rig firmware-config/synthetic.toml --session rec.xdf --images stimuli/ --out data\n  monkeysee dataset --rig my-rig.toml --session sub-01_ses-01.xdf --images things/ --out data \\\n      --marker-query \"name='PsychoPy'\" --onset-regex '^img (?P<id>\\S+) on$'"
)]
pub struct DatasetArgs {
    /// Rig config the session was recorded with (channel count, rate, stream selectors).
    #[arg(long, value_name = "RIG.toml")]
    rig: PathBuf,
    /// The recorded session (LabRecorder, `monkeysee run --record`, `simulate`).
    #[arg(long, value_name = "FILE.xdf")]
    session: PathBuf,
    /// Folder of the stimuli; marker ids resolve to image files by file stem (subfolders searched).
    #[arg(long, value_name = "DIR")]
    images: PathBuf,
    /// Output folder for the dataset (created; an existing dataset is never overwritten).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// XPath predicate picking the MUA stream by its header, as for `run` (default: the rig's [streams.mua]).
    #[arg(long, value_name = "XPATH")]
    mua_query: Option<String>,
    /// XPath predicate picking the marker stream (default: the rig's [streams.markers]).
    #[arg(long, value_name = "XPATH")]
    marker_query: Option<String>,
    /// Onset markers: a regular expression with a named group `id` for the image id
    /// [default: ^\s*stim_on\s+(?P<id>\S+)\s*$].
    #[arg(long, value_name = "RE")]
    onset_regex: Option<String>,
    /// Images shown at least this many times form the test split (as in TVSD); the rest train.
    #[arg(long, value_name = "N", default_value_t = 2)]
    min_repeats: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl DatasetArgs {
    /// The import's options, with the rig loaded.
    fn options(self) -> anyhow::Result<XdfDatasetOptions> {
        Ok(XdfDatasetOptions {
            rig: RigConfig::load(&self.rig)?,
            session: self.session,
            images: self.images,
            out: self.out,
            mua_query: self.mua_query,
            marker_query: self.marker_query,
            onset_regex: self.onset_regex,
            min_repeats: self.min_repeats,
            progress: !self.quiet,
        })
    }
}

/// Writes the dataset, prints what was kept and skipped, and saves that as
/// OUT/import-summary.json.
pub fn run(args: DatasetArgs) -> anyhow::Result<()> {
    let opts = args.options()?;
    let summary = dataset_from_xdf(&opts)?;
    println!("{summary}");
    write_json(&opts.out.join("import-summary.json"), &summary)
}
