//! The `monkeysee` binary refuses bad flags with a message naming the flag, before it
//! connects to anything or reads a file, instead of panicking later.

use std::process::Command;

use super::common::{repo, synthetic_rig_path};

/// Runs the binary; returns its exit code and stderr.
fn monkeysee(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_monkeysee"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_refused(args: &[&str], flag: &str, message: &str) {
    let (code, stderr) = monkeysee(args);
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(
        matches!(code, Some(1 | 2)),
        "{args:?}: exit {code:?}, {stderr}"
    );
    assert!(stderr.contains(flag), "{args:?}: {stderr}");
    assert!(stderr.contains(message), "{args:?}: {stderr}");
}

/// `run` with random weights and headless output: flags that pass parsing.
fn run_args<'a>(rig: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--rig",
        rig,
        "--random-weights",
        "--headless",
        "--out",
        out,
        "--quiet",
    ]
}

#[test]
fn run_refuses_a_resolve_timeout_that_is_not_a_positive_number_of_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let rig = synthetic_rig_path();
    let out = dir.path().join("frames");
    for bad in [
        "--resolve-timeout=-1",
        "--resolve-timeout=nan",
        "--resolve-timeout=1e300",
    ] {
        let mut args = run_args(rig.to_str().unwrap(), out.to_str().unwrap());
        args.push(bad);
        assert_refused(&args, "--resolve-timeout", "positive number of seconds");
    }
}

#[test]
fn run_refuses_calibrating_on_a_single_presentation() {
    let dir = tempfile::tempdir().unwrap();
    let rig = synthetic_rig_path();
    let out = dir.path().join("frames");
    let mut args = run_args(rig.to_str().unwrap(), out.to_str().unwrap());
    args.extend(["--calibrate", "1"]);
    assert_refused(&args, "--calibrate", "at least 2");
}

#[test]
fn replay_refuses_a_start_delay_it_cannot_wait() {
    let session = repo().join("tests/fixtures/xdf-examples/minimal.xdf");
    for bad in [
        "--start-delay=1e300",
        "--start-delay=-1",
        "--start-delay=inf",
    ] {
        let args = ["replay", session.to_str().unwrap(), "--quiet", bad];
        assert_refused(&args, "--start-delay", "number of seconds, 0 or more");
    }
}

#[test]
fn import_tvsd_counts_days_from_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tvsd");
    let rig = repo().join("firmware-config/monkey-n.toml");
    let args = [
        "import-tvsd",
        "--rig",
        rig.to_str().unwrap(),
        "--norm-mua",
        "THINGS_normMUA.mat",
        "--image-list",
        "things_imgs.mat",
        "--images",
        "object_images",
        "--out",
        out.to_str().unwrap(),
        "--days",
        "0,1",
    ];
    assert_refused(&args, "--days", "from 1");
}

/// `bench` refuses speeds that do not rise and widths it cannot build; `run` refuses an
/// outlet image larger than the reconstruction.
#[test]
fn bench_and_outlet_sizes_are_checked() {
    let rig = synthetic_rig_path();
    let rig = rig.to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let out = out.path().to_str().unwrap();
    for speeds in ["4,2", "1,1", "0", "-1"] {
        let speeds = format!("--speeds={speeds}");
        assert_refused(
            &["bench", "--rig", rig, "--out", out, &speeds],
            "--speeds",
            "rising speeds",
        );
    }
    assert_refused(
        &["bench", "--rig", rig, "--out", out, "--widths", "0"],
        "--widths",
        "U-Net widths",
    );
    let mut args = run_args(rig, out);
    args.extend(["--outlet-size", "200"]);
    assert_refused(&args, "--outlet-size", "larger than the reconstruction");
}
