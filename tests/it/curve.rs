use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use monkeysee::eval::curve::Curve;
use monkeysee::sim::{self, DatasetForm, ImageSource, SimConfig, SimOptions};

use super::common::small_rig;

const EPOCHS: usize = 12;

/// A TW-15 dataset of 40 training images and 4 test images × 2.
fn dataset(dir: &Path) -> SimOptions {
    let rig = small_rig(dir);
    let config = SimConfig::default();
    let opts = SimOptions {
        images: ImageSource::parse("procedural:44", &config.leaves, 4).unwrap(),
        rig,
        config,
        out: dir.join("sim"),
        seed: 4,
        animal_seed: 1,
        test_images: 4,
        repeats: 2,
        rf_jitter_deg: 0.0,
        broadband: false,
        progress: false,
    };
    sim::simulate_dataset(&opts, DatasetForm::Windows).unwrap();
    opts
}

fn curve_command(sim: &SimOptions, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_monkeysee"));
    let epochs = EPOCHS.to_string();
    cmd.args(["learning-curve", "--rig"])
        .arg(&sim.rig.path)
        .arg("--data")
        .arg(sim.out.join("dataset"))
        .arg("--out")
        .arg(out)
        .args(["--sizes", "40,20", "--kinds", "spatial", "--width", "4"])
        .args(["--disc-width", "4", "--batch", "4", "--epochs", &epochs])
        .args(["--threads", "1", "--quiet"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn write_json(path: &Path, value: &serde_json::Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
}

/// A learning curve killed in its second training goes on with `--resume`: the finished
/// step is not trained or scored again (marks put into its files survive), and the
/// killed training continues from its checkpoint (its first epoch's logged loss, marked
/// in the checkpoint, is still in the finished log: a run that started over would have
/// logged it again). The curve has every kind and the linear decoder at both sizes,
/// each trained or fitted on that many images; a changed setting or a missing
/// `--resume` is refused.
#[test]
fn a_killed_curve_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dataset(dir.path());
    let out = dir.path().join("curve");

    // Kill the run once the 40-image training has checkpointed its second epoch.
    let mut child = curve_command(&sim, &out, &[]).spawn().unwrap();
    let state_path = out.join("n40/spatial/checkpoint/state.json");
    let started = Instant::now();
    loop {
        let next = read_json(&state_path).and_then(|s| s["next_epoch"].as_u64());
        if next.is_some_and(|n| n >= 2) {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let err = child.wait_with_output().unwrap().stderr;
            panic!(
                "the curve ended ({status}) before it could be killed: {}",
                String::from_utf8_lossy(&err)
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no checkpoint in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !out.join("n40/spatial/training.json").exists(),
        "the 40-image training finished before the kill: raise EPOCHS"
    );
    assert!(!out.join("curve.json").exists() || read_json(&out.join("curve.json")).is_some());

    // Marks: the checkpoint's first epoch, and the finished step's scores.
    const MARK: f64 = 123.0;
    let mut state = read_json(&state_path).unwrap();
    state["epochs"][0]["g_pixel_l1"] = MARK.into();
    write_json(&state_path, &state);
    let points_path = out.join("n20/points.json");
    let mut points = read_json(&points_path).expect("the 20-image step was scored");
    let linear = (points.as_array_mut().unwrap().iter_mut())
        .find(|p| p["kind"] == "linear")
        .unwrap();
    linear["ssim"] = MARK.into();
    write_json(&points_path, &points);

    // Not without --resume, nor with another setting.
    for extra in [&[][..], &["--resume", "--lr", "0.001"][..]] {
        let refused = curve_command(&sim, &out, extra).output().unwrap();
        assert!(!refused.status.success());
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(
            err.contains("--resume") && err.contains(&out.display().to_string()),
            "{err}"
        );
    }

    let resumed = curve_command(&sim, &out, &["--resume"]).output().unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let log = &read_json(&out.join("n40/spatial/training.json")).unwrap()["summary"];
    let epochs = log["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), EPOCHS);
    assert_eq!(
        epochs[0]["g_pixel_l1"], MARK,
        "the killed training started over"
    );
    assert_eq!(log["train_trials"], 40);

    let curve = Curve::load(&out.join("curve.json")).unwrap();
    assert_eq!(curve.sizes, vec![20, 40]);
    assert_eq!(curve.test_images, 4);
    for kind in ["spatial", "linear"] {
        for n in [20, 40] {
            let p = (curve.points.iter())
                .find(|p| p.kind == kind && p.images == n)
                .unwrap_or_else(|| panic!("no {kind} point at {n}"));
            assert!((-1.0..=1.0).contains(&p.pixel_r), "{p:?}");
            assert!((0.0..=1.0).contains(&p.ident_top1), "{p:?}");
            let m = read_json(&out.join(format!("n{n}/eval/metrics.json"))).unwrap();
            if kind == "linear" {
                assert_eq!(m["linear"]["linear"]["train_trials"], n);
                assert_eq!(p.ssim == MARK, n == 20, "{p:?}");
            } else {
                assert_eq!(p.epochs, Some(EPOCHS));
                assert_eq!(m["spatial"]["pixel_r"], p.pixel_r);
                let trained = read_json(&out.join(format!("n{n}/spatial/training.json")));
                assert_eq!(trained.unwrap()["summary"]["train_trials"], n);
            }
        }
    }
    assert_eq!(curve.margins().len(), 2);
    if monkeysee::plot::have_font() {
        assert!(out.join("curve.png").exists());
    }
    let table = String::from_utf8_lossy(&resumed.stdout);
    assert!(table.contains("best decoder minus linear"), "{table}");
}
