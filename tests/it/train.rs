use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData};

use monkeysee::dataset::Dataset;
use monkeysee::decoder::linear::LinearPathwayConfig;
use monkeysee::decoder::{
    CpuBackend, CpuTrainBackend, Decoder, DecoderConfig, DecoderKind, ElectrodeSpec,
    GaussianRfLayer,
};
use monkeysee::sim::{self, ImageSource, SimConfig, SimOptions};
use monkeysee::train::{self, EngineChoice, LossWeights, RfStart, TrainOptions};

use super::common::small_rig;

fn tiny_dataset(dir: &std::path::Path) -> SimOptions {
    let rig = small_rig(dir);
    let config = SimConfig::default();
    let opts = SimOptions {
        images: ImageSource::parse("procedural:20", &config.leaves, 8).unwrap(),
        rig,
        config,
        out: dir.join("sim"),
        seed: 8,
        animal_seed: 1,
        test_images: 2,
        repeats: 2,
        rf_jitter_deg: 0.0,
        broadband: false,
        progress: false,
    };
    sim::simulate(&opts).unwrap();
    opts
}

fn options(
    sim: &SimOptions,
    out: &std::path::Path,
    kind: DecoderKind,
    epochs: usize,
) -> TrainOptions {
    options_for(&sim.rig, &sim.out.join("dataset"), out, kind, epochs)
}

/// Small, quick training options for any dataset of `rig`.
pub(crate) fn options_for(
    rig: &monkeysee::config::RigConfig,
    data: &std::path::Path,
    out: &std::path::Path,
    kind: DecoderKind,
    epochs: usize,
) -> TrainOptions {
    TrainOptions {
        rig: Some(rig.clone()),
        rig_path: rig.path.clone(),
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        kind,
        width: 4,
        levels: monkeysee::decoder::arch::DEFAULT_LEVELS.to_vec(),
        disc_width: 4,
        epochs,
        batch: 4,
        lr: 2e-3,
        rf_lr: 0.01,
        beta1: 0.5,
        losses: LossWeights::default(),
        vgg_weights: None,
        vgg_size: 224,
        pool_size: 8,
        checkpoint_every: 2,
        resume: false,
        seed: 3,
        max_trials: None,
        progress: false,
        engine: EngineChoice::Auto,
        linear_pathway: None,
        input_scale: None,
        lr_decay_epochs: 0,
        rf_beta1: None,
        rf_start: RfStart::Table,
        init_unet: None,
        freeze_unet: false,
        channel_per_electrode: false,
        rf_encoding_weight: 0.0,
        validation: 0,
        keep_best: false,
        min_snr: None,
        areas: Vec::new(),
    }
}

/// The saved model in `out` (a TW-15 decoder) reconstructing the dataset's first trial.
fn first_trial_reconstruction(out: &std::path::Path, sim: &SimOptions, ds: &Dataset) -> Vec<f32> {
    let decoder = Decoder::<CpuBackend>::load(out, &Default::default()).unwrap();
    let stats = monkeysee::norm::NormStats::load(out, 1, sim.rig.electrodes.len())
        .unwrap()
        .unwrap();
    let mut f = Vec::new();
    let mut img = vec![0.0f32; decoder.config().image_len()];
    ds.features(
        0,
        &sim.rig,
        monkeysee::config::WindowSetKind::Tw15,
        &stats,
        &mut f,
    );
    decoder.reconstruct(&f, &mut img).unwrap();
    img
}

/// Training steps on a tiny dataset lower the pixel loss; the saved model loads, gives
/// the test loss training reported, and saves/loads again bit for bit.
#[test]
fn training_lowers_the_loss_and_the_model_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let sim = tiny_dataset(dir.path());
    let out = dir.path().join("model");
    let pathway = |residual| LinearPathwayConfig { side: 8, residual };
    let paper = &monkeysee::decoder::arch::PAPER_LEVELS[..];
    for (kind, linear, levels) in [
        (DecoderKind::EndToEnd, None, paper),
        (DecoderKind::Spatial, None, paper),
        (DecoderKind::Spatiotemporal, None, paper),
        (DecoderKind::Baseline, None, paper),
        (DecoderKind::Spatial, Some(pathway(true)), paper),
        (DecoderKind::EndToEnd, Some(pathway(false)), paper),
        // Another U-Net: three levels, other widths. The architecture is the only change.
        (DecoderKind::Spatial, None, &[2, 3, 3][..]),
    ] {
        // One batch of four trials, seen 40 times: the generator must start to fit it.
        let mut opts = options(&sim, &out, kind, 40);
        opts.max_trials = Some(4);
        opts.checkpoint_every = 0;
        opts.linear_pathway = linear.clone();
        opts.levels = levels.to_vec();
        let summary = train::train::<CpuTrainBackend>(&opts, &Default::default()).unwrap();
        let first = &summary.epochs[0];
        let last = summary.epochs.last().unwrap();
        assert_eq!(summary.epochs.len(), 40);
        assert!(
            last.g_pixel_l1 < 0.85 * first.g_pixel_l1,
            "{kind}: pixel L1 {:.4} → {:.4}",
            first.g_pixel_l1,
            last.g_pixel_l1
        );
        for f in [
            "decoder.json",
            "weights.mpk",
            "normalization.json",
            "training.json",
            "losses.csv",
        ] {
            assert!(out.join(f).exists(), "{kind}: {f} missing");
        }

        // The saved model reproduces the test loss training measured.
        let device = Default::default();
        let decoder = Decoder::<CpuBackend>::load(&out, &device).unwrap();
        assert_eq!(decoder.config().kind, kind);
        assert_eq!(decoder.config().linear_pathway, linear);
        assert_eq!(decoder.config().levels, levels);
        // The maps were scaled to unit variance: fixed maps are mostly zeros and small
        // values, summed Gaussians larger.
        let scale = decoder.config().input_scale;
        match kind {
            DecoderKind::Spatial | DecoderKind::Spatiotemporal => {
                assert!(scale > 1.0, "{kind}: {scale}")
            }
            _ => assert!(scale > 0.0 && scale != 1.0, "{kind}: {scale}"),
        }
        let ds = Dataset::open(&opts.data).unwrap();
        let set = monkeysee::config::window_set(kind);
        let windows = sim.rig.windows.windows_per_electrode(set);
        let stats = monkeysee::norm::NormStats::load(&out, windows, sim.rig.electrodes.len())
            .unwrap()
            .unwrap();
        let mut f = Vec::new();
        let mut img = vec![0.0f32; decoder.config().image_len()];
        let (mut sum, mut n) = (0.0f64, 0usize);
        for t in ds.split(true) {
            ds.features(t, &sim.rig, set, &stats, &mut f);
            decoder.reconstruct(&f, &mut img).unwrap();
            let truth = ds.image_chw(ds.trial_image[t]);
            sum += img
                .iter()
                .zip(&truth)
                .map(|(a, b)| (a - b).abs() as f64)
                .sum::<f64>();
            n += img.len();
        }
        let loaded_l1 = sum / n as f64;
        let reported = last.test_pixel_l1.unwrap();
        assert!(
            (loaded_l1 - reported).abs() < 1e-3,
            "{kind}: test L1 {loaded_l1:.5} from the saved model vs {reported:.5} in training"
        );

        // Save and load again: identical weights and outputs.
        let again = dir.path().join("again");
        decoder.save(&again).unwrap();
        assert_eq!(
            std::fs::read(out.join("weights.mpk")).unwrap(),
            std::fs::read(again.join("weights.mpk")).unwrap()
        );
        let reloaded = Decoder::<CpuBackend>::load(&again, &device).unwrap();
        let mut img2 = vec![0.0f32; img.len()];
        reloaded.reconstruct(&f, &mut img2).unwrap();
        assert_eq!(img, img2);
    }
}

/// --resume continues from the checkpoint: epochs 1–2 then 3–4 log what one run of
/// 4 epochs would have logged for its last two (same seed, same shuffles), and the
/// resumed run does not train epochs 1–2 again (a run that silently started over would
/// log the same numbers: the checkpoint's epoch 1 is marked to tell them apart).
#[test]
fn resume_continues_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let sim = tiny_dataset(dir.path());
    let out = dir.path().join("resumed");
    let mut opts = options(&sim, &out, DecoderKind::EndToEnd, 2);
    opts.pool_size = 0; // the pool is not part of a checkpoint
    train::train::<CpuTrainBackend>(&opts, &Default::default()).unwrap();
    // Mark epoch 1 in the checkpoint: only a run that starts from the checkpoint keeps it.
    let state_path = out.join("checkpoint/state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    const MARK: f64 = 123.0;
    state["epochs"][0]["g_pixel_l1"] = MARK.into();
    std::fs::write(&state_path, state.to_string()).unwrap();
    opts.epochs = 4;
    opts.resume = true;
    let resumed = train::train::<CpuTrainBackend>(&opts, &Default::default()).unwrap();
    assert_eq!(resumed.epochs.len(), 4);
    assert_eq!(
        resumed.epochs[0].g_pixel_l1, MARK,
        "epoch 1 was trained again instead of read from the checkpoint"
    );
    let mut straight = options(&sim, &dir.path().join("straight"), DecoderKind::EndToEnd, 4);
    straight.pool_size = 0;
    let straight = train::train::<CpuTrainBackend>(&straight, &Default::default()).unwrap();
    // Epochs 3–4 were trained from the checkpoint's weights and optimiser state: the same
    // losses as the uninterrupted run's (a fresh network would not give them).
    for (a, b) in resumed.epochs.iter().zip(&straight.epochs).skip(1) {
        assert!(
            (a.g_pixel_l1 - b.g_pixel_l1).abs() < 1e-4 * b.g_pixel_l1.max(1e-3) + 1e-5,
            "epoch {}: resumed {:.6} vs straight {:.6}",
            a.epoch,
            a.g_pixel_l1,
            b.g_pixel_l1
        );
    }
    // The RF layer (its own optimiser and state) resumed too: the learned centres match.
    let device = Default::default();
    let mu = |dir: &std::path::Path| -> Vec<f32> {
        let d = Decoder::<CpuBackend>::load(dir, &device).unwrap();
        let layer = d.model().gaussian.as_ref().unwrap();
        layer.mu_x.val().into_data().to_vec().unwrap()
    };
    let (a, b) = (mu(&out), mu(&dir.path().join("straight")));
    let start = Decoder::<CpuBackend>::load(&out, &device).unwrap();
    let initial = monkeysee::decoder::input::initial_rfs(start.config());
    assert!(
        a.iter().zip(&initial).any(|(m, i)| (m - i[0]).abs() > 1e-3),
        "the RF centres moved"
    );
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst < 1e-4,
        "learned RF centres differ by up to {worst} px between resumed and straight runs"
    );

    // Resuming with another objective is refused, naming what differs.
    opts.epochs = 5;
    opts.losses.pixel = 1.0;
    let e = train::train::<CpuTrainBackend>(&opts, &Default::default()).unwrap_err();
    assert!(e.to_string().contains("other loss weights"), "{e}");

    // And with the other engine, whose optimiser state it does not hold.
    opts.losses.pixel = LossWeights::default().pixel;
    opts.engine = EngineChoice::Burn;
    let e = train::train::<CpuTrainBackend>(&opts, &Default::default()).unwrap_err();
    assert!(e.to_string().contains("--engine host"), "{e}");
}

/// The CPU engine and Burn's autodiff train the same networks on the same batches with the
/// same random draws: their per-epoch losses agree to float rounding (1e-5 after the first
/// epoch; rounding differences then grow through Adam and the adversarial game, 1e-3 after
/// the second), for a fixed-RF and a learned-input decoder (whose layer the CPU engine
/// leaves to Burn).
#[test]
fn the_cpu_engine_trains_as_burns_autodiff_does() {
    let dir = tempfile::tempdir().unwrap();
    let sim = tiny_dataset(dir.path());
    for kind in [DecoderKind::Spatial, DecoderKind::EndToEnd] {
        let run = |engine: EngineChoice| {
            let mut opts = options(
                &sim,
                &dir.path().join(format!("{kind}-{engine:?}")),
                kind,
                2,
            );
            opts.engine = engine;
            opts.checkpoint_every = 0;
            train::train::<CpuTrainBackend>(&opts, &Default::default()).unwrap()
        };
        let (host, burn) = (run(EngineChoice::Host), run(EngineChoice::Burn));
        for (a, b) in host.epochs.iter().zip(&burn.epochs) {
            for (what, x, y) in [
                ("D", a.d.unwrap(), b.d.unwrap()),
                (
                    "G adversarial",
                    a.g_adversarial.unwrap(),
                    b.g_adversarial.unwrap(),
                ),
                ("pixel L1", a.g_pixel_l1, b.g_pixel_l1),
                (
                    "test L1",
                    a.test_pixel_l1.unwrap(),
                    b.test_pixel_l1.unwrap(),
                ),
            ] {
                eprintln!(
                    "{kind} epoch {}: {what} {x:.6} (CPU engine) vs {y:.6} (Burn) rel {:.2e}",
                    a.epoch,
                    (x - y).abs() / y.abs().max(1e-2)
                );
                assert!(
                    (x - y).abs() < 2e-3 * y.abs().max(1e-2),
                    "{kind} epoch {}: {what} {x:.6} (CPU engine) vs {y:.6} (Burn)",
                    a.epoch
                );
            }
        }
    }
}

/// A training run is a function of its seed: the same seed gives the same losses and a
/// model that reconstructs bit for bit the same images; another seed does not. (The
/// weight files themselves differ: Burn gives every parameter a random id.)
#[test]
fn training_is_deterministic_for_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let sim = tiny_dataset(dir.path());
    let ds = Dataset::open(&sim.out.join("dataset")).unwrap();
    let run = |name: &str, seed: u64| {
        let out = dir.path().join(name);
        let mut opts = options(&sim, &out, DecoderKind::EndToEnd, 2);
        opts.seed = seed;
        opts.checkpoint_every = 0;
        train::train::<CpuTrainBackend>(&opts, &Default::default()).unwrap();
        (
            std::fs::read_to_string(out.join("losses.csv")).unwrap(),
            first_trial_reconstruction(&out, &sim, &ds),
        )
    };
    let (losses, img) = run("a", 5);
    let again = run("b", 5);
    // Everything but the timing columns (seconds, samples/s).
    let columns = |csv: &str| -> Vec<String> {
        csv.lines()
            .map(|l| {
                l.split(',')
                    .enumerate()
                    .filter(|(i, _)| !matches!(i, 6 | 7))
                    .map(|(_, v)| v)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    };
    assert_eq!(
        columns(&losses),
        columns(&again.0),
        "same seed, different losses"
    );
    assert!(img == again.1, "same seed, different reconstructions");
    assert!(
        img != run("c", 6).1,
        "another seed, the same reconstruction"
    );
}

/// `--rf-start centroids`: the learned RF layer starts every electrode at its array's mean
/// RF, and the saved config says so (it is what eval measures recovery from).
/// `--validation` holds images out of training and logs their loss each epoch;
/// `--keep-best` saves the model of the epoch where that loss was lowest: the same model a
/// run stopped at that epoch saves (training is deterministic for a seed).
#[test]
fn keep_best_saves_the_epoch_with_the_lowest_validation_loss() {
    let dir = tempfile::tempdir().unwrap();
    let sim = tiny_dataset(dir.path());
    let ds = Dataset::open(&sim.out.join("dataset")).unwrap();
    let n_train = ds.split(false).len();
    let run = |name: &str, epochs: usize, keep_best: bool| {
        let out = dir.path().join(name);
        let mut opts = options(&sim, &out, DecoderKind::Spatial, epochs);
        opts.checkpoint_every = 0;
        opts.lr = 2e-2; // large steps, so the validation loss does not fall every epoch
        opts.validation = 4;
        opts.keep_best = keep_best;
        let summary = train::train::<CpuTrainBackend>(&opts, &Default::default()).unwrap();
        (summary, first_trial_reconstruction(&out, &sim, &ds))
    };
    let (best, best_img) = run("best", 5, true);
    assert_eq!(
        best.validation_trials, 4,
        "one presentation per training image"
    );
    assert_eq!(best.train_trials + best.validation_trials, n_train);
    let losses: Vec<f64> = best
        .epochs
        .iter()
        .map(|e| e.validation_pixel_l1.expect("logged every epoch"))
        .collect();
    let argmin = 1
        + (0..losses.len())
            .min_by(|&a, &b| losses[a].total_cmp(&losses[b]))
            .unwrap();
    assert_eq!(best.saved_epoch, argmin, "{losses:?}");
    let csv = std::fs::read_to_string(dir.path().join("best/losses.csv")).unwrap();
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .ends_with(",validation_pixel_l1"));
    let (stopped, stopped_img) = run("stopped", argmin, false);
    assert_eq!(stopped.saved_epoch, argmin);
    assert_eq!(best_img, stopped_img);
    if argmin < 5 {
        let (_, last_img) = run("last", 5, false);
        assert_ne!(best_img, last_img, "the last epoch's model differs");
    }

    // Without a validation set there is nothing to pick by.
    let mut opts = options(&sim, &dir.path().join("x"), DecoderKind::Spatial, 1);
    opts.keep_best = true;
    let err = train::train::<CpuTrainBackend>(&opts, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("--validation"), "{err}");
}

#[test]
fn rf_layers_can_start_at_array_centroids() {
    let dir = tempfile::tempdir().unwrap();
    let sim = tiny_dataset(dir.path());
    let out = dir.path().join("centroids");
    let mut opts = options(&sim, &out, DecoderKind::EndToEnd, 1);
    opts.rf_start = RfStart::Centroids;
    opts.checkpoint_every = 0;
    train::train::<CpuTrainBackend>(&opts, &Default::default()).unwrap();
    let config = Decoder::<CpuBackend>::load(&out, &Default::default())
        .unwrap()
        .config()
        .clone();
    for a in 0..config.n_arrays {
        let rfs: Vec<[f32; 3]> = config
            .electrodes
            .iter()
            .filter(|e| e.array == a)
            .filter_map(|e| e.rf_px)
            .collect();
        assert!(rfs.len() > 1, "array {a}");
        assert!(rfs.iter().all(|rf| rf == &rfs[0]), "array {a}: {rfs:?}");
    }
}

/// Training on a dataset recorded with other channels fails, saying which.
#[test]
fn a_dataset_that_does_not_fit_the_rig_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sim = tiny_dataset(dir.path());
    // The 1024-channel dataset against a rig that declares 960 channels.
    let mut opts = options(&sim, &dir.path().join("m"), DecoderKind::EndToEnd, 1);
    let mut rig = sim.rig.clone();
    rig.channel_count = 960;
    opts.rig = Some(rig);
    let e = format!(
        "{:#}",
        train::train::<CpuTrainBackend>(&opts, &Default::default()).unwrap_err()
    );
    assert!(e.contains("1024 channels") && e.contains("960"), "{e}");
}

/// The learned RF layer's gradients pull each μ toward the true RF: fit the layer's
/// output to maps made by Gaussians at the true positions.
#[test]
fn gaussian_rf_gradients_move_mu_toward_the_truth() {
    type B = CpuTrainBackend;
    let device = Default::default();
    let size = 32;
    let truth = [[10.0f32, 12.0, 3.0], [22.0, 9.0, 2.5], [16.0, 24.0, 4.0]];
    let start = [[13.0f32, 15.0, 3.0], [19.0, 12.0, 2.5], [19.5, 20.0, 4.0]];
    let config = |rfs: &[[f32; 3]; 3]| DecoderConfig {
        kind: DecoderKind::EndToEnd,
        width: 4,
        levels: monkeysee::decoder::arch::DEFAULT_LEVELS.to_vec(),
        image_size: size,
        n_arrays: 1,
        windows_per_electrode: 1,
        window_names: vec!["V1 [0, 133)".into()],
        electrodes: rfs
            .iter()
            .map(|&rf| ElectrodeSpec {
                array: 0,
                area: 0,
                rf_px: Some(rf),
            })
            .collect(),
        linear_pathway: None,
        channel_per_electrode: false,
        input_scale: 1.0,
    };
    let target_layer = GaussianRfLayer::<B>::new(&config(&truth), &device);
    let mut layer = GaussianRfLayer::<B>::new(&config(&start), &device);
    // Responses: each electrode alone, so the maps separate.
    let r = Tensor::<B, 2>::from_data(
        TensorData::new(vec![1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], [3, 3]),
        &device,
    );
    let target = target_layer.forward(r.clone()).detach();
    let dist = |l: &GaussianRfLayer<B>| -> Vec<f32> {
        let x: Vec<f32> = l.mu_x.val().into_data().to_vec().unwrap();
        let y: Vec<f32> = l.mu_y.val().into_data().to_vec().unwrap();
        (0..3)
            .map(|e| ((x[e] - truth[e][0]).powi(2) + (y[e] - truth[e][1]).powi(2)).sqrt())
            .collect()
    };
    let before = dist(&layer);
    let mut opt = AdamConfig::new().init::<B, GaussianRfLayer<B>>();
    for _ in 0..150 {
        let loss = (layer.forward(r.clone()) - target.clone())
            .powi_scalar(2)
            .mean();
        let grads = GradientsParams::from_grads(loss.backward(), &layer);
        layer = opt.step(0.1, layer, grads);
    }
    let after = dist(&layer);
    for e in 0..3 {
        assert!(
            after[e] < 0.25 * before[e],
            "electrode {e}: distance to the true RF {:.2} → {:.2} px",
            before[e],
            after[e]
        );
    }
}

/// The training BatchNorm without broadcasting ops computes what Burn's BatchNorm does:
/// output, input gradient and running statistics.
#[test]
fn fast_batch_norm_matches_burns() {
    use burn::nn::BatchNormConfig;
    use monkeysee::decoder::unet::batch_norm;
    type B = CpuTrainBackend;
    let device = Default::default();
    // Two separate layers (a clone would share its running state).
    let layer = || {
        let mut bn = BatchNormConfig::new(5).init::<B>(&device);
        bn.gamma = burn::module::Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![0.5f32, 1.0, 1.5, 2.0, -1.0], [5]),
            &device,
        ));
        bn.beta = burn::module::Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![0.1f32, -0.2, 0.0, 0.3, 1.0], [5]),
            &device,
        ));
        bn
    };
    let values: Vec<f32> = (0..3 * 5 * 4 * 6)
        .map(|i| ((i * 7919) % 101) as f32 / 25.0 - 2.0)
        .collect();
    let x = || {
        Tensor::<B, 4>::from_data(TensorData::new(values.clone(), [3, 5, 4, 6]), &device)
            .require_grad()
    };
    let (xa, xb) = (x(), x());
    let (ours, burns) = (layer(), layer());
    let a = batch_norm(&ours, xa.clone());
    let b = burns.forward(xb.clone());
    let weights = Tensor::<B, 4>::from_data(
        TensorData::new(
            (0..360).map(|i| (i % 7) as f32 - 3.0).collect::<Vec<f32>>(),
            [3, 5, 4, 6],
        ),
        &device,
    );
    let ga = (a.clone() * weights.clone()).sum().backward();
    let gb = (b.clone() * weights).sum().backward();
    let close = |p: Vec<f32>, q: Vec<f32>, what: &str| {
        let worst = p
            .iter()
            .zip(&q)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{what}: max difference {worst}");
    };
    close(
        a.into_data().to_vec().unwrap(),
        b.into_data().to_vec().unwrap(),
        "output",
    );
    close(
        xa.grad(&ga).unwrap().into_data().to_vec().unwrap(),
        xb.grad(&gb).unwrap().into_data().to_vec().unwrap(),
        "input gradient",
    );
    close(
        ours.gamma.grad(&ga).unwrap().into_data().to_vec().unwrap(),
        burns.gamma.grad(&gb).unwrap().into_data().to_vec().unwrap(),
        "gamma gradient",
    );
    close(
        ours.running_mean.value().into_data().to_vec().unwrap(),
        burns.running_mean.value().into_data().to_vec().unwrap(),
        "running mean",
    );
    close(
        ours.running_var.value().into_data().to_vec().unwrap(),
        burns.running_var.value().into_data().to_vec().unwrap(),
        "running var",
    );
}

/// `eval` on a trained model: metrics.json with the documented fields, chance from
/// shuffled pairs, identification, the linear decoders beside the model, RF recovery
/// against the simulator's truth, and the grid image.
#[test]
fn eval_writes_metrics_and_a_grid() {
    let dir = tempfile::tempdir().unwrap();
    let sim = tiny_dataset(dir.path());
    let model = dir.path().join("e2e");
    let mut opts = options(&sim, &model, DecoderKind::EndToEnd, 2);
    opts.checkpoint_every = 0;
    train::train::<CpuTrainBackend>(&opts, &Default::default()).unwrap();
    let out = dir.path().join("eval");
    let eval_opts = monkeysee::eval::EvalOptions {
        models: vec![model.clone()],
        data: sim.out.join("dataset"),
        rig: Some(sim.rig.clone()),
        out: out.clone(),
        grid_images: 4,
        rf_truth: None,
        report: false,
        alexnet: None,
        progress: false,
        train_trials: None,
        curve: None,
    };
    let report = monkeysee::eval::eval(&eval_opts).unwrap();
    let m = report.get("e2e").unwrap();
    let s = &m.scores;
    assert_eq!(s.n_images, 2);
    assert_eq!(s.single_trials, 4);
    assert!((-1.0..=1.0).contains(&s.pixel_r) && (-1.0..=1.0).contains(&s.pixel_r_chance));
    assert!(s.ssim.is_finite() && s.ssim_chance.is_finite());
    assert!((0.0..=1.0).contains(&s.ident_top1) && (0.0..=1.0).contains(&s.ident_2way));
    assert_eq!((s.ident_top1_chance, s.ident_2way_chance), (0.5, 0.5));
    // Trained from the true RF table: recovery starts (and, two epochs later, stays) near r = 1.
    let rf = m
        .rf_recovery
        .as_ref()
        .expect("rf-truth.csv beside the dataset");
    for area in ["V1", "V4", "IT"] {
        let r = &rf[area];
        assert!(r.initial_r_x > 0.99 && r.r_x > 0.9, "{area}: {r:?}");
        // Two epochs at rf_lr 0.01 px/step move the centres, but by well under a degree.
        assert!(
            r.mean_shift_deg > 0.0 && r.mean_shift_deg < 0.5,
            "{area}: {r:?}"
        );
        assert!((0.0..=1.0).contains(&r.fraction_closer), "{area}: {r:?}");
        assert!(
            r.null_fraction_closer <= r.null_fraction_closer_p95,
            "{area}: {r:?}"
        );
    }
    // The linear decoders, fitted on the train split, beside the model.
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    for name in ["linear", "linear_V1", "linear_V4", "linear_IT"] {
        let l = report
            .get(name)
            .unwrap_or_else(|| panic!("no {name} entry"));
        assert_eq!(l.kind, "linear");
        assert_eq!(l.scores.n_images, 2);
        let info = l.linear.as_ref().unwrap();
        assert_eq!(info.train_trials, 18);
        assert!(info.lambda > 0.0 && !info.path.is_empty(), "{info:?}");
    }
    let electrodes = |name: &str| {
        report
            .get(name)
            .unwrap()
            .linear
            .as_ref()
            .unwrap()
            .electrodes
    };
    assert_eq!(
        electrodes("linear"),
        electrodes("linear_V1") + electrodes("linear_V4") + electrodes("linear_IT")
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    for entry in ["e2e", "linear", "linear_IT"] {
        for key in [
            "pixel_r",
            "pixel_r_chance",
            "ssim",
            "ssim_chance",
            "ident_top1",
            "ident_top1_chance",
            "ident_2way",
            "ident_2way_chance",
            "n_images",
            "single_trial_pixel_r",
            "single_trial_ident_top1",
        ] {
            assert!(
                json[entry][key].is_number(),
                "metrics.json: {entry} lacks {key}"
            );
        }
    }
    let grid = image::open(out.join("grid.png")).unwrap();
    assert!(
        grid.width() >= 3 * 2 * 32 && grid.height() >= 2 * 2 * 32,
        "three columns (stimulus, model, linear), two rows"
    );

    // A dataset of test images only: the model is still scored, the linear decoder is
    // left out with a note.
    let mut only = sim.clone();
    only.images = ImageSource::parse("procedural:3", &only.config.leaves, 8).unwrap();
    only.test_images = 3;
    only.out = dir.path().join("test-only");
    sim::simulate(&only).unwrap();
    let report = monkeysee::eval::eval(&monkeysee::eval::EvalOptions {
        data: only.out.join("dataset"),
        out: dir.path().join("eval-test-only"),
        ..eval_opts
    })
    .unwrap();
    assert_eq!(report.entries.len(), 1);
    assert_eq!(report.entries[0].scores.n_images, 3);
    assert!(
        report.notes[0].contains("no train split"),
        "{:?}",
        report.notes
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("eval-test-only/metrics.json")).unwrap(),
    )
    .unwrap();
    assert!(
        json["linear"].is_null() && json["notes"][0].is_string(),
        "{json}"
    );
}

/// With `--vgg-weights` the perceptual term joins the generator's loss, falls as the
/// generator fits, and is logged (the tiny torchvision-layout VGG19 of the fixture).
#[test]
fn training_with_the_vgg_loss_lowers_and_logs_it() {
    let dir = tempfile::tempdir().unwrap();
    let sim = tiny_dataset(dir.path());
    let out = dir.path().join("model");
    let mut opts = options(&sim, &out, DecoderKind::EndToEnd, 20);
    opts.max_trials = Some(4);
    opts.checkpoint_every = 0;
    opts.vgg_weights = Some(super::common::repo().join("tests/fixtures/vgg19-tiny/vgg19-tiny.pth"));
    opts.vgg_size = 48; // the 32 px images are resized, as 96 → 224 in the method
                        // The VGG term alone: it can only fall if its gradient reaches the generator.
    opts.losses = LossWeights {
        pixel: 0.0,
        adversarial: 0.0,
        vgg: 1.0,
    };
    let summary = train::train::<CpuTrainBackend>(&opts, &Default::default()).unwrap();
    let first = summary.epochs[0].g_vgg.unwrap();
    let last = summary.epochs.last().unwrap().g_vgg.unwrap();
    assert!(
        last.is_finite() && last < 0.9 * first,
        "VGG L1 {first:.4} → {last:.4}"
    );
    let csv = std::fs::read_to_string(out.join("losses.csv")).unwrap();
    assert!(
        csv.starts_with("epoch,d,g_adversarial,g_pixel_l1,g_vgg,"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 21);
    assert!(csv
        .lines()
        .skip(1)
        .all(|l| !l.split(',').nth(4).unwrap().is_empty()));

    // Without the weights the column stays empty.
    opts.vgg_weights = None;
    opts.epochs = 1;
    let summary = train::train::<CpuTrainBackend>(&opts, &Default::default()).unwrap();
    assert_eq!(summary.epochs[0].g_vgg, None);
}
