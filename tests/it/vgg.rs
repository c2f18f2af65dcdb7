//! The VGG19 perceptual loss against torch: `tools/make-vgg-fixture.py` saved a
//! reduced-width VGG19 with torchvision (legacy and zip `.pth`, like the real
//! `vgg19-dcbb9e9d.pth`) and torch's features, loss and input gradient for two
//! image batches.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};

use monkeysee::decoder::{CpuBackend, CpuTrainBackend};
use monkeysee::train::vgg::{PerceptualLoss, Vgg19, TAP_NAMES};

use super::common::repo;

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/vgg19-tiny").join(name)
}

fn npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let f = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = f.shape().iter().map(|&d| d as usize).collect();
    (shape, f.into_vec::<f32>().unwrap())
}

fn tensor<B: burn::tensor::backend::Backend>(path: &Path) -> Tensor<B, 4> {
    let (shape, v) = npy(path);
    Tensor::from_data(
        TensorData::new(v, [shape[0], shape[1], shape[2], shape[3]]),
        &Default::default(),
    )
}

/// Largest |a − b| relative to the largest |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// Loads `weights` and compares features, loss and input gradient at `size` px with
/// torch's values in `reference` (written by `tools/make-vgg-fixture.py`).
fn check_against_torch(
    weights: &Path,
    reference: &Path,
    size: usize,
    tolerance: f32,
) -> [usize; 5] {
    let device = Default::default();
    let what = weights.display();
    let vgg = Vgg19::<CpuBackend>::load(weights, &device).unwrap();
    let widths = vgg.widths();
    let side = npy(&reference.join("fake.npy")).0[2];
    let loss = PerceptualLoss::new(vgg, side, size, &device).unwrap();
    let taps = loss
        .vgg()
        .taps(loss.prepare(tensor(&reference.join("fake.npy"))));
    for (tap, name) in taps.into_iter().zip(TAP_NAMES) {
        let (shape, want) = npy(&reference.join(format!("tap-{name}.npy")));
        assert_eq!(tap.dims().to_vec(), shape, "{what} {name}");
        let got = tap.into_data().to_vec::<f32>().unwrap();
        let e = rel_err(&got, &want);
        assert!(e < tolerance, "{what} {name}: relative error {e}");
    }
    let value: f32 = loss
        .forward(
            tensor(&reference.join("fake.npy")),
            tensor(&reference.join("real.npy")),
        )
        .into_scalar();
    let want = npy(&reference.join("loss.npy")).1[0];
    assert!(
        (value - want).abs() < tolerance * want,
        "{what}: loss {value} vs torch {want}"
    );

    // The gradient reaching the generator's output.
    let vgg = Vgg19::<CpuTrainBackend>::load(weights, &device).unwrap();
    let loss = PerceptualLoss::new(vgg, side, size, &device).unwrap();
    let fake = tensor::<CpuTrainBackend>(&reference.join("fake.npy")).require_grad();
    let grads = loss
        .forward(fake.clone(), tensor(&reference.join("real.npy")))
        .backward();
    let got = fake
        .grad(&grads)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    // Correlation, not the largest error: the L1 loss's sign flips on near-equal
    // features make single elements chaotic (torch's own float32 gradient of a
    // full-size VGG19 differs from its float64 one by 8 % of the largest element,
    // at r = 0.99999).
    let want = npy(&reference.join("grad.npy")).1;
    let r = monkeysee::eval::pearson(&got, &want);
    assert!(
        r > 1.0 - tolerance as f64,
        "{what}: gradient correlation {r}"
    );
    // ... and the scale: the least-squares slope of ours on torch's.
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum::<f64>();
    let slope = dot(&got, &want) / dot(&want, &want);
    assert!(
        (slope - 1.0).abs() < 10.0 * tolerance as f64,
        "{what}: gradient slope {slope}"
    );
    widths
}

/// Features, loss and gradient equal torch's, from both file formats.
#[test]
fn vgg19_features_loss_and_gradient_match_torch() {
    for file in ["vgg19-tiny.pth", "vgg19-tiny-legacy.pth"] {
        let widths = check_against_torch(&fixture(file), &fixture(""), 32, 1e-4);
        assert_eq!(widths, [4, 8, 8, 16, 16], "{file}");
    }
}

/// A full-size VGG19 file (e.g. torchvision's vgg19-dcbb9e9d.pth) against torch at
/// 224 px: `python3 tools/make-vgg-fixture.py --reference FILE.pth DIR`, then
/// `MONKEYSEE_VGG19_REF=DIR cargo test --release --test tests vgg19_file -- --ignored`.
#[test]
#[ignore = "needs a VGG19 file and torch's reference values (MONKEYSEE_VGG19_REF)"]
fn vgg19_file_matches_torch() {
    let dir = PathBuf::from(
        std::env::var("MONKEYSEE_VGG19_REF")
            .expect("MONKEYSEE_VGG19_REF=DIR from make-vgg-fixture.py --reference"),
    );
    let weights = std::fs::read_to_string(dir.join("weights.txt")).unwrap();
    let widths = check_against_torch(Path::new(weights.trim()), &dir, 224, 1e-3);
    assert_eq!(widths, monkeysee::train::vgg::VGG19_WIDTHS);
}

/// The VGG19 weights are frozen: the loss's gradient does not reach them.
#[test]
fn vgg19_weights_get_no_gradient() {
    use burn::module::Module;
    let device = Default::default();
    let vgg = Vgg19::<CpuTrainBackend>::load(&fixture("vgg19-tiny.pth"), &device).unwrap();
    let loss = PerceptualLoss::new(vgg, 24, 32, &device).unwrap();
    let fake = tensor::<CpuTrainBackend>(&fixture("fake.npy")).require_grad();
    let mut grads = loss.forward(fake, tensor(&fixture("real.npy"))).backward();
    let params = burn::optim::GradientsParams::from_module(&mut grads, loss.vgg());
    assert!(
        params.is_empty(),
        "{} VGG parameters got gradients",
        params.len()
    );
    assert!(
        loss.vgg().num_params() > 20_000,
        "the VGG has its parameters"
    );
}

/// Files that are not torchvision's VGG19 are refused with a message that says so.
#[test]
fn wrong_vgg_files_are_refused() {
    let device = Default::default();
    let err = |p: &Path| format!("{:#}", Vgg19::<CpuBackend>::load(p, &device).unwrap_err());
    let e = err(&fixture("vgg16-tiny.pth"));
    assert!(e.contains("VGG19") && e.contains("26 tensors"), "{e}");

    let e = err(&fixture("checkpoint-tiny.pth"));
    assert!(
        e.contains("0 tensors") && e.contains("nested under `model.`"),
        "{e}"
    );

    super::common::assert_unopenable_pth_files_are_refused(err);

    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.pth");
    let full = std::fs::read(fixture("vgg19-tiny.pth")).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let e = err(&truncated);
    assert!(e.contains("not a readable PyTorch file"), "{e}");

    // A legacy-format file cut short: burn-store would read the missing bytes as zeros.
    let legacy = std::fs::read(fixture("vgg19-tiny-legacy.pth")).unwrap();
    for keep in [legacy.len() / 2, legacy.len() * 3 / 4] {
        std::fs::write(&truncated, &legacy[..keep]).unwrap();
        let e = err(&truncated);
        assert!(
            e.contains("cut short"),
            "{keep} of {} bytes: {e}",
            legacy.len()
        );
    }

    // Sides VGG19 cannot take.
    let vgg = Vgg19::<CpuBackend>::load(&fixture("vgg19-tiny.pth"), &device).unwrap();
    let e = PerceptualLoss::new(vgg, 24, 16, &device).unwrap_err();
    assert!(e.to_string().contains("at least 32"), "{e}");
}
