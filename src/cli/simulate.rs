//! `monkeysee simulate`: a synthetic recording session, its dataset and RF truth.

use std::path::{Path, PathBuf};

use clap::Args;

use monkeysee::config::RigConfig;
use monkeysee::sim::{self, DatasetForm, ImageSource, SimConfig, SimOptions};

#[derive(Args)]
#[command(
    after_help = "Writes OUT/session.xdf (MUA + markers), OUT/dataset/ (numpy .npy arrays: images, responses [trials, 300, channels] over -100..+199 ms, trial_image, trial_split, trial_onset; dataset.json describes them), OUT/images/<id>.png, OUT/rf-truth.csv and OUT/rf-table.csv.\n\nExample:\n  monkeysee simulate --rig firmware-config/synthetic.toml --images procedural:200 --test-images 10 --repeats 5 --out sim"
)]
pub struct SimulateArgs {
    /// Rig config: arrays, areas, channel count, image size, RF table (generated when it has none).
    #[arg(long, value_name = "RIG.toml")]
    rig: PathBuf,
    /// `procedural:N` for N coloured dead-leaves images, or a folder of PNG/JPEG images.
    #[arg(long, value_name = "procedural:N|DIR")]
    images: String,
    /// Output folder (created).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Session seed (images, trial order, noise): the same seeds give the same session, byte for byte.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The simulated animal (electrode tuning, latencies, generated RFs). Keep it fixed to
    /// decode one session with a model trained on another.
    #[arg(long, default_value_t = 1)]
    animal_seed: u64,
    /// Images in the test split, each shown --repeats times (the rest are shown once).
    /// Default: a tenth of the images.
    #[arg(long, value_name = "N")]
    test_images: Option<usize>,
    /// Presentations of each test image.
    #[arg(long, value_name = "R", default_value_t = 10)]
    repeats: usize,
    /// Recording days the session spans, each with its own electrode drift (TVSD: 4);
    /// default: the cortex config's `design.days` (1, no drift).
    #[arg(long, value_name = "N")]
    days: Option<u32>,
    /// SD (degrees) of the error added to each RF centre in the table handed to the decoder
    /// (OUT/rf-table.csv), as a real RF mapping has; OUT/rf-truth.csv keeps the truth.
    #[arg(long, value_name = "DEG", default_value_t = 0.0)]
    rf_jitter: f64,
    /// Also write the raw headstage signal the MUA came from (the rig's [broadband] rate,
    /// int16, named as its [streams.broadband] selector says), for `run --input broadband`.
    /// About 61 MB per recorded second at 1024 channels × 30 kHz.
    #[arg(long)]
    broadband: bool,
    /// Simulator parameters (TOML); default: firmware-config/synthetic-cortex.toml, built in.
    #[arg(long, value_name = "FILE")]
    cortex: Option<PathBuf>,
    /// Write only the dataset, not the session file or the stimulus PNGs (a TVSD-sized
    /// session is ~40 GB of XDF): the same trials, value for value.
    #[arg(long)]
    dataset_only: bool,
    /// With --dataset-only: what the dataset holds per trial (at 1024 channels, `trials`
    /// takes ~1.2 MB a trial, `windows` 28 KB).
    #[arg(long, value_enum, default_value = "trials", requires = "dataset_only")]
    form: DatasetForm,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

impl SimulateArgs {
    /// The simulator's options: the rig, the cortex parameters and the images loaded.
    fn options(self) -> anyhow::Result<SimOptions> {
        let rig = RigConfig::load(&self.rig)?;
        let mut config = match &self.cortex {
            Some(p) => SimConfig::load(p)?,
            None => SimConfig::default(),
        };
        if let Some(days) = self.days {
            config.design.days = days;
        }
        let images = ImageSource::parse(&self.images, &config.leaves, self.seed)?;
        let test_images = self.test_images.unwrap_or(images.len() / 10);
        Ok(SimOptions {
            rig,
            config,
            images,
            out: self.out,
            seed: self.seed,
            animal_seed: self.animal_seed,
            test_images,
            repeats: self.repeats,
            rf_jitter_deg: self.rf_jitter,
            broadband: self.broadband,
            progress: !self.quiet,
        })
    }
}

/// Simulates the session (or only its dataset) and prints its size, speed, disk and
/// peak memory.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let dataset_only = args.dataset_only.then_some(args.form);
    let opts = args.options()?;
    let summary = match dataset_only {
        Some(form) => sim::simulate_dataset(&opts, form)?,
        None => sim::simulate(&opts)?,
    };
    println!(
        "simulated {:.1} s ({} trials: {} train images once, {} test images x {}) of {} channels in {:.1} s: {:.1}x real time",
        summary.simulated_s,
        summary.trials,
        summary.train_images,
        summary.test_images,
        summary.repeats,
        summary.channels,
        summary.wall_s,
        summary.realtime_factor
    );
    let days = opts.config.design.days;
    if days > 1 {
        println!(
            "{days} recording days back to back, each with its own electrode gains and baselines"
        );
    }
    let dataset_mb = folder_bytes(&opts.out.join("dataset")) as f64 / 1e6;
    match dataset_only {
        Some(_) => println!(
            "wrote {}/dataset/ ({dataset_mb:.1} MB), rf-truth.csv, rf-table.csv",
            opts.out.display()
        ),
        None => println!(
            "wrote {}/session.xdf ({:.1} MB), dataset/ ({dataset_mb:.1} MB), images/, rf-truth.csv, rf-table.csv",
            opts.out.display(),
            summary.xdf_bytes as f64 / 1e6
        ),
    }
    println!("peak memory {:.0} MB", peak_rss_bytes() as f64 / 1e6);
    Ok(())
}

/// Bytes of the files in `dir`.
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// This process's peak resident memory (`getrusage`: `ru_maxrss`, KiB on Linux).
fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage writes into the struct it is given and reads nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    usage.ru_maxrss.max(0) as u64 * 1024
}
