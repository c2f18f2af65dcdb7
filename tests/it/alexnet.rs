//! The AlexNet feature correlation against torch: `tools/make-alexnet-fixture.py` saved
//! a reduced-width AlexNet with torchvision (legacy and zip `.pth`, like the real
//! `alexnet-owt-*.pth`), test images and reconstructions, torch's eight layers (sliced
//! as the MonkeySee authors' notebook slices them) at 64, 160 and 224 px, and the
//! per-layer r and MSE at 224 px.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};

use monkeysee::alexnet::{AlexNet, AlexNetWidths, Features, ALEXNET_WIDTHS, LAYERS};
use monkeysee::decoder::CpuBackend;

use super::common::repo;

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/alexnet-tiny").join(name)
}

fn npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let f = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = f.shape().iter().map(|&d| d as usize).collect();
    (shape, f.into_vec::<f32>().unwrap())
}

/// `[n, 3, side, side]` images from a `.npy`, one `Vec` per image.
fn images(path: &Path) -> (usize, Vec<Vec<f32>>) {
    let (shape, v) = npy(path);
    let side = shape[2];
    let per = 3 * side * side;
    (side, v.chunks(per).map(|c| c.to_vec()).collect())
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

/// torch's per-layer r and MSE from `correlations.json`.
fn torch_correlations(dir: &Path) -> (usize, Vec<(String, f64, f64)>) {
    let text = std::fs::read_to_string(dir.join("correlations.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let layers = json["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["layer"].as_str().unwrap().to_string(),
                l["r"].as_f64().unwrap(),
                l["mse"].as_f64().unwrap(),
            )
        })
        .collect();
    (json["input_size"].as_u64().unwrap() as usize, layers)
}

/// Loads `weights` and compares every layer's activations at each of `sizes`, and the
/// per-layer r and MSE, with torch's values in `reference`. Returns the widths read.
fn check_against_torch(
    weights: &Path,
    reference: &Path,
    sizes: &[usize],
    tolerance: f32,
) -> AlexNetWidths {
    let device = Default::default();
    let what = weights.display();
    let net = AlexNet::<CpuBackend>::load(weights, &device).unwrap();
    let (side, originals) = images(&reference.join("originals.npy"));
    let (_, recons) = images(&reference.join("recons.npy"));

    for &size in sizes {
        let (shape, _) = npy(&reference.join(format!("act-{size}-conv1.npy")));
        let n = shape[0];
        let data: Vec<f32> = originals[..n].iter().flatten().copied().collect();
        let x = Tensor::from_data(TensorData::new(data, [n, 3, side, side]), &device);
        let layers = net.activations(x, size);
        assert_eq!(layers.len(), LAYERS.len());
        for (layer, name) in layers.into_iter().zip(LAYERS) {
            let (shape, want) = npy(&reference.join(format!("act-{size}-{name}.npy")));
            assert_eq!(layer.dims().to_vec(), shape, "{what} {size} px {name}");
            let got = layer.into_data().to_vec::<f32>().unwrap();
            let e = rel_err(&got, &want);
            eprintln!("{what} {size} px {name}: relative error {e:.2e}");
            assert!(e < tolerance, "{what} {size} px {name}: relative error {e}");
        }
    }

    let (input_size, want) = torch_correlations(reference);
    let kept = Features::at(&net, &recons, side, input_size, &device)
        .unwrap()
        .correlations(&Features::at(&net, &originals, side, input_size, &device).unwrap());
    assert_eq!(kept.len(), want.len());
    for (g, (layer, r, mse)) in kept.iter().zip(&want) {
        assert_eq!(&g.layer, layer);
        let (dr, dmse) = ((g.r - r).abs(), (g.mse - mse).abs() / mse);
        eprintln!(
            "{what} {layer}: r {:.6} (torch {r:.6}, |Δ| {dr:.1e}), mse {:.6} (relative Δ {dmse:.1e})",
            g.r, g.mse
        );
        assert!(
            dr < tolerance as f64,
            "{what} {layer}: r {} vs torch {r}",
            g.r
        );
        assert!(
            dmse < tolerance as f64,
            "{what} {layer}: mse {} vs torch {mse}",
            g.mse
        );
    }
    net.widths()
}

/// Every layer's activations, and the pooled r and MSE, equal torch's, from both file
/// formats, at 64 px (conv5 pooled to 1 px: the adaptive pool replicates it), 160 px
/// (4 px: windows of one and two pixels) and 224 px (6 px: the identity).
#[test]
fn alexnet_layers_and_correlations_match_torch() {
    for file in ["alexnet-tiny.pth", "alexnet-tiny-legacy.pth"] {
        let widths = check_against_torch(&fixture(file), &fixture(""), &[64, 160, 224], 1e-4);
        assert_eq!(
            widths,
            AlexNetWidths {
                conv: [4, 8, 8, 8, 8],
                fc: [16, 16, 10]
            },
            "{file}"
        );
    }
}

/// A full-size AlexNet file (e.g. torchvision's alexnet-owt-7be5be79.pth) against
/// torch at 224 px: `python3 tools/make-alexnet-fixture.py --reference FILE.pth DIR`,
/// then `MONKEYSEE_ALEXNET_REF=DIR cargo test --release --test tests alexnet_file -- --ignored`.
#[test]
#[ignore = "needs an AlexNet file and torch's reference values (MONKEYSEE_ALEXNET_REF)"]
fn alexnet_file_matches_torch() {
    let dir = PathBuf::from(
        std::env::var("MONKEYSEE_ALEXNET_REF")
            .expect("MONKEYSEE_ALEXNET_REF=DIR from make-alexnet-fixture.py --reference"),
    );
    let weights = std::fs::read_to_string(dir.join("weights.txt")).unwrap();
    let widths = check_against_torch(Path::new(weights.trim()), &dir, &[224], 1e-3);
    assert_eq!(widths, ALEXNET_WIDTHS);
}

/// Files that are not torchvision's AlexNet are refused with a message that says so.
#[test]
fn wrong_alexnet_files_are_refused() {
    let device = Default::default();
    let err = |p: &Path| format!("{:#}", AlexNet::<CpuBackend>::load(p, &device).unwrap_err());
    let vgg = repo().join("tests/fixtures/vgg19-tiny");

    let e = err(&vgg.join("vgg19-tiny.pth"));
    assert!(
        e.contains("AlexNet") && e.contains("16 convolutions") && e.contains("looks like VGG"),
        "{e}"
    );

    let e = err(&vgg.join("checkpoint-tiny.pth"));
    assert!(
        e.contains("0 tensors") && e.contains("nested under `model.`"),
        "{e}"
    );

    super::common::assert_unopenable_pth_files_are_refused(err);

    // Cut in half, and by the last byte only.
    for (file, keep) in [
        ("alexnet-tiny.pth", 0.5),
        ("alexnet-tiny-legacy.pth", 0.5),
        ("alexnet-tiny-legacy.pth", 1.0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let truncated = dir.path().join(format!("truncated-{file}"));
        let full = std::fs::read(fixture(file)).unwrap();
        let len = ((full.len() as f64 * keep) as usize).min(full.len() - 1);
        std::fs::write(&truncated, &full[..len]).unwrap();
        let e = err(&truncated);
        assert!(e.contains("AlexNet"), "{file}: {e}");
        if file.contains("legacy") {
            // The pickle is whole, the tensor data is not.
            assert!(e.contains("cut short"), "{file}: {e}");
        } else {
            assert!(e.contains("not a readable PyTorch file"), "{file}: {e}");
        }
    }
}
