//! The stream watch: a thread that looks at the network once a second while the daemon
//! runs.
//!
//! LSL has no authentication: any host on the lab network can publish a stream that
//! matches a selector. The daemon refuses an ambiguous selector at start-up; the watch
//! covers the rest of the session:
//! - a second stream matching a selector while the selected one delivers data is a
//!   rival: refused, counted once per outlet (`rival_streams`) and reported;
//! - when the MUA stream is lost (silent past the daemon's limit) and has been gone
//!   from the network for two looks in a row, so liblsl cannot recover it (the source
//!   came back under a new source_id, or without one), a single matching stream that
//!   fits the rig (channel count, format, rate) and was never reported as a rival
//!   replaces it: the watch opens the inlet here and the ingest thread takes it while
//!   the stream is still lost (`stream_switched`); one that does not fit is refused and
//!   counted (`streams_refused`). A source that returns under its own name and
//!   source_id (on any host) is liblsl's to recover, not the watch's.
//!
//! Real-time contract: none needed; the watch allocates (resolving returns new
//! handles) and prints its reports, on its own thread, off the data path.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::{check_mua, MuaInlet, MuaSpec, StreamDescription};
use crate::config::StreamSelector;
use crate::lsl;
use crate::telemetry::Counters;

/// What the watch compares and how it opens a replacement.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub mua: StreamSelector,
    /// `None` when the run has no marker stream.
    pub markers: Option<StreamSelector>,
    /// What a replacement must fit and how it is opened.
    pub spec: MuaSpec,
    /// Time between looks at the network.
    pub every: Duration,
    /// Print a line for each event (the counters count them either way).
    pub report: bool,
}

/// One outlet as the watch tells them apart: liblsl recovers a source by its name and
/// source_id (on any host), so those two identify it; without a source_id, only
/// liblsl's per-instance uid (with the name and host) does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Source {
    name: String,
    source_id: String,
    hostname: String,
    uid: String,
}

impl Source {
    fn of(d: &StreamDescription) -> Source {
        let anonymous = d.source_id.is_empty();
        Source {
            name: d.name.clone(),
            source_id: d.source_id.clone(),
            hostname: if anonymous {
                d.hostname.clone()
            } else {
                String::new()
            },
            uid: if anonymous {
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
    /// Outlet uids counted as rivals.
    rivals: HashSet<String>,
    /// Outlet uids counted as refused.
    refused: HashSet<String>,
    /// Looks in a row that did not find the selected MUA source.
    absent_looks: u32,
    /// `samples` at the last look: data flowed since if it grew.
    samples_seen: u64,
    /// A replacement sent to the ingest thread, and `stream_switched` when it was sent:
    /// it becomes the selected source once ingest has taken it.
    pending: Option<(Source, u64)>,
    handover: Sender<MuaInlet>,
    /// The ingest thread's end of `handover`, to take back a replacement it did not
    /// need (the old stream came back first).
    unused: Receiver<MuaInlet>,
}

/// Runs the watch until `stop`. `mua` and `markers` are the streams the run selected;
/// `retired` brings back the inlets the ingest thread replaced, to be closed here.
#[allow(clippy::too_many_arguments)]
pub fn run(
    cfg: &WatchConfig,
    mua: &StreamDescription,
    markers: Option<&StreamDescription>,
    counters: &Counters,
    stop: &AtomicBool,
    handover: Sender<MuaInlet>,
    unused: Receiver<MuaInlet>,
    retired: Receiver<MuaInlet>,
) {
    let mut w = Watch {
        cfg,
        counters,
        mua: Source::of(mua),
        markers: markers.map(Source::of),
        rivals: HashSet::new(),
        refused: HashSet::new(),
        absent_looks: 0,
        samples_seen: Counters::get(&counters.samples),
        pending: None,
        handover,
        unused,
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
        let samples = Counters::get(&counters.samples);
        let flowing = samples > w.samples_seen;
        w.samples_seen = samples;
        w.settle_switch();
        w.look_at_mua(flowing);
        w.look_at_markers(flowing);
    }
}

impl Watch<'_> {
    fn mua_lost(&self) -> bool {
        Counters::get(&self.counters.stream_lost) > Counters::get(&self.counters.stream_restored)
    }

    /// The selected source becomes the replacement once ingest took it; a replacement
    /// still waiting when the old stream is back is taken back and closed.
    fn settle_switch(&mut self) {
        let Some((source, switched)) = self.pending.clone() else {
            return;
        };
        if Counters::get(&self.counters.stream_switched) > switched {
            self.mua = source;
            self.pending = None;
        } else if !self.mua_lost() {
            while let Ok(spare) = self.unused.try_recv() {
                drop(spare);
            }
            self.pending = None;
        }
    }

    fn look_at_mua(&mut self, flowing: bool) {
        let predicate = self.cfg.mua.predicate();
        let found = match lsl::resolve_all(&predicate, 0.5) {
            Ok(f) => f,
            Err(_) => return,
        };
        let described: Vec<_> = found.iter().map(|i| i.describe()).collect();
        let present = described.iter().any(|d| Source::of(d) == self.mua);
        self.absent_looks = if present { 0 } else { self.absent_looks + 1 };
        let lost = self.mua_lost();
        let mut fitting = Vec::new();
        for (info, d) in found.iter().zip(&described) {
            let source = Source::of(d);
            if self.rivals.contains(&d.uid) {
                continue;
            }
            if source == self.mua {
                // liblsl's to recover; but say so if it came back unfit for the rig.
                if lost {
                    if let Err(e) = check_mua(info, d, &self.cfg.spec) {
                        self.refuse(d, &e.to_string());
                    }
                }
                continue;
            }
            if flowing && !lost {
                self.rival("MUA", d, &predicate);
                continue;
            }
            if !lost {
                // Silent but not yet lost: a restart in progress, or a pause. Wait.
                continue;
            }
            match check_mua(info, d, &self.cfg.spec) {
                Err(e) => self.refuse(d, &e.to_string()),
                Ok(()) => fitting.push((info, d, source)),
            }
        }
        // One outlet may be heard twice (IPv4 and IPv6): count distinct sources.
        let mut seen = HashSet::new();
        fitting.retain(|(_, _, s)| seen.insert(s.clone()));
        if !lost || self.absent_looks < 2 || self.pending.is_some() {
            return;
        }
        if fitting.len() == 1 {
            let (info, d, source) = fitting.remove(0);
            self.switch_to(info, d, source);
        } else {
            for (_, d, _) in &fitting {
                self.rival("MUA", d, &predicate);
            }
        }
    }

    fn look_at_markers(&mut self, flowing: bool) {
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
            if flowing && Source::of(&d) != current {
                self.rival("marker", &d, &predicate);
            }
        }
    }

    /// Opens the replacement and hands it to the ingest thread.
    fn switch_to(&mut self, info: &lsl::StreamInfo, d: &StreamDescription, source: Source) {
        let c = self.cfg;
        match MuaInlet::open(info, &c.spec, 1.0) {
            Ok(inlet) => {
                let switched = Counters::get(&self.counters.stream_switched);
                if self.handover.try_send(inlet).is_ok() {
                    if c.report {
                        eprintln!(
                            "monkeysee: the MUA stream was lost; switching to {d}, which matches the selector and fits the rig"
                        );
                    }
                    self.pending = Some((source, switched));
                }
            }
            Err(e) => self.refuse(d, &e.to_string()),
        }
    }

    fn rival(&mut self, what: &str, d: &StreamDescription, predicate: &str) {
        if self.rivals.insert(d.uid.clone()) {
            Counters::inc(&self.counters.rival_streams);
            if self.cfg.report {
                eprintln!(
                    "monkeysee: warning: a second {what} stream matches {predicate} mid-session: {d}; refused (the run keeps the stream it selected)"
                );
            }
        }
    }

    fn refuse(&mut self, d: &StreamDescription, why: &str) {
        if self.refused.insert(d.uid.clone()) {
            Counters::inc(&self.counters.streams_refused);
            if self.cfg.report {
                eprintln!(
                    "monkeysee: warning: refused {d} as the lost MUA stream's replacement: {why}"
                );
            }
        }
    }
}
