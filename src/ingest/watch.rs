//! The stream watch: a thread that looks at the network once a second while the daemon
//! runs.
//!
//! LSL has no authentication: any host on the lab network can publish a stream that
//! matches a selector. The daemon refuses an ambiguous selector at start-up; the watch
//! covers the rest of the session:
//! - a second stream matching a selector while the selected one is live is a rival:
//!   refused, counted once per outlet (`rival_streams`) and reported;
//! - when the MUA stream is lost and liblsl cannot recover it (the source came back
//!   under a new source_id, or on another host), a single matching stream that fits the
//!   rig (channel count, format, rate) replaces it: the watch opens the inlet here and
//!   hands it to the ingest thread (`stream_switched`); one that does not fit is
//!   refused and counted (`streams_refused`). A source that returns under its own
//!   name, source_id and host is liblsl's to recover, not the watch's.
//!
//! Real-time contract: none needed; the watch allocates (resolving returns new
//! handles) and prints its reports, on its own thread, off the data path.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::{check_mua, MuaInlet, StreamDescription};
use crate::config::StreamSelector;
use crate::lsl;
use crate::telemetry::Counters;

/// What the watch compares and how it opens a replacement.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub mua: StreamSelector,
    /// `None` when the run has no marker stream.
    pub markers: Option<StreamSelector>,
    pub channels: usize,
    pub rate_hz: f64,
    pub max_chunk: usize,
    /// Time between looks at the network.
    pub every: Duration,
    /// Print a line for each event (the counters count them either way).
    pub report: bool,
}

/// One outlet as the watch tells them apart: a source that restarts keeps its name,
/// source_id and host (and liblsl recovers it); without a source_id, only liblsl's
/// per-instance uid identifies it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Source {
    name: String,
    source_id: String,
    hostname: String,
    uid: String,
}

impl Source {
    fn of(d: &StreamDescription) -> Source {
        Source {
            name: d.name.clone(),
            source_id: d.source_id.clone(),
            hostname: d.hostname.clone(),
            uid: if d.source_id.is_empty() {
                d.uid.clone()
            } else {
                String::new()
            },
        }
    }
}

/// The watch's state across looks.
struct Watch<'a> {
    cfg: &'a WatchConfig,
    counters: &'a Counters,
    mua: Source,
    markers: Option<Source>,
    /// Outlet uids already counted (as rivals or refused), so each counts once.
    reported: HashSet<String>,
    handover: Sender<MuaInlet>,
}

/// Runs the watch until `stop`. `mua` and `markers` are the streams the run selected;
/// `retired` brings back the inlets the ingest thread replaced, to be closed here.
pub fn run(
    cfg: &WatchConfig,
    mua: &StreamDescription,
    markers: Option<&StreamDescription>,
    counters: &Counters,
    stop: &AtomicBool,
    handover: Sender<MuaInlet>,
    retired: Receiver<MuaInlet>,
) {
    let mut w = Watch {
        cfg,
        counters,
        mua: Source::of(mua),
        markers: markers.map(Source::of),
        reported: HashSet::new(),
        handover,
    };
    let mut next = Instant::now() + cfg.every;
    while !stop.load(Ordering::Relaxed) {
        while let Ok(old) = retired.try_recv() {
            drop(old);
        }
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        next = Instant::now() + cfg.every;
        w.look_at_mua();
        w.look_at_markers();
    }
}

impl Watch<'_> {
    fn mua_lost(&self) -> bool {
        Counters::get(&self.counters.stream_lost) > Counters::get(&self.counters.stream_restored)
    }

    fn look_at_mua(&mut self) {
        let found = match lsl::resolve_all(&self.cfg.mua.predicate(), 0.5) {
            Ok(f) => f,
            Err(_) => return,
        };
        let lost = self.mua_lost();
        let mut fitting = Vec::new();
        for info in found {
            let d = info.describe();
            let source = Source::of(&d);
            if !lost {
                if source != self.mua {
                    self.rival("MUA", &d, &self.cfg.mua.predicate());
                }
                continue;
            }
            match check_mua(&info, &d, self.cfg.channels, self.cfg.rate_hz) {
                Err(e) => self.refuse(&d, &e.to_string()),
                Ok(()) if source != self.mua => fitting.push((info, d, source)),
                // The same source back and fitting: liblsl's recovery takes it.
                Ok(()) => {}
            }
        }
        // One outlet may be heard twice (IPv4 and IPv6): count distinct sources.
        let mut seen = HashSet::new();
        fitting.retain(|(_, _, s)| seen.insert(s.clone()));
        if fitting.len() == 1 {
            let (info, d, source) = fitting.remove(0);
            self.switch_to(&info, &d, source);
        } else if fitting.len() > 1 {
            for (_, d, _) in &fitting {
                self.rival("MUA", d, &self.cfg.mua.predicate());
            }
        }
    }

    fn look_at_markers(&mut self) {
        let (Some(selector), Some(current)) = (&self.cfg.markers, &self.markers) else {
            return;
        };
        let predicate = selector.predicate();
        let found = match lsl::resolve_all(&predicate, 0.5) {
            Ok(f) => f,
            Err(_) => return,
        };
        let current = current.clone();
        for info in found {
            let d = info.describe();
            if Source::of(&d) != current {
                self.rival("marker", &d, &predicate);
            }
        }
    }

    /// Opens the replacement and hands it to the ingest thread.
    fn switch_to(&mut self, info: &lsl::StreamInfo, d: &StreamDescription, source: Source) {
        let c = self.cfg;
        match MuaInlet::open(info, c.channels, c.rate_hz, 2.0, c.max_chunk) {
            Ok(inlet) => {
                if self.handover.try_send(inlet).is_ok() {
                    if c.report {
                        eprintln!(
                            "monkeysee: the MUA stream was lost; switching to {d}, which matches the selector and fits the rig"
                        );
                    }
                    self.mua = source;
                }
            }
            Err(e) => self.refuse(d, &e.to_string()),
        }
    }

    fn rival(&mut self, what: &str, d: &StreamDescription, predicate: &str) {
        if self.reported.insert(d.uid.clone()) {
            Counters::inc(&self.counters.rival_streams);
            if self.cfg.report {
                eprintln!(
                    "monkeysee: warning: a second {what} stream matches {predicate} mid-session: {d}; refused (the run keeps the stream it selected)"
                );
            }
        }
    }

    fn refuse(&mut self, d: &StreamDescription, why: &str) {
        if self.reported.insert(d.uid.clone()) {
            Counters::inc(&self.counters.streams_refused);
            if self.cfg.report {
                eprintln!(
                    "monkeysee: warning: refused {d} as the lost MUA stream's replacement: {why}"
                );
            }
        }
    }
}
