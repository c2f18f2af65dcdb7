use monkeysee::config::{RigConfig, WindowSetKind};
use monkeysee::units::Area;

use super::common::{repo, rig_variant, synthetic_rig_path};

#[test]
fn shipped_rigs_load_with_the_tvsd_channel_maps() {
    let n = RigConfig::load(&repo().join("firmware-config/monkey-n.toml")).unwrap();
    assert_eq!(n.channel_count, 1024);
    assert_eq!(n.arrays.len(), 16);
    assert!(n.arrays[5].dead, "monkey N array 6 is dead");
    assert_eq!(n.n_live_arrays(), 15);
    assert_eq!(n.electrodes_per_area(), [448, 256, 256]);
    assert_eq!(n.arrays[12].area, Area::IT);
    assert_eq!(n.arrays[12].channels, 768..832);

    let f = RigConfig::load(&repo().join("firmware-config/monkey-f.toml")).unwrap();
    assert_eq!(f.electrodes_per_area(), [512, 192, 320]);
    assert_eq!(
        f.arrays[8].area,
        Area::IT,
        "monkey F: IT on channels 513-832"
    );
    assert_eq!(f.arrays[8].channels.start, 512);
    assert_eq!(
        f.arrays[13].area,
        Area::V4,
        "monkey F: V4 on channels 833-1024"
    );

    let s = RigConfig::load(&synthetic_rig_path()).unwrap();
    assert_eq!(s.electrodes.len(), 960);
    let table =
        s.rf.table
            .as_ref()
            .expect("synthetic rig ships an RF table");
    assert_eq!(table.entries.len(), 1024);
}

#[test]
fn window_sets_follow_the_paper() {
    let s = RigConfig::load(&synthetic_rig_path()).unwrap();
    let w = &s.windows;
    assert_eq!(
        w.windows_for(WindowSetKind::Tw15, Area::V4)[0].start.0,
        33.0
    );
    assert_eq!(
        w.windows_for(WindowSetKind::Tw15, Area::IT)[0].end().0,
        199.0
    );
    let it3 = w.windows_for(WindowSetKind::Tw3, Area::IT);
    assert_eq!(it3.len(), 5);
    assert_eq!((it3[4].start.0, it3[4].len.0), (170.0, 27.0));
    assert_eq!(w.span_end(WindowSetKind::Tw15).0, 199.0);
    assert_eq!(w.window_names(WindowSetKind::Tw3).len(), 15);
}

fn load_err(replace: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = rig_variant(dir.path(), replace);
    RigConfig::load(&p).unwrap_err().to_string()
}

#[test]
fn unknown_area_names_the_key_and_line() {
    let e = load_err(&[("id = 9\narea = \"V4\"", "id = 9\narea = \"V5\"")]);
    assert!(e.contains("arrays[8].area"), "{e}");
    assert!(e.contains("\"V5\""), "{e}");
    assert!(e.contains("rig.toml:"), "{e}");
    // The line of `area = "V5"` in the file.
    let dir = tempfile::tempdir().unwrap();
    let (_, text) = rig_variant(
        dir.path(),
        &[("id = 9\narea = \"V4\"", "id = 9\narea = \"V5\"")],
    );
    let line = text.lines().position(|l| l.contains("\"V5\"")).unwrap() + 1;
    assert!(
        e.contains(&format!(":{line}:")),
        "{e} should point at line {line}"
    );
}

#[test]
fn overlapping_channels_are_refused() {
    let e = load_err(&[("channels = [65, 128]", "channels = [60, 128]")]);
    assert!(
        e.contains("arrays[1].channels") && e.contains("claimed by array 1 and array 2"),
        "{e}"
    );
}

#[test]
fn channel_range_past_the_stream_is_refused() {
    let e = load_err(&[("channels = [961, 1024]", "channels = [961, 1030]")]);
    assert!(
        e.contains("arrays[15].channels") && e.contains("rig.channels (1024)"),
        "{e}"
    );
}

#[test]
fn syntax_errors_and_unknown_keys_are_located() {
    let e = load_err(&[(
        "sampling_rate_hz = 1000.0",
        "sampling_rate_hz = 1000.0\nsampling_rat = 3",
    )]);
    assert!(e.contains("sampling_rat"), "{e}");
    let e = load_err(&[("image_size = 96", "image_size = ")]);
    assert!(e.contains("rig.toml:"), "{e}");
}

#[test]
fn bad_windows_and_sizes_are_refused() {
    let e = load_err(&[("tw15_v4 = [33, 166]", "tw15_v4 = [166, 33]")]);
    assert!(
        e.contains("windows.tw15_v4") && e.contains("end > start"),
        "{e}"
    );
    let e = load_err(&[("image_size = 96", "image_size = 100")]);
    assert!(
        e.contains("decoder.image_size") && e.contains("multiple of 32"),
        "{e}"
    );
    let e = load_err(&[("history_ms = 1000", "history_ms = 200")]);
    assert!(e.contains("windows.history_ms"), "{e}");
    let e = load_err(&[("sampling_rate_hz = 1000.0", "sampling_rate_hz = 0.0")]);
    assert!(e.contains("rig.sampling_rate_hz"), "{e}");
}

#[test]
fn missing_rf_table_names_the_key_and_path() {
    let e = load_err(&[("table = \"synthetic-rf.csv\"", "table = \"nope.csv\"")]);
    assert!(
        e.contains("receptive_fields.table")
            && e.contains("nope.csv")
            && e.contains("relative to this config file"),
        "{e}"
    );
}

#[test]
fn stream_selector_must_say_something() {
    let e = load_err(&[(
        "name = \"monkeysee-synthetic-markers\"\ntype = \"Markers\"",
        "",
    )]);
    assert!(
        e.contains("streams.markers") && e.contains("first one seen"),
        "{e}"
    );
}

#[test]
fn malformed_rf_table_rows_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = rig_variant(dir.path(), &[]);
    std::fs::write(
        dir.path().join("synthetic-rf.csv"),
        "electrode,x_deg,y_deg,size_deg\n1,0.5,0.5,0.3\n2,abc,0.1,0.2\n",
    )
    .unwrap();
    let e = RigConfig::load(&p).unwrap_err().to_string();
    assert!(
        e.contains("synthetic-rf.csv:3") && e.contains("x_deg"),
        "{e}"
    );
}

/// A selector without a source_id is flagged (LSL has no authentication); one with it,
/// or a query naming it, is not.
#[test]
fn selectors_without_a_source_id_are_flagged() {
    let rig = RigConfig::load(&synthetic_rig_path()).unwrap();
    let mut s = rig.mua.clone();
    s.source_id = None;
    s.query = None;
    assert!(s.weakness().unwrap().contains("names no source_id"));
    s.source_id = Some("amp-7".into());
    assert_eq!(s.weakness(), None);
    s.source_id = None;
    s.query = Some("name='x' and source_id='amp-7'".into());
    assert_eq!(s.weakness(), None);
}
