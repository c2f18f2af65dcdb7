//! The soak: hours of a rig's stream into the daemon, with faults injected at random.
//!
//! A sender thread publishes a MUA stream (the rig's channel count and rate) and a
//! marker stream over loopback LSL, `speed` times faster than real time (its clock runs
//! `speed` times faster too), with an onset every 0.4 s of stream time. At random
//! moments (on average every `fault_every_s` of wall time) it injects one fault: a
//! 50 ms NaN/Inf burst, a short pause (0.3 s), a pause long enough for the daemon to
//! call the stream lost (1.5 s), a storm of 500 unknown markers, or a clock jump of
//! +20 s. It sends no onset whose windows a fault touches, so every onset sent should
//! become a frame; the report says how many did and where the others went.
//!
//! The daemon runs in this process ([`crate::daemon::run`], frames discarded after
//! timing). Every `sample_every_s` the soak reads the process's resident memory and the
//! bytes the C heap has handed out and not taken back (glibc's `mallinfo2`; every Rust
//! and liblsl allocation goes through it), and prints a progress line. The two tell
//! apart a heap that grows (allocations kept) from resident memory that grows around
//! a flat heap (the allocator's fragmentation, thread stacks, mappings). Sampling
//! locks the allocator's arenas for a moment, once per sample. Not real-time code
//! itself: it allocates freely.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, SeedableRng};

use crate::config::RigConfig;
use crate::daemon::{self, ModelSource, Output, RunOptions, RunSummary};
use crate::lsl::{self, Outlet, StreamInfo, StringChunk};
use crate::window::Mode;
use crate::xdf::{ChannelFormat, StreamSpec};

/// Everything a soak needs.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub rig: RigConfig,
    pub model: ModelSource,
    /// Stream seconds per wall second: above 0, at most 1000.
    pub speed: f64,
    /// Wall seconds to run.
    pub seconds: f64,
    /// Mean wall seconds between faults; 0 injects none.
    pub fault_every_s: f64,
    pub seed: u64,
    /// Wall seconds between memory samples (and progress lines).
    pub sample_every_s: f64,
    pub decode_threads: usize,
    /// Print a progress line at each memory sample.
    pub progress: bool,
    /// Set from outside (Ctrl-C) to end early; the report covers what ran.
    pub stop: Arc<AtomicBool>,
}

/// Faults the sender injected, by kind.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Faults {
    pub nan_bursts: u64,
    pub short_pauses: u64,
    pub long_pauses: u64,
    pub marker_storms: u64,
    pub clock_jumps: u64,
}

/// What a soak measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SoakReport {
    pub speed: f64,
    pub wall_s: f64,
    /// Stream seconds sent: the recording time the soak stands for.
    pub stream_s: f64,
    pub equivalent_hours: f64,
    pub samples_sent: u64,
    /// Samples the daemon's inlet delivered (`samples`).
    pub samples_received: u64,
    /// Sent but never delivered.
    pub samples_lost: i64,
    /// Delivered but dropped at the full ingest→window ring (`overruns`).
    pub overruns: u64,
    pub onsets_sent: u64,
    pub frames_built: u64,
    pub frames_decoded: u64,
    pub frames_shown: u64,
    /// Onsets that became no frame, and frames neither shown nor dropped, that no
    /// counter explains. The goal is 0.
    pub unexplained_frame_losses: i64,
    pub faults: Faults,
    /// `[wall seconds, resident MiB]` at each sample.
    pub rss_mib: Vec<(f64, f64)>,
    /// `[wall seconds, heap in use MiB]` at each sample (NaN where glibc cannot say).
    pub heap_mib: Vec<(f64, f64)>,
    /// Heap in use at the same warm sample as `rss_start_mib`, and at the end.
    pub heap_start_mib: f64,
    pub heap_end_mib: f64,
    /// Resident memory at the first sample after the first tenth of the run (warm-up
    /// done) and at the last sample, taken while the stream still flowed.
    pub rss_start_mib: f64,
    pub rss_end_mib: f64,
    pub rss_max_mib: f64,
    pub run: RunSummary,
}

/// What the sender thread shares with the soak.
#[derive(Default)]
struct Sent {
    samples: AtomicU64,
    onsets: AtomicU64,
    /// Stream time reached, in microseconds.
    stream_us: AtomicU64,
    /// Faults injected, by kind (as [`Faults`] lists them).
    faults: [AtomicU64; 5],
}

/// Runs a soak; see the module doc.
pub fn run(opts: SoakOptions) -> anyhow::Result<SoakReport> {
    if !(opts.speed > 0.0 && opts.speed <= 1000.0) {
        anyhow::bail!("the soak's speed must be above 0 and at most 1000");
    }
    let tag = format!("monkeysee-soak-{}", std::process::id());
    let mut rig = opts.rig.clone();
    rig.mua.query = Some(format!("name='{tag}-mua' and source_id='{tag}-mua'"));
    rig.markers.query = Some(format!(
        "name='{tag}-markers' and source_id='{tag}-markers'"
    ));
    let sent = Arc::new(Sent::default());
    let sender_stop = Arc::new(AtomicBool::new(false));
    let (outlets_tx, outlets_rx) = crossbeam_channel::bounded::<anyhow::Result<()>>(1);
    let sender = {
        let (rig, sent, stop, opts) =
            (rig.clone(), sent.clone(), sender_stop.clone(), opts.clone());
        thread::Builder::new()
            .name("soak-sender".into())
            .spawn(move || send(&tag, &rig, &opts, &sent, &stop, outlets_tx))
            .context("spawning the soak's sender")?
    };
    outlets_rx
        .recv()
        .context("the soak's sender stopped before publishing")??;

    let daemon_stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(crate::telemetry::Counters::default());
    let run_opts = RunOptions {
        resolve_timeout: 30.0,
        decode_threads: opts.decode_threads,
        counters: Some(counters.clone()),
        realtime: crate::realtime::RealtimeConfig::default(),
        stop: daemon_stop.clone(),
        ..RunOptions::new(rig, opts.model.clone(), Output::Discard)
    };
    let daemon = thread::Builder::new()
        .name("soak-daemon".into())
        .spawn(move || daemon::run(run_opts))
        .context("spawning the daemon")?;

    let started = Instant::now();
    let mut rss = Vec::new();
    let mut heap = Vec::new();
    let mut next_sample = Duration::ZERO;
    while started.elapsed().as_secs_f64() < opts.seconds
        && !opts.stop.load(Ordering::Relaxed)
        && !daemon.is_finished()
        && !sender.is_finished()
    {
        if started.elapsed() >= next_sample {
            let t = started.elapsed().as_secs_f64();
            let mib = resident_mib().unwrap_or(f64::NAN);
            rss.push((t, mib));
            heap.push((t, heap_in_use_mib().unwrap_or(f64::NAN)));
            if opts.progress {
                eprintln!(
                    "soak [{:>7.0} s] {:.2} h of recording sent, {} samples, {} onsets, {:.1} MiB resident, {:.1} MiB heap in use",
                    t,
                    sent.stream_us.load(Ordering::Relaxed) as f64 / 3.6e9,
                    sent.samples.load(Ordering::Relaxed),
                    sent.onsets.load(Ordering::Relaxed),
                    mib,
                    heap.last().map_or(f64::NAN, |h| h.1)
                );
            }
            next_sample += Duration::from_secs_f64(opts.sample_every_s.max(0.1));
        }
        thread::sleep(Duration::from_millis(50));
    }
    // The last memory sample while the stream still flows.
    let t = started.elapsed().as_secs_f64();
    rss.push((t, resident_mib().unwrap_or(f64::NAN)));
    heap.push((t, heap_in_use_mib().unwrap_or(f64::NAN)));
    sender_stop.store(true, Ordering::Relaxed);
    let sender_result = sender.join();
    // Let everything sent through before the counts are compared: wait until the
    // daemon has received every sample and accounted for every onset (a frame shown,
    // dropped or skipped), then 1 s more for the display, at most 60 s; then stop the
    // daemon as Ctrl-C would.
    drain(&sent, &counters, Duration::from_secs(60));
    thread::sleep(Duration::from_secs(1));
    let wall_s = started.elapsed().as_secs_f64();
    daemon_stop.store(true, Ordering::Relaxed);
    let summary = daemon
        .join()
        .map_err(|_| anyhow::anyhow!("the daemon thread panicked"))??;
    sender_result.map_err(|_| anyhow::anyhow!("the soak's sender panicked"))??;
    Ok(report(&opts, &sent, summary, [rss, heap], wall_s))
}

/// Waits until the daemon's counters account for everything the sender sent, or
/// `limit` passes.
fn drain(sent: &Sent, c: &crate::telemetry::Counters, limit: Duration) {
    let waited = Instant::now();
    while waited.elapsed() < limit {
        let live = c.snapshot();
        let get = |name: &str| live.iter().find(|(k, _)| *k == name).map_or(0, |e| e.1);
        let (no_frame, not_shown) = unaccounted(sent.onsets.load(Ordering::Relaxed), get);
        if get("samples") >= sent.samples.load(Ordering::Relaxed) && no_frame <= 0 && not_shown <= 0
        {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// From a counter lookup by name (the live counters, or a run's summary): onsets that
/// became no frame beyond those a counter explains, and built frames that went neither
/// to the display nor to a counted drop.
fn unaccounted(onsets: u64, c: impl Fn(&str) -> u64) -> (i64, i64) {
    let no_frame = onsets as i64
        - (c("frames_built")
            + c("frames_skipped_gap")
            + c("frames_skipped_bad")
            + c("frames_skipped_late")
            + c("onsets_dropped_reset")
            + c("marker_overruns")) as i64;
    let not_shown = c("frames_built") as i64
        - (c("frames_shown")
            + c("frames_superseded")
            + c("frames_dropped_decode")
            + c("frames_dropped_window")
            + c("decode_errors")) as i64;
    (no_frame, not_shown)
}

fn report(
    opts: &SoakOptions,
    sent: &Sent,
    run: RunSummary,
    [rss, heap]: [Vec<(f64, f64)>; 2],
    wall_s: f64,
) -> SoakReport {
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let c = |n: &str| run.counter(n);
    let onsets = g(&sent.onsets);
    let samples_sent = g(&sent.samples);
    let (no_frame, not_shown) = unaccounted(onsets, c);
    // The first sample after the first tenth of the run (warm-up done).
    let warm_at = rss
        .iter()
        .position(|(t, _)| *t >= wall_s / 10.0)
        .unwrap_or(0);
    let at = |v: &[(f64, f64)], i: usize| v.get(i).map_or(f64::NAN, |r| r.1);
    let warm = at(&rss, warm_at);
    let stream_s = g(&sent.stream_us) as f64 / 1e6;
    let [nan_bursts, short_pauses, long_pauses, marker_storms, clock_jumps] =
        sent.faults.each_ref().map(g);
    SoakReport {
        speed: opts.speed,
        wall_s,
        stream_s,
        equivalent_hours: stream_s / 3600.0,
        samples_sent,
        samples_received: c("samples"),
        samples_lost: samples_sent as i64 - c("samples") as i64,
        overruns: c("overruns"),
        onsets_sent: onsets,
        frames_built: c("frames_built"),
        frames_decoded: c("frames_decoded"),
        frames_shown: run.frames_shown,
        unexplained_frame_losses: no_frame.abs() + not_shown.abs(),
        faults: Faults {
            nan_bursts,
            short_pauses,
            long_pauses,
            marker_storms,
            clock_jumps,
        },
        rss_start_mib: warm,
        rss_end_mib: rss.last().map_or(f64::NAN, |r| r.1),
        rss_max_mib: rss.iter().map(|r| r.1).fold(f64::NAN, f64::max),
        rss_mib: rss,
        heap_start_mib: at(&heap, warm_at),
        heap_end_mib: heap.last().map_or(f64::NAN, |r| r.1),
        heap_mib: heap,
        run,
    }
}

/// Writes `soak.json` and `rss.csv` (resident and heap in use over time) into `dir`.
pub fn write_report(report: &SoakReport, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join("soak.json");
    std::fs::write(&json, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let mut csv = String::from("wall_s,rss_mib,heap_in_use_mib\n");
    for (i, (t, m)) in report.rss_mib.iter().enumerate() {
        let h = report.heap_mib.get(i).map_or(f64::NAN, |h| h.1);
        csv.push_str(&format!("{t:.1},{m:.2},{h:.3}\n"));
    }
    let path = dir.join("rss.csv");
    std::fs::write(&path, csv).with_context(|| format!("writing {}", path.display()))
}

/// Bytes the C heap has handed out and not taken back, in MiB: glibc's `mallinfo2`
/// (`uordblks`, small blocks in use, plus `hblkhd`, the blocks it mapped on their own).
/// `None` where the C library has no `mallinfo2` (glibc before 2.33, musl): it is
/// looked up at run time, so the binary runs there too.
pub fn heap_in_use_mib() -> Option<f64> {
    #[cfg(target_os = "linux")]
    {
        /// glibc's `struct mallinfo2`: ten `size_t` fields (two of them read here).
        #[repr(C)]
        #[allow(dead_code)]
        struct MallInfo2 {
            arena: usize,
            ordblks: usize,
            smblks: usize,
            hblks: usize,
            hblkhd: usize,
            usmblks: usize,
            fsmblks: usize,
            uordblks: usize,
            fordblks: usize,
            keepcost: usize,
        }
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks a symbol
        // up; a null result means the C library has none.
        let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mallinfo2".as_ptr()) };
        if sym.is_null() {
            return None;
        }
        // SAFETY: glibc's mallinfo2 takes no arguments and returns `struct mallinfo2`
        // by value, laid out as above; it only reads the allocator's statistics.
        let f: extern "C" fn() -> MallInfo2 = unsafe { std::mem::transmute(sym) };
        let info = f();
        Some((info.uordblks + info.hblkhd) as f64 / (1024.0 * 1024.0))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// This process's resident memory (Linux `/proc/self/status`), in MiB.
pub fn resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The sender's state: its clock, its outlets, what a fault has spoiled.
struct Sender<'a> {
    mua: Outlet,
    markers: Outlet,
    scratch: StringChunk,
    sent: &'a Sent,
    channels: usize,
    period: f64,
    /// Stream seconds an onset's windows reach after it, and before it.
    after: f64,
    before: f64,
    speed: f64,
    /// LSL time of stream time 0.
    t0: f64,
    wall0: Instant,
    /// Stream time of the next sample.
    now: f64,
    /// Added to every stamp (clock jumps).
    jump: f64,
    rows: u64,
    next_onset: f64,
    /// No onset before this stream time (a fault's samples must leave its windows).
    clean_after: f64,
}

fn send(
    tag: &str,
    rig: &RigConfig,
    opts: &SoakOptions,
    sent: &Sent,
    stop: &AtomicBool,
    ready: crossbeam_channel::Sender<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let outlets = (|| -> anyhow::Result<(Outlet, Outlet)> {
        // Headers as the daemon publishes its own, each stream's source_id its name.
        let info = |name: String, kind: &str, channels, rate, format| {
            let mut spec = StreamSpec::new(&name, kind, channels, rate, format);
            spec.source_id = name;
            StreamInfo::from_xml(&crate::daemon::outlet::publishable(&spec))
        };
        let (mua, markers) = (format!("{tag}-mua"), format!("{tag}-markers"));
        let (rate, float32) = (rig.sampling_rate_hz, ChannelFormat::Float32);
        let mua = info(mua, "MUA", rig.channel_count, rate, float32)?;
        let markers = info(markers, "Markers", 1, 0.0, ChannelFormat::String)?;
        Ok((
            Outlet::create(&mua, 0, 30)?,
            Outlet::create(&markers, 0, 360)?,
        ))
    })();
    let (mua, markers) = match outlets {
        Ok(o) => o,
        Err(e) => {
            let _ = ready.send(Err(e.context("publishing the soak's streams")));
            return Ok(());
        }
    };
    let _ = ready.send(Ok(()));
    // Wait for the daemon's inlets, then for its start-up to finish: the MUA inlet
    // buffers 10 s of stream (1 s of wall time at 10×) until the window thread runs,
    // and liblsl drops what does not fit.
    let waited = Instant::now();
    while !(mua.have_consumers() && markers.have_consumers()) {
        if stop.load(Ordering::Relaxed) || waited.elapsed() > Duration::from_secs(120) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_secs(3));
    let assembler = crate::window::AssemblerConfig::from_rig(
        rig,
        crate::config::WindowSetKind::Tw15,
        Mode::Event,
    );
    let period = 1.0 / rig.sampling_rate_hz;
    let mut s = Sender {
        mua,
        markers,
        scratch: StringChunk::default(),
        sent,
        channels: rig.channel_count,
        period,
        // The latest window's end (TW-3 ends no later) and the baseline's start.
        after: assembler.span_end().seconds().max(0.0) + period,
        before: (-assembler.baseline.start.seconds()).max(0.0),
        speed: opts.speed,
        t0: lsl::local_clock() + 0.05,
        wall0: Instant::now() + Duration::from_millis(50),
        now: 0.0,
        jump: 0.0,
        rows: 0,
        next_onset: 0.2,
        clean_after: 0.0,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let mut next_fault = next_fault_at(&mut rng, opts.fault_every_s);
    let chunk = ((rig.sampling_rate_hz / 100.0).round() as usize).max(1); // 10 ms of stream
    let mut values = vec![0.0f32; chunk * s.channels];
    let mut stamps = vec![0.0f64; chunk];
    while !stop.load(Ordering::Relaxed) {
        let wall = s.wall0.elapsed().as_secs_f64();
        if wall >= next_fault {
            let kind = rng.random_range(0..5);
            s.fault(kind, &mut values, &mut stamps)?;
            next_fault = wall + next_fault_at(&mut rng, opts.fault_every_s);
        }
        s.send_chunk(&mut values, &mut stamps, false)?;
    }
    Ok(())
}

/// Wall seconds to the next fault: exponential with mean `every` (never, for 0).
fn next_fault_at(rng: &mut impl Rng, every: f64) -> f64 {
    if every <= 0.0 {
        return f64::INFINITY;
    }
    let u: f64 = rng.random_range(1e-9..1.0);
    -every * u.ln()
}

impl Sender<'_> {
    fn stamp(&self, t: f64) -> f64 {
        self.t0 + self.jump + t
    }

    /// Sends one chunk of rows at the pace `speed` sets, with any onset due in it.
    fn send_chunk(
        &mut self,
        values: &mut [f32],
        stamps: &mut [f64],
        non_finite: bool,
    ) -> anyhow::Result<()> {
        let n = stamps.len();
        for i in 0..n {
            let t = self.now + i as f64 * self.period;
            stamps[i] = self.stamp(t);
            let k = self.rows + i as u64;
            for (c, v) in values[i * self.channels..(i + 1) * self.channels]
                .iter_mut()
                .enumerate()
            {
                *v = if non_finite {
                    if k.is_multiple_of(2) {
                        f32::NAN
                    } else {
                        f32::INFINITY
                    }
                } else {
                    ((k as usize * 31 + c * 7) % 100) as f32 / 50.0
                };
            }
        }
        self.mua
            .push_chunk(values, stamps)
            .map_err(|code| anyhow::anyhow!("liblsl refused a chunk (error {code})"))?;
        let end = self.now + n as f64 * self.period;
        // An onset's marker goes out once the samples through its last window are
        // sent, so no later fault can touch its windows; its baseline must follow the
        // last fault.
        while self.next_onset + self.after <= end {
            if self.next_onset - self.before >= self.clean_after && !non_finite {
                let id = format!("soak_{}", self.sent.onsets.load(Ordering::Relaxed));
                self.marker(&format!("stim_on {id}"), self.next_onset)?;
                self.sent.onsets.fetch_add(1, Ordering::Relaxed);
            }
            self.next_onset += 0.4;
        }
        self.rows += n as u64;
        self.sent.samples.fetch_add(n as u64, Ordering::Relaxed);
        self.now = end;
        self.sent
            .stream_us
            .store((end * 1e6) as u64, Ordering::Relaxed);
        self.pace();
        Ok(())
    }

    fn marker(&mut self, text: &str, t: f64) -> anyhow::Result<()> {
        let stamp = self.stamp(t);
        self.markers
            .push_strings(&[text.to_string()], &[stamp], &mut self.scratch)
            .map_err(|code| anyhow::anyhow!("liblsl refused a marker (error {code})"))
    }

    /// Sleeps until wall time catches up with stream time / speed.
    fn pace(&self) {
        let due = self.wall0 + Duration::from_secs_f64(self.now / self.speed);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            thread::sleep(d);
        }
    }

    /// Injects fault `kind` and marks the stream time it spoils.
    fn fault(&mut self, kind: u32, values: &mut [f32], stamps: &mut [f64]) -> anyhow::Result<()> {
        self.sent.faults[kind as usize].fetch_add(1, Ordering::Relaxed);
        match kind {
            0 => {
                let chunks = (0.05 / (stamps.len() as f64 * self.period)).ceil() as usize;
                for _ in 0..chunks.max(1) {
                    self.send_chunk(values, stamps, true)?;
                }
            }
            1 | 2 => {
                let wall = if kind == 1 { 0.3 } else { 1.5 };
                thread::sleep(Duration::from_secs_f64(wall));
                // The sender's clock runs on: the samples after the pause leave a gap.
                let skipped = (wall * self.speed / self.period).floor();
                self.now += skipped * self.period;
            }
            3 => {
                for i in 0..500 {
                    self.marker(&format!("trigger {i}"), self.now)?;
                }
            }
            _ => {
                self.jump += 20.0;
            }
        }
        self.clean_after = self.now + 0.05;
        Ok(())
    }
}
