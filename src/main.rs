//! The `monkeysee` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use monkeysee::config::RigConfig;
use monkeysee::daemon::{self, ComputeDevice, ModelSource, Output, RunOptions};
use monkeysee::decoder::DecoderKind;
use monkeysee::demo::DemoOptions;
use monkeysee::eval::EvalOptions;
use monkeysee::replay::{self, Repeat, ReplayError, ReplayOptions, Speed};
use monkeysee::rf::RfTable;
use monkeysee::sim::{self, ImageSource, SimConfig, SimOptions};
use monkeysee::train::{LossWeights, TrainOptions};
use monkeysee::window::Mode;

/// Real-time image reconstruction from macaque multi-unit activity (MonkeySee, online).
#[derive(Parser)]
#[command(name = "monkeysee", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole loop with nothing to prepare: simulate a session, replay it over LSL, decode it live.
    Demo(DemoArgs),
    /// Run the closed-loop daemon: LSL in, latency windows, decoder, display, latency measured.
    Run(Box<RunArgs>),
    /// Republish a recorded XDF session as live LSL streams, paced in real time.
    Replay(ReplayArgs),
    /// Simulate a recording session from a rig and images: XDF session, numpy dataset, RF truth.
    Simulate(SimulateArgs),
    /// Turn a recorded XDF session (LabRecorder's or ours) into a training dataset.
    Dataset(DatasetArgs),
    /// Import the published THINGS Ventral Stream Spiking Dataset (TVSD) as training datasets.
    ImportTvsd(ImportTvsdArgs),
    /// Train a decoder (pix2pix U-Net + PatchGAN) on a dataset from `simulate` (or the same layout).
    Train(Box<TrainArgs>),
    /// Evaluate models on a dataset's test split: pixel r, SSIM, chance levels, RF recovery, image grid.
    Eval(EvalArgs),
    /// Write a synthetic receptive-field table for a rig (electrode,x_deg,y_deg,size_deg).
    RfTable(RfTableArgs),
}

#[derive(Args)]
#[command(
    after_help = "Writes OUT/session.xdf (MUA + markers), OUT/dataset/ (numpy .npy arrays: images, responses [trials, 300, channels] over -100..+199 ms, trial_image, trial_split, trial_onset; dataset.json describes them), OUT/images/<id>.png, OUT/rf-truth.csv and OUT/rf-table.csv.\n\nExample:\n  monkeysee simulate --rig firmware-config/synthetic.toml --images procedural:200 --test-images 10 --repeats 5 --out sim"
)]
struct SimulateArgs {
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
    /// SD (degrees) of the error added to each RF centre in the table handed to the decoder
    /// (OUT/rf-table.csv), as a real RF mapping has; OUT/rf-truth.csv keeps the truth.
    #[arg(long, value_name = "DEG", default_value_t = 0.0)]
    rf_jitter: f64,
    /// Simulator parameters (TOML); default: firmware-config/synthetic-cortex.toml, built in.
    #[arg(long, value_name = "FILE")]
    cortex: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
#[command(
    after_help = "Cuts -100..+199 ms around every onset marker out of the MUA stream (clock offsets applied as pyxdf does) and writes OUT/responses.npy [trials, 300, channels] float32 as recorded, images.npy, image_ids.txt, trial_image.npy, trial_split.npy (0 train, 1 test), trial_onset.npy (clock-corrected LSL time), channels.csv and dataset.json: the layout `simulate` writes, for `train` and `eval`.\n\nSkipped and reported, never fatal: epochs across a gap or past either end of the stream, epochs with NaN samples, duplicate onsets, ids with no image file.\n\nExamples:\n  monkeysee dataset --rig firmware-config/synthetic.toml --session rec.xdf --images stimuli/ --out data\n  monkeysee dataset --rig my-rig.toml --session sub-01_ses-01.xdf --images things/ --out data \\\n      --marker-query \"name='PsychoPy'\" --onset-regex '^img (?P<id>\\S+) on$'"
)]
struct DatasetArgs {
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

#[derive(Args)]
#[command(
    after_help = "Writes OUT/trials/ from THINGS_MUA_trials.mat: every trial's -100..+199 ms MUA in electrode order (the mapping applied), TVSD's split (test images = test split), the recording day as each trial's session (trial_session.npy; statistics are per day). The file (~58 GB) is read a block of trials at a time.\n\nWrites OUT/normmua/ from THINGS_normMUA.mat: TVSD's time-averaged, normalised per-image responses, for the TW-15 decoders (spatial, end-to-end, baseline). With it both datasets get electrodes.csv (SNR, reliability, latency, oracle per electrode) for `train --min-snr`.\n\nAll files are MATLAB v7.3 (HDF5, read with the HDF5 C library); the mapping file may be MAT v5.\n\nExample:\n  monkeysee import-tvsd --rig firmware-config/monkey-n.toml --trials THINGS_MUA_trials.mat \\\n      --mapping _logs/1024chns_mapping_20220105.mat --image-list _logs/things_imgs.mat \\\n      --norm-mua THINGS_normMUA.mat --images THINGS/object_images --out tvsd-N"
)]
struct ImportTvsdArgs {
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

#[derive(Args)]
struct RunArgs {
    /// Rig config (TOML) that describes the arrays, streams, windows and RF table,
    /// e.g. firmware-config/synthetic.toml.
    #[arg(long, value_name = "RIG.toml")]
    rig: PathBuf,
    /// Trained model folder (decoder.json + weights.mpk [+ normalization.json]).
    /// It must match the rig's electrodes and windows.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "random_weights",
        required_unless_present = "random_weights"
    )]
    model: Option<PathBuf>,
    /// Use an untrained decoder with random weights, to exercise the pipeline.
    #[arg(long)]
    random_weights: bool,
    /// Decoder kind for --random-weights.
    #[arg(
        long,
        value_enum,
        default_value = "end-to-end",
        requires = "random_weights"
    )]
    kind: KindArg,
    /// U-Net base width for --random-weights (64 in the paper; 16 runs on a laptop CPU).
    #[arg(long, default_value_t = 16, requires = "random_weights")]
    width: usize,
    /// Seed for --random-weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// event: one frame per `stim_on` marker; sliding: one frame per hop (rig windows.sliding_hop_ms).
    #[arg(long, value_enum, default_value = "event")]
    mode: Mode,
    /// Where the decoder runs. `cuda` needs a build with `--features cuda` and an NVIDIA GPU.
    #[arg(long, value_enum, default_value = "cpu")]
    device: ComputeDevice,
    /// Write frames as PNG files (DIR/frames/) and a contact sheet instead of opening a window.
    #[arg(long, requires = "out")]
    headless: bool,
    /// Output folder for --headless (also the fallback when no display is available).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Stop after this many frames were shown.
    #[arg(long, value_name = "N")]
    frames: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "S")]
    seconds: Option<f64>,
    /// Write a standard HdrHistogram interval log (one tag per pipeline stage, microseconds).
    #[arg(long, value_name = "FILE")]
    hdr_log: Option<PathBuf>,
    /// LSL XPath predicate selecting the MUA stream; overrides the rig's [streams.mua],
    /// e.g. "name='rig1' and type='MUA'".
    #[arg(long, value_name = "XPATH")]
    mua_query: Option<String>,
    /// LSL XPath predicate selecting the marker stream; overrides the rig's [streams.markers].
    #[arg(long, value_name = "XPATH")]
    marker_query: Option<String>,
    /// Folder of stimulus images named <image_id>.png/.jpg, shown beside each reconstruction.
    /// Without it, the folder named in the marker stream's header (desc/stimuli/directory,
    /// as a replayed session publishes it) is used when it exists.
    #[arg(long, value_name = "DIR")]
    stimuli: Option<PathBuf>,
    /// Record the consumed MUA and marker streams to this XDF file (clock-corrected stamps).
    #[arg(long, value_name = "FILE.xdf")]
    record: Option<PathBuf>,
    /// Save every decoded frame's decoder inputs (inputs.npy), reconstruction
    /// (reconstructions.npy) and onset/image (frames.csv) in this folder, for offline
    /// analysis (the decode thread then also writes ~0.1 MB per frame to disk).
    #[arg(long, value_name = "DIR")]
    save_inputs: Option<PathBuf>,
    /// A calibration block: after this many presentations, z-score with this session's own
    /// statistics only, not the model's (overrides the rig's
    /// normalisation.calibration_presentations; 0 = keep pooling with the model's).
    #[arg(long, value_name = "N")]
    calibrate: Option<u64>,
    /// Seconds to wait for the LSL streams at start-up.
    #[arg(long, default_value_t = 10.0)]
    resolve_timeout: f64,
    /// Threads for the decoder (0: all cores but one, so ingest and windows keep a core).
    #[arg(long, default_value_t = 0)]
    decode_threads: usize,
    /// Write the run summary as JSON.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// No periodic status line.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KindArg {
    Spatial,
    Spatiotemporal,
    EndToEnd,
    Baseline,
}

impl From<KindArg> for DecoderKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Spatial => DecoderKind::Spatial,
            KindArg::Spatiotemporal => DecoderKind::Spatiotemporal,
            KindArg::EndToEnd => DecoderKind::EndToEnd,
            KindArg::Baseline => DecoderKind::Baseline,
        }
    }
}

/// `--linear-pathway`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PathwayArg {
    /// The paper's decoders: the input layer's maps only.
    None,
    /// A ridge read-out of every electrode as three more input channels; the U-Net learns a
    /// correction added to its image.
    Residual,
    /// The same read-out as input channels only; the U-Net draws the image itself.
    Concat,
}

/// `--input-scale`: `auto` or a number.
#[derive(Clone, Copy)]
enum InputScaleArg {
    Auto,
    Fixed(f32),
}

impl std::str::FromStr for InputScaleArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        match s.parse::<f32>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(Self::Fixed(v)),
            _ => Err(format!("`{s}`: give `auto` or a positive number")),
        }
    }
}

#[derive(Args)]
#[command(
    after_help = "Writes OUT/decoder.json + weights.mpk + normalization.json (load with \
`monkeysee run --model OUT`), OUT/training.json, OUT/losses.csv and OUT/checkpoint/.\n\n\
Example:\n  monkeysee train --rig firmware-config/synthetic.toml --data sim/dataset \
--kind end-to-end --width 16 --epochs 20 --out models/e2e"
)]
struct TrainArgs {
    /// Rig config the dataset was recorded with (channels, areas, windows, RF table).
    #[arg(long, value_name = "RIG.toml")]
    rig: PathBuf,
    /// Dataset folder (dataset.json, responses.npy, images.npy, ...).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Output folder for the model.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Which of the paper's four decoders.
    #[arg(long, value_enum, default_value = "end-to-end")]
    kind: KindArg,
    /// RF table to use instead of the rig's (e.g. the simulator's rf-table.csv): initialises
    /// the end-to-end RF layer and places electrodes for the fixed-RF decoders.
    #[arg(long, value_name = "CSV")]
    rf_table: Option<PathBuf>,
    /// U-Net base width (64 in the paper; 16 trains and runs on a laptop CPU).
    #[arg(long, default_value_t = 16)]
    width: usize,
    /// PatchGAN base width (64 in the paper).
    #[arg(long, default_value_t = 16)]
    disc_width: usize,
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Adam learning rate (both networks).
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Learning rate of the end-to-end decoder's RF centres and sizes (in pixels: Adam
    /// moves each by about this much per step).
    #[arg(long, default_value_t = 0.01)]
    rf_lr: f64,
    /// Adam beta1.
    #[arg(long, default_value_t = 0.5)]
    beta1: f64,
    /// Weight of the pixel L1 loss.
    #[arg(long, default_value_t = 0.5)]
    pixel_weight: f64,
    /// Weight of the adversarial loss.
    #[arg(long, default_value_t = 0.01)]
    adversarial_weight: f64,
    /// torchvision's pretrained VGG19 weights (vgg19-dcbb9e9d.pth, as
    /// torchvision.models.vgg19(weights="IMAGENET1K_V1") downloads it) for the paper's
    /// perceptual loss. Without it training uses pixel L1 + adversarial only.
    #[arg(long, value_name = "FILE.pth")]
    vgg_weights: Option<PathBuf>,
    /// Weight of the VGG19 feature loss.
    #[arg(long, default_value_t = 1.0, requires = "vgg_weights")]
    vgg_weight: f64,
    /// Side images are resized to for VGG19 (224 in the paper; smaller is much faster on a CPU).
    #[arg(
        long,
        default_value_t = 224,
        value_name = "PX",
        requires = "vgg_weights"
    )]
    vgg_size: usize,
    /// Size of the discriminator's history pool of generated images.
    #[arg(long, default_value_t = 50)]
    pool: usize,
    /// Save a checkpoint every N epochs (always after the last).
    #[arg(long, default_value_t = 5)]
    checkpoint_every: usize,
    /// Continue from OUT/checkpoint.
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train on at most N trials of the training split.
    #[arg(long, value_name = "N")]
    max_trials: Option<usize>,
    /// Compute threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Where training runs. `cuda` needs a build with `--features cuda` and an NVIDIA GPU.
    #[arg(long, value_enum, default_value = "cpu")]
    device: ComputeDevice,
    /// A linear read-out of every electrode beside the input layer (ridge regression from
    /// each electrode's window mean to a coarse image, fitted on the training trials in
    /// closed form and cross-fitted for the training inputs, then frozen). It carries what
    /// per-array RF maps discard (IT and V4 codes that are not retinotopic).
    #[arg(long, value_enum, default_value = "none")]
    linear_pathway: PathwayArg,
    /// Side of the linear pathway's coarse image (it must divide the image size).
    #[arg(long, default_value_t = 24, value_name = "PX")]
    linear_side: usize,
    /// Factor on the input layer's maps: `auto` gives them unit standard deviation over
    /// the training trials (the RF maps' values are small window means otherwise).
    #[arg(long, default_value = "auto", value_name = "auto|X")]
    input_scale: InputScaleArg,
    /// Let the learning rate fall linearly to zero over the last N epochs.
    #[arg(long, default_value_t = 0, value_name = "N")]
    lr_decay_epochs: usize,
    /// Hold out the images of the last N training trials as a validation set (not trained
    /// on; its pixel L1 is logged every epoch, in losses.csv and loss.png).
    #[arg(long, default_value_t = 0, value_name = "N")]
    validation: usize,
    /// Save the model of the epoch with the lowest validation L1 rather than the last one
    /// (early stopping; needs --validation).
    #[arg(long)]
    keep_best: bool,
    /// Leave out electrodes with an SNR below this (the dataset's electrodes.csv, from
    /// `import-tvsd --norm-mua`): their inputs are 0 in training and in the daemon.
    /// (MonkeySee kept 561 of monkey N's 1024 electrodes by RF fit and split-half
    /// reliability > 0.4, a different criterion.)
    #[arg(long, value_name = "SNR")]
    min_snr: Option<f64>,
    /// Adam's beta1 for the learned RF layer (default: --beta1).
    #[arg(long)]
    rf_beta1: Option<f64>,
    /// Where the learned RF centres start: at the RF table's, or at each array's mean
    /// (what a lab without single-electrode RF maps has).
    #[arg(long, value_enum, default_value = "table")]
    rf_start: monkeysee::train::RfStart,
    /// Start the U-Net from a trained model's weights (same kind of U-Net).
    #[arg(long, value_name = "MODEL_DIR")]
    init_unet: Option<PathBuf>,
    /// Keep the U-Net fixed: only the input layer learns (RF-learning experiments).
    #[arg(long)]
    freeze_unet: bool,
    /// End-to-end: weight of the RF layer's encoding loss (each electrode's response
    /// predicted from the image inside its Gaussian RF), which pulls the RF centres toward
    /// where the electrode responds; 0 turns it off.
    #[arg(long, default_value_t = 0.0, value_name = "W")]
    rf_encoding_weight: f64,
    /// End-to-end: one U-Net input channel per electrode instead of per array (an
    /// RF-learning experiment: the input grows from 15 to ~960 channels).
    #[arg(long)]
    channel_per_electrode: bool,
    /// Which engine runs a step: `auto` is monkeysee's CPU engine (gemm kernels) on the
    /// CPU and Burn's autodiff on CUDA; `burn` forces Burn's autodiff (slower on a CPU).
    #[arg(long, value_enum, default_value = "auto")]
    engine: monkeysee::train::EngineChoice,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
#[command(
    after_help = "Writes OUT/metrics.json (per model, and per linear decoder fitted on the train \
split: pixel_r, ssim, ident_top1, ident_2way with their chance levels, the same single-trial, \
RF recovery for learned RFs) and OUT/grid.png (stimulus, each model, the linear decoder).\n\n\
Example:\n  monkeysee eval --model models/e2e --model models/spatial --data sim/dataset --out eval"
)]
struct EvalArgs {
    /// Model folder (repeat to compare models side by side).
    #[arg(long = "model", value_name = "DIR", required = true)]
    models: Vec<PathBuf>,
    /// Dataset folder with a test split.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Rig config; default: the one recorded in the dataset's dataset.json.
    #[arg(long, value_name = "RIG.toml")]
    rig: Option<PathBuf>,
    /// Ground-truth RF table for learned-RF models; default: rf-truth.csv beside the dataset.
    #[arg(long, value_name = "CSV")]
    rf_truth: Option<PathBuf>,
    /// Test images in the grid.
    #[arg(long, default_value_t = 12)]
    grid_images: usize,
}

#[derive(Args)]
struct ReplayArgs {
    /// The session to replay.
    #[arg(value_name = "FILE.xdf")]
    file: PathBuf,
    /// Times real time (e.g. 1, 0.5, 4), or `max` for as fast as possible.
    #[arg(long, default_value = "1", value_parser = parse_speed)]
    speed: Speed,
    /// Play the file again and again (time stamps keep increasing) until Ctrl-C.
    #[arg(long = "loop", conflicts_with = "loops")]
    looped: bool,
    /// Play the file this many times.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    loops: Option<u64>,
    /// Publish only these streams (stream name or the file's stream id); repeatable.
    #[arg(long = "stream", value_name = "NAME_OR_ID")]
    streams: Vec<String>,
    /// Append this to every published stream's name and source_id (e.g. "-replay"), so
    /// the replay cannot be mistaken for the live device on a lab network.
    #[arg(long, value_name = "SUFFIX", default_value = "")]
    name_suffix: String,
    /// Before sending, wait until every outlet has a consumer.
    #[arg(long)]
    wait_for_consumer: bool,
    /// Seconds --wait-for-consumer waits before giving up.
    #[arg(
        long,
        value_name = "S",
        default_value_t = 300.0,
        requires = "wait_for_consumer"
    )]
    wait_timeout: f64,
    /// Seconds between publishing the outlets and sending the first sample.
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    start_delay: f64,
    /// Spin (instead of sleeping) this many microseconds before each send: finer pacing
    /// for a core's worth of CPU (1000 gave p99 ≈ 50 µs instead of ≈ 0.5 ms at 1 kHz).
    #[arg(long, value_name = "US", default_value_t = 0)]
    spin_us: u64,
    /// Write the summary as JSON.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

fn parse_speed(s: &str) -> Result<Speed, String> {
    s.parse::<Speed>().map_err(|e| e.to_string())
}

#[derive(Args)]
#[command(
    after_help = "Simulates a short session of the synthetic monkey, replays it over LSL on \
loopback at real time and runs the daemon on it with the built-in demo model (models/demo-e2e): \
reconstructions beside the true stimuli in a window, or, without a display or with --headless, \
PNG frames and a contact sheet in --out. Prints the latency summary. Takes about 11 s."
)]
struct DemoArgs {
    /// Write frames and a contact sheet to --out instead of opening a window.
    #[arg(long)]
    headless: bool,
    /// Output folder for --headless (and the fallback without a display).
    #[arg(long, value_name = "DIR", default_value = "monkeysee-demo")]
    out: PathBuf,
    /// Images in the simulated session (4 per trial; 200 ms on, 200 ms off).
    #[arg(long, default_value_t = 16)]
    images: usize,
    /// Session seed: other seeds show other images.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// A model folder to use instead of the built-in demo model (trained on the synthetic rig).
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Threads for the decoder (0: all cores but one).
    #[arg(long, default_value_t = 0)]
    decode_threads: usize,
}

#[derive(Args)]
struct RfTableArgs {
    /// Rig config whose arrays get RFs (its own RF table, if any, is not read).
    #[arg(long, value_name = "RIG.toml")]
    rig: PathBuf,
    /// Output CSV.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut rig = RigConfig::load(&args.rig)?;
    if let Some(q) = args.mua_query {
        rig.mua.query = Some(q);
    }
    if let Some(q) = args.marker_query {
        rig.markers.query = Some(q);
    }
    if !args.quiet {
        for (what, s) in [("MUA", &rig.mua), ("marker", &rig.markers)] {
            if let Some(w) = s.weakness() {
                eprintln!("monkeysee: warning: {what} stream: {w}");
            }
        }
    }
    if let Some(n) = args.calibrate {
        if n == 1 {
            bail!("--calibrate must be 0 (none) or at least 2: statistics need two presentations");
        }
        rig.normalisation.calibration_presentations = n;
    }
    let model = match (args.model, args.random_weights) {
        (Some(dir), false) => ModelSource::Dir(dir),
        (None, true) => ModelSource::Random {
            kind: args.kind.into(),
            width: args.width,
            seed: args.seed,
        },
        _ => bail!("give either --model DIR or --random-weights"),
    };
    if args.width == 0 {
        bail!("--width must be at least 1");
    }
    let output = match (args.headless, args.out) {
        (true, Some(dir)) => Output::Headless(dir),
        (false, out) => Output::Window {
            fallback: out.unwrap_or_else(|| PathBuf::from("monkeysee-frames")),
        },
        (true, None) => bail!("--headless needs --out DIR"),
    };
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_ctrl_c(&stop)?;
    let summary = daemon::run(RunOptions {
        rig,
        model,
        mode: args.mode,
        device: args.device,
        output,
        frames: args.frames,
        seconds: args.seconds,
        hdr_log: args.hdr_log,
        stimuli_dir: args.stimuli,
        record: args.record,
        save_inputs: args.save_inputs,
        resolve_timeout: args.resolve_timeout,
        decode_threads: args.decode_threads,
        status: !args.quiet,
        stop,
    })?;
    print_summary(&summary);
    if let Some(r) = &summary.recording {
        println!(
            "recorded {} samples and {} markers to {}",
            r.samples,
            r.markers,
            r.path.display()
        );
    }
    if let Some(p) = args.summary_json {
        std::fs::write(&p, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let rig = RigConfig::load(&args.rig)?;
    let config = match &args.cortex {
        Some(p) => SimConfig::load(p)?,
        None => SimConfig::default(),
    };
    let images = ImageSource::parse(&args.images, &config.leaves, args.seed)?;
    let test_images = args.test_images.unwrap_or(images.len() / 10);
    let summary = sim::simulate(&SimOptions {
        rig,
        config,
        images,
        out: args.out.clone(),
        seed: args.seed,
        animal_seed: args.animal_seed,
        test_images,
        repeats: args.repeats,
        rf_jitter_deg: args.rf_jitter,
        progress: !args.quiet,
    })?;
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
    println!(
        "wrote {}/session.xdf ({:.1} MB), dataset/, images/, rf-truth.csv, rf-table.csv",
        args.out.display(),
        summary.xdf_bytes as f64 / 1e6
    );
    Ok(())
}

fn dataset(args: DatasetArgs) -> anyhow::Result<()> {
    use monkeysee::dataset::from_xdf::{dataset_from_xdf, XdfDatasetOptions};
    let rig = RigConfig::load(&args.rig)?;
    let summary = dataset_from_xdf(&XdfDatasetOptions {
        rig,
        session: args.session,
        images: args.images,
        out: args.out.clone(),
        mua_query: args.mua_query,
        marker_query: args.marker_query,
        onset_regex: args.onset_regex,
        min_repeats: args.min_repeats,
        progress: !args.quiet,
    })?;
    println!("{summary}");
    std::fs::write(
        args.out.join("import-summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(())
}

fn import_tvsd(args: ImportTvsdArgs) -> anyhow::Result<()> {
    use monkeysee::dataset::tvsd_import::{import_tvsd, TvsdImportOptions};
    let rig = RigConfig::load(&args.rig)?;
    let summary = import_tvsd(&TvsdImportOptions {
        rig,
        trials: args.trials,
        mapping: args.mapping,
        image_list: args.image_list,
        images: args.images,
        norm_mua: args.norm_mua,
        out: args.out.clone(),
        days: args.days,
        block: args.block,
        progress: !args.quiet,
    })?;
    println!("{summary}");
    std::fs::write(
        args.out.join("import-summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(())
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    let mut rig = RigConfig::load(&args.rig)?;
    if let Some(p) = &args.rf_table {
        rig.rf.table = Some(RfTable::load(p)?);
        rig.rf.table_path = Some(p.clone());
    }
    monkeysee::decoder::init_compute_threads(monkeysee::decoder::compute_threads(
        args.threads,
        monkeysee::decoder::PoolRole::Offline,
    ));
    let opts = TrainOptions {
        rig_path: args.rig.clone(),
        rig: Some(rig),
        data: args.data,
        out: args.out.clone(),
        kind: args.kind.into(),
        width: args.width,
        disc_width: args.disc_width,
        epochs: args.epochs,
        batch: args.batch,
        lr: args.lr,
        rf_lr: args.rf_lr,
        beta1: args.beta1,
        losses: LossWeights {
            pixel: args.pixel_weight,
            adversarial: args.adversarial_weight,
            vgg: args.vgg_weight,
        },
        vgg_weights: args.vgg_weights.clone(),
        vgg_size: args.vgg_size,
        pool_size: args.pool,
        checkpoint_every: args.checkpoint_every,
        resume: args.resume,
        seed: args.seed,
        max_trials: args.max_trials,
        progress: !args.quiet,
        engine: args.engine,
        linear_pathway: match args.linear_pathway {
            PathwayArg::None => None,
            mode => Some(monkeysee::decoder::linear::LinearPathwayConfig {
                side: args.linear_side,
                residual: mode == PathwayArg::Residual,
            }),
        },
        input_scale: match args.input_scale {
            InputScaleArg::Auto => None,
            InputScaleArg::Fixed(v) => Some(v),
        },
        lr_decay_epochs: args.lr_decay_epochs,
        rf_beta1: args.rf_beta1,
        rf_start: args.rf_start,
        init_unet: args.init_unet.clone(),
        freeze_unet: args.freeze_unet,
        channel_per_electrode: args.channel_per_electrode,
        rf_encoding_weight: args.rf_encoding_weight,
        validation: args.validation,
        keep_best: args.keep_best,
        min_snr: args.min_snr,
    };
    match &opts.vgg_weights {
        Some(p) => eprintln!(
            "monkeysee train: perceptual loss: VGG19 from {} at {} px, weight {}",
            p.display(),
            opts.vgg_size,
            opts.losses.vgg
        ),
        None => eprintln!(
            "monkeysee train: no --vgg-weights: training WITHOUT the paper's perceptual VGG19 loss \
(pixel L1 + adversarial only). Pass torchvision's vgg19-dcbb9e9d.pth to add it."
        ),
    }
    struct Train<'a>(&'a TrainOptions);
    impl monkeysee::decoder::OnTrainBackend for Train<'_> {
        type Output = anyhow::Result<monkeysee::train::TrainSummary>;
        fn run<B: burn::tensor::backend::AutodiffBackend>(self, device: B::Device) -> Self::Output {
            monkeysee::train::train::<B>(self.0, &device)
        }
    }
    let summary = monkeysee::decoder::dispatch_training(args.device, Train(&opts))??;
    let last = summary.epochs.last().context("no epoch ran")?;
    println!(
        "trained {} ({} parameters) on {} trials: epoch {}{}, pixel L1 {:.4}{}{}, {:.1} samples/s",
        opts.kind,
        summary.parameters,
        summary.train_trials,
        last.epoch,
        match (last.d, last.g_adversarial) {
            (Some(d), Some(g)) => format!(" D {d:.3}, G adversarial {g:.3}"),
            _ => " (no adversarial term)".into(),
        },
        last.g_pixel_l1,
        last.g_vgg
            .map_or(String::new(), |v| format!(", VGG L1 {v:.4}")),
        last.test_pixel_l1
            .map_or(String::new(), |t| format!(", test L1 {t:.4}")),
        last.samples_per_s
    );
    match summary
        .epochs
        .iter()
        .find(|e| e.epoch == summary.saved_epoch)
    {
        Some(e) if summary.saved_epoch != last.epoch => println!(
            "model written to {} (epoch {}: the lowest validation L1, {:.4})",
            args.out.display(),
            e.epoch,
            e.validation_pixel_l1.unwrap_or(f64::NAN)
        ),
        _ => println!("model written to {}", args.out.display()),
    }
    Ok(())
}

fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let rig = args.rig.as_deref().map(RigConfig::load).transpose()?;
    let report = monkeysee::eval::eval(&EvalOptions {
        models: args.models,
        data: args.data,
        rig,
        out: args.out.clone(),
        grid_images: args.grid_images,
        rf_truth: args.rf_truth,
    })?;
    println!(
        "{:<20} {:>7} {:>7} {:>6} {:>6} {:>7} {:>7} {:>9} {:>9}",
        "entry", "pixel r", "chance", "SSIM", "chance", "ident", "2-way", "1-trial r", "1-trial id"
    );
    let n = report.entries.first().map_or(0, |m| m.scores.n_images);
    for m in &report.entries {
        let s = &m.scores;
        println!(
            "{:<20} {:>7.3} {:>7.3} {:>6.3} {:>6.3} {:>7.3} {:>7.3} {:>9.3} {:>9.3}",
            m.name,
            s.pixel_r,
            s.pixel_r_chance,
            s.ssim,
            s.ssim_chance,
            s.ident_top1,
            s.ident_2way,
            s.single_trial_pixel_r,
            s.single_trial_ident_top1
        );
        for (area, r) in m.rf_recovery.iter().flatten() {
            println!(
                "  RF centres vs truth, {area}: r_x {:.3} r_y {:.3} within-array r {:.3} error {:.2} deg \
(start: r_x {:.3} r_y {:.3} within-array r {:.3} error {:.2} deg); moved {:.2} deg, {:.0}% closer \
(random moves: {:.0}%, 95th pct {:.0}%), toward the truth by {:+.3} deg (random: 95th pct {:+.3})",
                r.r_x, r.r_y, r.within_array_r, r.mean_error_deg, r.initial_r_x, r.initial_r_y,
                r.initial_within_array_r, r.initial_mean_error_deg, r.mean_shift_deg,
                100.0 * r.fraction_closer, 100.0 * r.null_fraction_closer,
                100.0 * r.null_fraction_closer_p95, r.mean_projection_deg,
                r.null_mean_projection_p95_deg
            );
        }
    }
    println!(
        "identification: n-way over {n} test images (chance {:.3}), 2-way (chance 0.5)",
        1.0 / n.max(1) as f64
    );
    for note in &report.notes {
        println!("note: {note}");
    }
    println!("wrote {}/metrics.json and grid.png", args.out.display());
    Ok(())
}

fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    if !(args.start_delay.is_finite() && args.start_delay >= 0.0) {
        bail!("--start-delay must be 0 or more seconds");
    }
    if !(args.wait_timeout.is_finite() && args.wait_timeout > 0.0) {
        bail!("--wait-timeout must be a positive number of seconds");
    }
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_ctrl_c(&stop)?;
    let repeat = match (args.looped, args.loops) {
        (true, _) => Repeat::Forever,
        (false, Some(n)) => Repeat::Times(n),
        (false, None) => Repeat::Once,
    };
    let result = replay::run(ReplayOptions {
        path: args.file,
        speed: args.speed,
        repeat,
        wait_for_consumer: args.wait_for_consumer.then_some(args.wait_timeout),
        streams: args.streams,
        start_delay: args.start_delay,
        progress: !args.quiet,
        spin: std::time::Duration::from_micros(args.spin_us),
        stop,
        name_suffix: args.name_suffix,
    });
    let summary = match &result {
        Ok(s) => Some(s),
        Err(ReplayError::Damaged { sent, .. }) => Some(&**sent),
        Err(_) => None,
    };
    if let Some(s) = summary {
        eprintln!("{s}");
        if let Some(p) = &args.summary_json {
            std::fs::write(p, serde_json::to_string_pretty(s)?)
                .with_context(|| format!("writing {}", p.display()))?;
        }
    }
    result?;
    Ok(())
}

fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let output = if args.headless {
        Output::Headless(args.out.clone())
    } else {
        Output::Window {
            fallback: args.out.clone(),
        }
    };
    let mut opts = DemoOptions::new(output);
    opts.model = args.model;
    opts.images = args.images;
    opts.seed = args.seed;
    opts.decode_threads = args.decode_threads;
    stop_on_ctrl_c(&opts.stop)?;
    let summary = monkeysee::demo::run(opts)?;
    print_summary(&summary);
    if args.headless || std::env::var_os("DISPLAY").is_none() {
        println!("frames and contact sheet in {}", args.out.display());
    }
    Ok(())
}

fn rf_table(args: RfTableArgs) -> anyhow::Result<()> {
    let rig = RigConfig::load_without_rf_table(&args.rig)?;
    let table = RfTable::synthetic(&rig, args.seed);
    table.save(&args.out)?;
    println!(
        "wrote {} RFs to {}",
        table.entries.len(),
        args.out.display()
    );
    Ok(())
}

/// Sets `stop` on Ctrl-C, so a run ends cleanly with its summary.
fn stop_on_ctrl_c(stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    let stop = stop.clone();
    ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")
}

/// The daemon's end-of-run report: frames, the latency table, the non-zero counters.
fn print_summary(summary: &daemon::RunSummary) {
    println!(
        "\n{} frames shown in {:.1} s",
        summary.frames_shown, summary.elapsed_s
    );
    println!("{}", summary.table);
    let counts: Vec<String> = summary
        .counters
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!("counts: {}", counts.join(", "));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => demo(a),
        Command::Run(a) => run(*a),
        Command::Replay(a) => replay(a),
        Command::Simulate(a) => simulate(a),
        Command::Dataset(a) => dataset(a),
        Command::ImportTvsd(a) => import_tvsd(a),
        Command::Train(a) => train(*a),
        Command::Eval(a) => eval(a),
        Command::RfTable(a) => rf_table(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
