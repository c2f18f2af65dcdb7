//! `--realtime` and `[realtime]`: located config errors; without permission a run goes
//! on and says which permission is missing (or refuses, with `require`); with it, the
//! pipeline's threads run at their SCHED_FIFO priorities; `--trace` records every
//! frame's stages on their threads.

use std::thread;
use std::time::Duration;

use monkeysee::config::RigConfig;
use monkeysee::realtime::{RealtimeConfig, RealtimeMode};
use monkeysee::window::Mode;

use super::common::rig_variant;
use super::daemon::{stream, Running};

/// The real-time tests one at a time: memory locking is the whole process's, and a
/// locked process cannot start the unprivileged test's threads (their stacks must be
/// locked too, under a 0 RLIMIT_MEMLOCK).
static ONE_AT_A_TIME: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

#[test]
fn a_bad_realtime_section_names_the_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (from, to, key) in [
        ("mode = \"off\"", "mode = \"sometimes\"", "realtime.mode"),
        (
            "ingest_priority = 80",
            "ingest_priority = 120",
            "realtime.ingest_priority",
        ),
        (
            "decode_priority = 70",
            "decode_priority = 0",
            "realtime.decode_priority",
        ),
        ("pin_threads = true", "pin_cores = true", "pin_cores"),
        (
            "lock_memory = true",
            "lock_memory = \"yes\"",
            "realtime.lock_memory",
        ),
    ] {
        let (path, text) = rig_variant(dir.path(), &[(from, to)]);
        let line = text.lines().position(|l| l.trim() == to).unwrap() + 1;
        let e = RigConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains(key), "{to}: {e}");
        assert!(
            e.contains(&format!(":{line}")),
            "{to} is on line {line}: {e}"
        );
    }
    let (path, _) = rig_variant(
        dir.path(),
        &[
            ("mode = \"off\"", "mode = \"require\""),
            ("window_priority = 75", "window_priority = 60"),
            ("display_priority = 65", "display_priority = 50"),
        ],
    );
    let rig = RigConfig::load(&path).unwrap();
    assert_eq!(rig.realtime.mode, RealtimeMode::Require);
    assert_eq!(rig.realtime.window_priority, 60);
    assert_eq!(rig.realtime.display_priority, 50);
}

/// Sets a resource's soft limit, returning the old one.
fn set_soft_limit(resource: libc::__rlimit_resource_t, value: u64) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer and in-pointer to rlimit structs.
    unsafe {
        libc::getrlimit(resource, &mut old);
        let new = libc::rlimit {
            rlim_cur: value.min(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        libc::setrlimit(resource, &new);
    }
    old
}

/// Runs `f` on a thread (and the threads it starts) without CAP_SYS_NICE and
/// CAP_IPC_LOCK, with RLIMIT_RTPRIO and RLIMIT_MEMLOCK at 0: an unprivileged lab user.
fn unprivileged<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let _one = ONE_AT_A_TIME.lock();
    let rtprio = set_soft_limit(libc::RLIMIT_RTPRIO, 0);
    let memlock = set_soft_limit(libc::RLIMIT_MEMLOCK, 0);
    let r = thread::spawn(move || {
        for cap in [
            caps::Capability::CAP_SYS_NICE,
            caps::Capability::CAP_IPC_LOCK,
        ] {
            let _ = caps::drop(None, caps::CapSet::Effective, cap);
        }
        f()
    })
    .join();
    // SAFETY: restoring the limits read above.
    unsafe {
        libc::setrlimit(libc::RLIMIT_RTPRIO, &rtprio);
        libc::setrlimit(libc::RLIMIT_MEMLOCK, &memlock);
    }
    r.unwrap()
}

#[test]
fn without_permission_realtime_try_runs_on_and_says_what_is_missing() {
    let summary = unprivileged(|| {
        let running = Running::start("rt-refused", Mode::Event, |o| {
            o.realtime = RealtimeConfig {
                mode: RealtimeMode::Try,
                ..Default::default()
            };
        });
        assert!(
            running.fake.wait_for_daemon(30.0),
            "the daemon never connected"
        );
        stream(&running.fake, 1.2, &[0.2, 0.6], |_, _| {}, |_| false);
        thread::sleep(Duration::from_millis(800));
        running.stop()
    });
    assert_eq!(summary.frames_shown, 2, "{:?}", summary.counters);
    let rt = summary.realtime.expect("a realtime report");
    assert!(!rt.memory_locked);
    assert!(
        rt.threads.iter().all(|t| t.fifo_priority.is_none()),
        "{rt:?}"
    );
    let refused: Vec<String> = rt.refused.iter().map(|r| r.to_string()).collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0].contains("SCHED_FIFO")
            && refused[0].contains("CAP_SYS_NICE")
            && refused[0].contains("RLIMIT_RTPRIO is 0")
            && refused[0].contains("limits.d")
            && refused[0].contains("setcap"),
        "{}",
        refused[0]
    );
    assert!(
        refused[1].contains("mlockall")
            && refused[1].contains("RLIMIT_MEMLOCK")
            && refused[1].contains("memlock unlimited"),
        "{}",
        refused[1]
    );
    for role in ["ingest", "markers", "window", "decode-0", "display"] {
        assert!(
            rt.threads.iter().any(|t| t.thread == role),
            "{role}: {rt:?}"
        );
    }
}

#[test]
fn without_permission_realtime_require_refuses_to_start() {
    let err = unprivileged(|| {
        let dir = tempfile::tempdir().unwrap();
        let rig = super::common::small_rig(dir.path());
        let fake = super::common::FakeRig::new("rt-require", rig.channel_count);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut opts = super::daemon::options(rig, &fake, dir.path(), Mode::Event, stop);
        opts.realtime.mode = RealtimeMode::Require;
        monkeysee::daemon::run(opts).map(|_| ()).unwrap_err()
    });
    let text = format!("{err:#}");
    assert!(
        text.contains("--realtime=require") && text.contains("CAP_SYS_NICE"),
        "{text}"
    );
}

/// With the permissions (root here, or a lab's limits), every pipeline thread runs at
/// its priority and memory is locked; without them this is the refusal above, reported.
#[test]
fn realtime_threads_run_at_their_priorities_when_permitted() {
    let _one = ONE_AT_A_TIME.lock();
    let config = RealtimeConfig {
        mode: RealtimeMode::Try,
        ingest_priority: 31,
        window_priority: 22,
        decode_priority: 13,
        display_priority: 9,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.json");
    let running = Running::start("rt-granted", Mode::Event, |o| {
        o.realtime = config.clone();
        o.trace = Some(trace.clone());
        o.decode_threads = 2;
    });
    assert!(
        running.fake.wait_for_daemon(30.0),
        "the daemon never connected"
    );
    stream(&running.fake, 1.6, &[0.2, 0.6, 1.0], |_, _| {}, |_| false);
    thread::sleep(Duration::from_millis(800));
    let summary = running.stop();
    assert_eq!(summary.frames_shown, 3, "{:?}", summary.counters);
    let rt = summary.realtime.expect("a realtime report");
    if rt.refused.is_empty() {
        assert!(rt.memory_locked);
        for (thread, want) in [
            ("ingest", 31),
            ("window", 22),
            ("decode-0", 13),
            ("decode-1", 13),
        ] {
            let t = rt.threads.iter().find(|t| t.thread == thread);
            assert_eq!(
                t.and_then(|t| t.fifo_priority),
                Some(want),
                "{thread}: {rt:?}"
            );
        }
    } else {
        assert!(
            rt.threads.iter().all(|t| t.fifo_priority.is_none()),
            "{rt:?}"
        );
    }

    // The trace: each frame's decode and present on their threads, after its windows.
    let spans = monkeysee::trace::read_spans(&trace).unwrap();
    let seqs: Vec<u64> = spans
        .iter()
        .filter(|s| s.name == "frame" && s.thread == "window")
        .filter_map(|s| s.seq)
        .collect();
    let names: std::collections::BTreeSet<(&str, &str)> = spans
        .iter()
        .map(|s| (s.thread.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(seqs.len(), 3, "{seqs:?} in {names:?}");
    for seq in seqs {
        let ready = spans
            .iter()
            .find(|s| s.name == "frame" && s.seq == Some(seq))
            .unwrap()
            .start_us;
        let decode = spans
            .iter()
            .find(|s| s.name == "decode" && s.seq == Some(seq))
            .unwrap_or_else(|| panic!("frame {seq} has a decode span"));
        assert!(decode.thread.starts_with("decode-"), "{decode:?}");
        let present = spans
            .iter()
            .find(|s| s.name == "present" && s.seq == Some(seq))
            .unwrap_or_else(|| panic!("frame {seq} has a present span"));
        assert!(
            ready <= decode.start_us && decode.end_us <= present.start_us + 1.0,
            "frame {seq}: ready at {ready} µs, {decode:?}, {present:?}"
        );
    }
    assert!(spans
        .iter()
        .any(|s| s.name == "ingest" && s.thread == "ingest"));
    assert!(spans
        .iter()
        .any(|s| s.name == "window" && s.thread == "window"));
    if monkeysee::plot::have_font() {
        let png = summary
            .trace_picture
            .expect("a picture of the slowest frame");
        assert!(image::open(png).unwrap().width() > 500);
    }
}
