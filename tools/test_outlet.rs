//! A stand-in rig until the simulator lands: publishes a 1024-channel float32 MUA
//! stream and a marker stream under the synthetic rig's names, with the trial design
//! of TVSD (200 ms on / 200 ms off) and a crude response after each onset.
//!
//! `cargo run --release --example test-outlet -- [SECONDS]`

use std::thread;
use std::time::{Duration, Instant};

use lsl::ExPushable;
use rand::{Rng, SeedableRng};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(30.0);
    let channels = 1024;
    let info = lsl::StreamInfo::new(
        "monkeysee-synthetic-mua",
        "MUA",
        channels,
        1000.0,
        lsl::ChannelFormat::Float32,
        "monkeysee-test-outlet-mua",
    )?;
    let mua = lsl::StreamOutlet::new(&info, 10, 60)?;
    let minfo = lsl::StreamInfo::new(
        "monkeysee-synthetic-markers",
        "Markers",
        1,
        lsl::IRREGULAR_RATE,
        lsl::ChannelFormat::String,
        "monkeysee-test-outlet-markers",
    )?;
    let markers = lsl::StreamOutlet::new(&minfo, 1, 60)?;
    eprintln!("test-outlet: waiting for a consumer (start `monkeysee run --rig firmware-config/synthetic.toml ...`)");
    while !(mua.wait_for_consumers(1.0) && markers.wait_for_consumers(1.0)) {}
    // Give the inlets a moment to open before the first marker.
    thread::sleep(Duration::from_millis(300));
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let gain: Vec<f32> = (0..channels).map(|_| rng.random_range(0.5..2.0)).collect();
    let t0 = lsl::local_clock();
    let wall0 = Instant::now();
    let mut row = vec![0.0f32; channels as usize];
    let n = (seconds * 1000.0) as usize;
    let mut image = 0;
    for k in 0..n {
        let t = t0 + k as f64 / 1000.0;
        let phase = k % 400; // 200 ms on, 200 ms off
        if phase == 100 {
            image += 1;
            markers.push_sample_ex(&vec![format!("stim_on test_{image:05}")], t, true)?;
        } else if phase == 300 {
            markers.push_sample_ex(&vec!["stim_off".to_string()], t, true)?;
        }
        let since_onset = (k + 300) % 400; // ms since the last onset
        for (c, v) in row.iter_mut().enumerate() {
            let latency = if c < 512 {
                40
            } else if c < 768 {
                70
            } else {
                100
            };
            let drive = if since_onset > latency && since_onset < latency + 150 {
                gain[c] * ((image * 37 + c) % 7) as f32 / 7.0
            } else {
                0.0
            };
            *v = 1.0 + drive + rng.random_range(-0.3..0.3);
        }
        mua.push_sample_ex(&row, t, k % 10 == 9)?;
        if k % 10 == 9 {
            let due = wall0 + Duration::from_millis(k as u64 + 1);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                thread::sleep(d);
            }
        }
    }
    Ok(())
}
