//! `monkeysee import-tvsd`: training datasets from the published TVSD files.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use monkeysee::config::RigConfig;
use monkeysee::dataset::tvsd_import::{import_tvsd, TvsdImportOptions};

use super::write_json;

#[derive(Args)]
#[command(
    after_help = "Writes OUT/trials/ from THINGS_MUA_trials.mat: every trial's -100..+199 ms MUA in electrode order (the mapping applied), TVSD's split (test images = test split), the recording day as each trial's session (trial_session.npy; statistics are per day). The file (~58 GB) is read a block of trials at a time.\n\nWrites OUT/normmua/ from THINGS_normMUA.mat: TVSD's time-averaged, normalised per-image responses, for the TW-15 decoders (spatial, end-to-end, baseline). With it both datasets get electrodes.csv (SNR, reliability, latency, oracle per electrode) for `train --min-snr`.\n\nAll files are MATLAB v7.3 (HDF5, read with the HDF5 C library); the mapping file may be MAT v5.\n\nExample:\n  monkeysee import-tvsd --rig firmware-config/monkey-n.toml --trials THINGS_MUA_trials.mat \\\n      --mapping _logs/1024chns_mapping_20220105.mat --image-list _logs/things_imgs.mat \\\n      --norm-mua THINGS_normMUA.mat --images THINGS/object_images --out tvsd-N"
)]
pub struct ImportTvsdArgs {
    /// Rig config of the monkey (firmware-config/monkey-n.toml or monkey-f.toml): 1024 channels at 1 kHz.
    #[arg(long, value_name = "RIG.toml")]
    rig: PathBuf,
    /// THINGS_MUA_trials.mat (ALLMUA, ALLMAT[, tb]).
    #[arg(long, value_name = "FILE.mat", requires = "mapping")]
    trials: Option<PathBuf>,
    /// The channel mapping (1024chns_mapping_20220105.mat, variable `mapping`, 1-based).
    #[arg(long, value_name = "FILE.mat")]
    mapping: Option<PathBuf>,
    /// things_imgs.mat: the THINGS path of every train and test image.
    #[arg(long, value_name = "FILE.mat")]
    image_list: PathBuf,
    /// THINGS_normMUA.mat: time-averaged responses, SNR and reliability per electrode.
    #[arg(long, value_name = "FILE.mat")]
    norm_mua: Option<PathBuf>,
    /// The THINGS image folder the image list's paths are relative to (object_images).
    #[arg(long, value_name = "DIR")]
    images: PathBuf,
    /// Output folder: OUT/trials/ and OUT/normmua/ (an existing dataset is never overwritten).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Recording days to import (ALLMAT's day column, 1-based), e.g. 1,2,5; default: all.
    #[arg(long, value_name = "D,..", value_delimiter = ',')]
    days: Option<Vec<u32>>,
    /// Trials per read of ALLMUA (memory: N x 300 x 1024 x 8 bytes, twice).
    #[arg(long, value_name = "N", default_value_t = 256)]
    block: usize,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

impl ImportTvsdArgs {
    /// The import's options, with the rig loaded.
    fn options(self) -> anyhow::Result<TvsdImportOptions> {
        if self.days.as_ref().is_some_and(|d| d.contains(&0)) {
            bail!("--days counts recording days from 1, as ALLMAT's day column does; 0 is no day");
        }
        Ok(TvsdImportOptions {
            rig: RigConfig::load(&self.rig)?,
            trials: self.trials,
            mapping: self.mapping,
            image_list: self.image_list,
            images: self.images,
            norm_mua: self.norm_mua,
            out: self.out,
            days: self.days,
            block: self.block,
            progress: !self.quiet,
        })
    }
}

/// Imports the datasets, prints what was kept and skipped, and saves that as
/// OUT/import-summary.json.
pub fn run(args: ImportTvsdArgs) -> anyhow::Result<()> {
    let opts = args.options()?;
    let summary = import_tvsd(&opts)?;
    println!("{summary}");
    write_json(&opts.out.join("import-summary.json"), &summary)
}
