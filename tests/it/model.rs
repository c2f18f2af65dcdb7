use monkeysee::config::decoder_config;
use monkeysee::config::RigConfig;
use monkeysee::decoder::{CpuBackend, Decoder, DecoderKind};

use super::common::{rig_variant, small_rig};

#[test]
fn a_saved_model_loads_and_reconstructs_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let rig = small_rig(dir.path());
    let cfg = decoder_config(&rig, DecoderKind::EndToEnd, 4);
    let dec = Decoder::<CpuBackend>::random(cfg.clone(), 3, &Default::default()).unwrap();
    let model_dir = dir.path().join("model");
    std::fs::create_dir_all(&model_dir).unwrap();
    dec.save(&model_dir).unwrap();
    let back = Decoder::<CpuBackend>::load(&model_dir, &Default::default()).unwrap();
    back.check_matches(&cfg).unwrap();
    let feats: Vec<f32> = (0..cfg.electrodes.len())
        .map(|e| ((e % 11) as f32 - 5.0) / 3.0)
        .collect();
    let mut a = vec![0.0; 3 * 32 * 32];
    let mut b = vec![0.0; 3 * 32 * 32];
    dec.reconstruct(&feats, &mut a).unwrap();
    back.reconstruct(&feats, &mut b).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-5);
    }
    assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn a_model_for_another_rig_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let rig = small_rig(dir.path());
    // The same rig with array 7 dead too: 896 electrodes in 14 arrays.
    let other_dir = tempfile::tempdir().unwrap();
    let (p, _) = rig_variant(
        other_dir.path(),
        &[
            ("image_size = 96", "image_size = 32"),
            (
                "id = 7\narea = \"V1\"\nchannels = [385, 448]",
                "id = 7\narea = \"V1\"\nchannels = [385, 448]\ndead = true",
            ),
        ],
    );
    let other = RigConfig::load(&p).unwrap();
    let dec = Decoder::<CpuBackend>::random(
        decoder_config(&other, DecoderKind::Spatial, 4),
        1,
        &Default::default(),
    )
    .unwrap();
    let err = dec
        .check_matches(&decoder_config(&rig, DecoderKind::Spatial, 4))
        .unwrap_err()
        .to_string();
    assert!(err.contains("896") && err.contains("960"), "{err}");

    // Other windows: a TW-3 model on a rig whose TW-3 windows differ.
    let (p3, _) = rig_variant(
        other_dir.path(),
        &[
            ("image_size = 96", "image_size = 32"),
            ("tw3_length_ms = 27", "tw3_length_ms = 20"),
        ],
    );
    let shorter = RigConfig::load(&p3).unwrap();
    let dec = Decoder::<CpuBackend>::random(
        decoder_config(&shorter, DecoderKind::Spatiotemporal, 4),
        1,
        &Default::default(),
    )
    .unwrap();
    let err = dec
        .check_matches(&decoder_config(&rig, DecoderKind::Spatiotemporal, 4))
        .unwrap_err()
        .to_string();
    assert!(err.contains("window"), "{err}");
}

#[test]
fn a_corrupt_or_missing_model_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let rig = small_rig(dir.path());
    let model_dir = dir.path().join("model");
    std::fs::create_dir_all(&model_dir).unwrap();
    let missing = Decoder::<CpuBackend>::load(&model_dir, &Default::default());
    assert!(missing.is_err());
    let dec = Decoder::<CpuBackend>::random(
        decoder_config(&rig, DecoderKind::Spatial, 4),
        1,
        &Default::default(),
    )
    .unwrap();
    dec.save(&model_dir).unwrap();
    let weights = std::fs::read_dir(&model_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "mpk"))
        .expect("weights file");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 3]).unwrap();
    let err = match Decoder::<CpuBackend>::load(&model_dir, &Default::default()) {
        Ok(_) => panic!("truncated weights must not load"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("weights"), "{err}");
    std::fs::write(model_dir.join("decoder.json"), "{ not json").unwrap();
    let err = match Decoder::<CpuBackend>::load(&model_dir, &Default::default()) {
        Ok(_) => panic!("a corrupt decoder.json must not load"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("decoder.json"), "{err}");
}
