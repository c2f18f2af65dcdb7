use image::{Rgb, RgbImage};
use monkeysee::display::{
    contact_sheet, rgb_planes_to_image, side_by_side, HeadlessPresenter, Presenter, Shown,
    StimulusStore, WindowPresenter,
};

#[test]
fn planes_become_an_rgb_image() {
    let size = 4;
    let mut planes = vec![0.0f32; 3 * size * size];
    planes[0] = 1.0; // red at (0, 0)
    planes[size * size + 5] = 0.5; // green at (1, 1)
    planes[2 * size * size + 15] = 2.0; // blue, clamped, at (3, 3)
    let img = rgb_planes_to_image(&planes, size);
    assert_eq!(img.get_pixel(0, 0).0, [255, 0, 0]);
    assert_eq!(img.get_pixel(1, 1).0, [0, 128, 0]);
    assert_eq!(img.get_pixel(3, 3).0, [0, 0, 255]);
}

#[test]
fn headless_writes_every_frame_and_a_contact_sheet() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = HeadlessPresenter::new(dir.path(), None).unwrap();
    for seq in 1..=12u64 {
        let pic = RgbImage::from_pixel(8, 8, Rgb([seq as u8 * 20, 0, 0]));
        assert!(p
            .present(&Shown {
                seq,
                image_id: Some("x"),
                picture: &pic,
                latency_ms: 1.0
            })
            .unwrap());
    }
    p.finish().unwrap();
    assert_eq!(p.frames_written(), 12);
    let back = image::open(dir.path().join("frames/000007.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(back.get_pixel(3, 3).0, [140, 0, 0]);
    let sheet = image::open(dir.path().join("contact_sheet.png"))
        .unwrap()
        .to_rgb8();
    // 10 columns and 2 rows of 8 px tiles with 2 px spacing.
    assert_eq!((sheet.width(), sheet.height()), (10 * 10 + 2, 2 * 10 + 2));
}

#[test]
fn the_true_stimulus_is_shown_beside_the_reconstruction() {
    let dir = tempfile::tempdir().unwrap();
    RgbImage::from_pixel(50, 50, Rgb([0, 0, 200]))
        .save(dir.path().join("cat_01.png"))
        .unwrap();
    let mut store = StimulusStore::new(Some(dir.path().to_path_buf()), 16);
    let stim = store.get("cat_01").cloned().expect("stimulus found");
    assert_eq!(stim.dimensions(), (16, 16));
    assert!(store.get("missing").is_none());
    let recon = RgbImage::from_pixel(16, 16, Rgb([200, 0, 0]));
    let both = side_by_side(&recon, Some(&stim));
    assert_eq!(both.dimensions(), (36, 16));
    assert_eq!(both.get_pixel(0, 0).0, [0, 0, 200]);
    assert_eq!(both.get_pixel(35, 15).0, [200, 0, 0]);
    let sheet = contact_sheet([recon.clone(), stim].iter(), 10);
    assert_eq!(sheet.width(), 2 * 18 + 2);
}

/// A real window: under Xvfb in CI (.ci/run starts one and sets DISPLAY). Without a
/// display, opening must fail with an error rather than a panic.
#[test]
fn window_presenter_shows_frames_under_a_display() {
    let has_display = std::env::var_os("DISPLAY").is_some();
    let opened = WindowPresenter::open(16, true, 2);
    if !has_display {
        let e = opened
            .err()
            .expect("no display: opening must fail")
            .to_string();
        assert!(e.contains("--headless"), "{e}");
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test under Xvfb (DISPLAY unset)"
        );
        return;
    }
    let mut w = opened.expect("window opens under the display");
    let pic = RgbImage::from_pixel(36, 16, Rgb([10, 200, 30]));
    for seq in 0..5 {
        assert!(w
            .present(&Shown {
                seq,
                image_id: Some("img"),
                picture: &pic,
                latency_ms: 3.0
            })
            .unwrap());
        assert!(w.idle());
    }
}
