//! Real-time scheduling for the pipeline (`run --realtime`, `[realtime]` in the rig
//! config): what real-time rigs (BRAND, RTXI, LiCoRICE) do so that other work on the
//! machine cannot stretch a frame.
//!
//! - **Memory locked and pre-faulted**: `mlockall(MCL_CURRENT | MCL_FUTURE)` before any
//!   pipeline thread starts, so every page the process has or maps later is resident
//!   (no page fault, no swap-in mid-frame); glibc's heap trimming and per-allocation
//!   mmaps are turned off so freed memory is not handed back and faulted in again (for
//!   the rest of the process's life); each real-time thread touches [`STACK_PREFAULT`]
//!   of its stack as it starts. The run unlocks at its end ([`Realtime::release`]).
//! - **Real-time priorities**: the ingest and marker threads, the window thread, the
//!   decode threads (the decoder's whole pool) and, while the run lasts, the display
//!   thread run under `SCHED_FIFO` at the configured priorities (ingest highest: a late
//!   pull overruns the ring; a late onset marker holds its frame back). liblsl's receiver
//!   threads for the MUA and marker inlets start from the ingest and marker threads and
//!   inherit their priority and core, on purpose: they carry the samples (an inlet the
//!   stream watch opens as a replacement does not). Publishing, recording and writing
//!   PNGs stay normal.
//! - **CPU affinity**, where there are cores enough (decode threads + 2): ingest,
//!   markers and window share the last core, each decode thread gets one of the cores
//!   before it, and the rest (at least one) is left to the machine. With pinning on and
//!   `--decode-threads 0`, the pool takes all cores but two ([`pinned_pool_size`]).
//!
//! The system may refuse each of these. [`Realtime::start`] asks for the memory lock and
//! probes the scheduler on a short-lived thread before the pipeline exists, so that a
//! refusal is known once, up front: [`Refusal`] says what was asked, which permission
//! was missing (`CAP_SYS_NICE`, `RLIMIT_RTPRIO`, `CAP_IPC_LOCK`, `RLIMIT_MEMLOCK`, a
//! container's real-time budget) and how a lab grants it. With [`RealtimeMode::Try`] the
//! run goes on without what was refused; with [`RealtimeMode::Require`] it is an error.
//! Everything here runs at start-up or as a thread starts, never in a loop.

use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Bytes of stack each real-time thread touches as it starts.
pub const STACK_PREFAULT: usize = 256 * 1024;

/// How hard to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RealtimeMode {
    /// Normal scheduling, nothing locked.
    Off,
    /// Ask; run on without whatever the system refuses, saying what and why.
    Try,
    /// Ask; refuse to run without all of it.
    Require,
}

impl RealtimeMode {
    /// The name used in the rig config and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Try => "try",
            Self::Require => "require",
        }
    }
}

/// The `[realtime]` section of a rig config (the priorities checked by [`crate::config`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RealtimeConfig {
    pub mode: RealtimeMode,
    /// Lock and pre-fault the process's memory.
    pub lock_memory: bool,
    /// `SCHED_FIFO` priorities, 1–99.
    pub ingest_priority: u8,
    pub window_priority: u8,
    pub decode_priority: u8,
    /// The display thread's: a frame is late until it is on the screen.
    pub display_priority: u8,
    /// Pin the real-time threads to cores when there are enough.
    pub pin_threads: bool,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            mode: RealtimeMode::Off,
            lock_memory: true,
            ingest_priority: 80,
            window_priority: 75,
            decode_priority: 70,
            display_priority: 65,
            pin_threads: true,
        }
    }
}

impl RealtimeConfig {
    fn priority(&self, role: Role) -> u8 {
        match role {
            Role::Ingest => self.ingest_priority,
            Role::Window => self.window_priority,
            Role::Decode => self.decode_priority,
            Role::Display => self.display_priority,
        }
    }
}

/// The pipeline threads that run real-time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The MUA and marker threads.
    Ingest,
    Window,
    /// Every thread of the decoder's pool.
    Decode,
    /// The thread that shows frames (the caller of `daemon::run`), for the run only:
    /// see [`Realtime::enter_for_run`].
    Display,
}

/// Something the system did not grant: what was asked, why not, and how a lab grants it.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{what} was refused: {why}. To grant it: {fix}")]
pub struct Refusal {
    pub what: String,
    pub why: String,
    pub fix: String,
}

/// One real-time thread as it started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadState {
    pub thread: String,
    /// `SCHED_FIFO` priority, when it was granted.
    pub fifo_priority: Option<u8>,
    /// The core it is pinned to, if pinned.
    pub cpu: Option<usize>,
}

/// What a run got: for the summary and `bench.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RealtimeReport {
    pub mode: String,
    pub memory_locked: bool,
    /// Why threads are not pinned (too few cores, or pinning off), when they are not.
    pub not_pinned: Option<String>,
    pub threads: Vec<ThreadState>,
    pub refused: Vec<Refusal>,
}

/// Which core each real-time thread gets, when there are enough.
#[derive(Debug, Clone, PartialEq)]
struct CpuPlan {
    /// Ingest and window.
    input: usize,
    /// Decode thread i gets `decode[i % len]`.
    decode: Vec<usize>,
}

/// The process's real-time state for one run. Dropping it unlocks the memory it locked.
pub struct Realtime {
    config: RealtimeConfig,
    /// The scheduler probe succeeded: threads ask for `SCHED_FIFO`.
    fifo: bool,
    locked: bool,
    plan: Result<CpuPlan, String>,
    refused: Vec<Refusal>,
    /// Filled as threads start (start-up only, never in a loop).
    threads: Mutex<Vec<ThreadState>>,
    decode_started: std::sync::atomic::AtomicUsize,
    released: std::sync::atomic::AtomicBool,
}

impl Realtime {
    /// Locks memory and probes the scheduler as `config` asks, before any pipeline thread
    /// exists. `None` when the mode is off. In `Require` mode the first refusal is the
    /// error; in `Try` mode refusals are kept for the report.
    pub fn start(
        config: &RealtimeConfig,
        decode_threads: usize,
    ) -> Result<Option<Arc<Realtime>>, Refusal> {
        if config.mode == RealtimeMode::Off {
            return Ok(None);
        }
        let mut refused = Vec::new();
        let highest = config
            .ingest_priority
            .max(config.window_priority)
            .max(config.decode_priority)
            .max(config.display_priority);
        let fifo = match probe_fifo(highest) {
            Ok(()) => true,
            Err(r) => {
                refused.push(r);
                false
            }
        };
        if config.mode == RealtimeMode::Require {
            if let Some(r) = refused.pop() {
                return Err(r);
            }
        }
        let mut locked = false;
        if config.lock_memory {
            match lock_memory() {
                Ok(()) => locked = true,
                Err(r) if config.mode == RealtimeMode::Require => return Err(r),
                Err(r) => refused.push(r),
            }
        }
        let plan = if config.pin_threads {
            cpu_plan(available_cores(), decode_threads)
        } else {
            Err("pinning is off ([realtime] pin_threads = false)".into())
        };
        Ok(Some(Arc::new(Realtime {
            config: config.clone(),
            fifo,
            locked,
            plan,
            refused,
            threads: Mutex::new(Vec::new()),
            decode_started: Default::default(),
            released: Default::default(),
        })))
    }

    /// What was refused at start-up (empty when everything was granted).
    pub fn refusals(&self) -> &[Refusal] {
        &self.refused
    }

    /// Makes the calling thread real-time for `role`: its stack pre-faulted, `SCHED_FIFO`
    /// at the role's priority (when the probe said it may), pinned when planned. Call it
    /// once, first thing in the thread.
    pub fn enter(&self, role: Role) {
        prefault_stack();
        let fifo_priority = self.config.priority(role);
        let fifo_priority = (self.fifo && set_fifo(fifo_priority).is_ok()).then_some(fifo_priority);
        let cpu = self.plan.as_ref().ok().and_then(|plan| {
            let core = match role {
                Role::Display => return None,
                Role::Ingest | Role::Window => plan.input,
                Role::Decode => {
                    let i = self
                        .decode_started
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    plan.decode[i % plan.decode.len()]
                }
            };
            core_affinity::set_for_current(core_affinity::CoreId { id: core }).then_some(core)
        });
        let thread = match role {
            // The caller of `daemon::run`, whatever its own name.
            Role::Display => "display".to_string(),
            _ => std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_string(),
        };
        self.threads.lock().push(ThreadState {
            thread,
            fifo_priority,
            cpu,
        });
    }

    /// [`Realtime::enter`] for the calling thread, which outlives the run (the display
    /// thread is `daemon::run`'s caller): its scheduling comes back when the guard drops.
    pub fn enter_for_run(&self, role: Role) -> SchedulingRestored {
        let mut policy = 0;
        // SAFETY: an all-zero sched_param is valid; both pointers are to locals.
        let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
        // SAFETY: pthread_self is always valid; the out-pointers are valid.
        let saved =
            unsafe { libc::pthread_getschedparam(libc::pthread_self(), &mut policy, &mut param) }
                == 0;
        self.enter(role);
        SchedulingRestored {
            saved: saved.then_some((policy, param)),
        }
    }

    /// What the run got.
    pub fn report(&self) -> RealtimeReport {
        let mut threads = self.threads.lock().clone();
        threads.sort_by(|a, b| a.thread.cmp(&b.thread));
        RealtimeReport {
            mode: self.config.mode.name().into(),
            memory_locked: self.locked,
            not_pinned: self.plan.as_ref().err().cloned(),
            threads,
            refused: self.refused.clone(),
        }
    }
}

impl Realtime {
    /// Unlocks the process's memory (at the end of a run: a decode thread may hold this
    /// a little longer, and the caller goes on). Once; dropping does it too.
    pub fn release(&self) {
        if self.locked
            && !self
                .released
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            // SAFETY: no arguments; undoes this process's mlockall.
            unsafe { libc::munlockall() };
        }
    }

    /// The start-up line: what was granted and what each role asks for.
    pub fn describe(&self) -> String {
        let c = &self.config;
        let scheduling = if self.fifo {
            format!(
                "SCHED_FIFO ingest and markers {}, window {}, decode {}, display {}",
                c.ingest_priority, c.window_priority, c.decode_priority, c.display_priority
            )
        } else {
            "normal scheduling (refused)".into()
        };
        format!(
            "realtime ({}): memory {}; {scheduling}; {}",
            c.mode.name(),
            if self.locked { "locked" } else { "not locked" },
            match &self.plan {
                Ok(p) => format!(
                    "ingest, markers and window on cpu {}, decode on {:?}",
                    p.input, p.decode
                ),
                Err(why) => format!("not pinned: {why}"),
            }
        )
    }
}

impl Drop for Realtime {
    fn drop(&mut self) {
        self.release();
    }
}

/// The decoder pool's size when `config` pins threads and the machine has cores enough
/// (at least three): all cores but two, one left to the machine beside the input core.
/// `None` otherwise: the pool's usual default applies.
pub fn pinned_pool_size(config: &RealtimeConfig) -> Option<usize> {
    let cores = available_cores().len();
    (config.mode != RealtimeMode::Off && config.pin_threads && cores >= 3).then(|| cores - 2)
}

/// Puts the calling thread's scheduling back as it was (see [`Realtime::enter_for_run`]).
pub struct SchedulingRestored {
    saved: Option<(i32, libc::sched_param)>,
}

impl Drop for SchedulingRestored {
    fn drop(&mut self) {
        if let Some((policy, param)) = self.saved {
            // SAFETY: restores this thread's own policy and parameters read earlier.
            unsafe { libc::pthread_setschedparam(libc::pthread_self(), policy, &param) };
        }
    }
}

/// Raises the calling thread to `SCHED_FIFO` at `priority` (for a thread outside the
/// pipeline that must not be slowed either, such as the bench's replay, which stands in
/// for the acquisition machine); a refusal explained.
pub fn fifo_current_thread(priority: u8) -> Result<(), Refusal> {
    set_fifo(priority).map_err(|code| explain_fifo(priority, code))
}

/// The cores this process may run on.
fn available_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// Ingest and window on the last core, one core per decode thread before it, and at
/// least one core left; else why not.
fn cpu_plan(cores: Vec<usize>, decode_threads: usize) -> Result<CpuPlan, String> {
    let d = decode_threads.max(1);
    if cores.len() < d + 2 {
        return Err(format!(
            "{} core{} available; pinning needs {} (one for ingest and window, one per decode thread, one for the rest of the machine)",
            cores.len(),
            if cores.len() == 1 { "" } else { "s" },
            d + 2
        ));
    }
    let n = cores.len();
    Ok(CpuPlan {
        input: cores[n - 1],
        decode: cores[n - 1 - d..n - 1].to_vec(),
    })
}

/// Asks for `SCHED_FIFO` at `priority` on a short-lived thread (so nothing of this
/// process changes), and explains a refusal.
fn probe_fifo(priority: u8) -> Result<(), Refusal> {
    let probe = std::thread::Builder::new()
        .name("realtime-probe".into())
        .spawn(move || set_fifo(priority))
        .map_err(|e| Refusal {
            what: format!("real-time scheduling (SCHED_FIFO {priority})"),
            why: format!("the probe thread could not start: {e}"),
            fix: "check the process's thread limit".into(),
        })?;
    match probe.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(code)) => Err(explain_fifo(priority, code)),
        Err(_) => Err(Refusal {
            what: format!("real-time scheduling (SCHED_FIFO {priority})"),
            why: "the probe thread panicked".into(),
            fix: "report this as a bug".into(),
        }),
    }
}

/// `SCHED_FIFO` at `priority` for the calling thread; the errno on refusal.
fn set_fifo(priority: u8) -> Result<(), i32> {
    use thread_priority::{
        RealtimeThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
    };
    let value = ThreadPriorityValue::try_from(priority).map_err(|_| libc::EINVAL)?;
    thread_priority::set_thread_priority_and_policy(
        thread_priority::thread_native_id(),
        ThreadPriority::Crossplatform(value),
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
    )
    .map_err(|e| match e {
        thread_priority::Error::OS(code) => code,
        _ => libc::EINVAL,
    })
}

/// Why the kernel refused `SCHED_FIFO`, and what grants it.
fn explain_fifo(priority: u8, code: i32) -> Refusal {
    let what = format!("real-time scheduling (SCHED_FIFO priority {priority})");
    let containers = "in a container, start it with --cap-add SYS_NICE --ulimit rtprio=99";
    let limits = "add `@monkeysee - rtprio 99` to /etc/security/limits.d/99-monkeysee.conf and run as a member of group monkeysee (log in again), or `sudo setcap cap_sys_nice+ep $(command -v monkeysee)`; under systemd, LimitRTPRIO=99 in the service";
    if code != libc::EPERM {
        return Refusal {
            what,
            why: format!(
                "the kernel said {}",
                std::io::Error::from_raw_os_error(code)
            ),
            fix: "priorities are 1-99; check [realtime] in the rig config".into(),
        };
    }
    let cap = has_capability(caps::Capability::CAP_SYS_NICE);
    let rtprio = rlimit(libc::RLIMIT_RTPRIO);
    if cap || rtprio >= u64::from(priority) {
        // Permitted by capability or limit, refused all the same: the real-time budget
        // of the control group (cgroup v1 RT group scheduling, as Docker sets it up).
        let budget = rt_budget();
        return Refusal {
            what,
            why: format!(
                "this process may use real-time priorities ({}) but its control group has no real-time budget{}",
                if cap { "CAP_SYS_NICE".to_string() } else { format!("RLIMIT_RTPRIO {rtprio}") },
                budget.map_or_else(String::new, |b| format!(" ({b})"))
            ),
            fix: "give the group a budget: Docker's --cpu-rt-runtime=950000 (with the daemon's --cpu-rt-runtime set), or write a runtime into the group's cpu.rt_runtime_us; or run on the host".into(),
        };
    }
    Refusal {
        what,
        why: format!(
            "the process lacks CAP_SYS_NICE and its RLIMIT_RTPRIO is {rtprio} (priority {priority} needs at least {priority})"
        ),
        fix: format!("{limits}; {containers}"),
    }
}

/// `mlockall(MCL_CURRENT | MCL_FUTURE)`, glibc's heap trimming off; a refusal explained.
fn lock_memory() -> Result<(), Refusal> {
    // SAFETY: flags are valid constants; the call changes only this process's paging.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        let limit = rlimit(libc::RLIMIT_MEMLOCK);
        let limit = if limit == u64::MAX {
            "unlimited".to_string()
        } else {
            format!("{} KiB", limit / 1024)
        };
        let cap = has_capability(caps::Capability::CAP_IPC_LOCK);
        return Err(Refusal {
            what: "locking the process's memory (mlockall)".into(),
            why: format!(
                "{err}; RLIMIT_MEMLOCK is {limit} and the process {} CAP_IPC_LOCK",
                if cap { "has" } else { "lacks" }
            ),
            fix: "add `@monkeysee - memlock unlimited` to /etc/security/limits.d/99-monkeysee.conf (log in again), or `sudo setcap cap_ipc_lock+ep $(command -v monkeysee)`; under systemd, LimitMEMLOCK=infinity; in a container, --ulimit memlock=-1".into(),
        });
    }
    // Freed heap stays mapped (and locked) instead of being faulted in again later: no
    // trimming, and no allocation served by an mmap of its own (which free unmaps).
    // SAFETY: documented glibc tunables; the values are in range.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        libc::mallopt(libc::M_MMAP_MAX, 0);
    };
    Ok(())
}

/// Touches [`STACK_PREFAULT`] bytes of this thread's stack, so its pages exist (and,
/// under `mlockall`, stay) before the thread's loop needs them.
fn prefault_stack() {
    let mut page = [0u8; STACK_PREFAULT];
    for b in page.iter_mut().step_by(4096) {
        // SAFETY: a plain volatile write into this function's own array.
        unsafe { std::ptr::write_volatile(b, 1) };
    }
    std::hint::black_box(&page);
}

fn has_capability(cap: caps::Capability) -> bool {
    caps::has_cap(None, caps::CapSet::Effective, cap).unwrap_or(false)
}

/// A resource's soft limit (`u64::MAX`: unlimited).
fn rlimit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 {
        return 0;
    }
    if r.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        r.rlim_cur
    }
}

/// The control group's real-time runtime, when cgroup v1's cpu controller shows one.
fn rt_budget() -> Option<String> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "cpu")
            .then(|| path.to_string())
    })?;
    let file = format!("/sys/fs/cgroup/cpu,cpuacct{path}/cpu.rt_runtime_us");
    let us = std::fs::read_to_string(&file).ok()?;
    Some(format!("{file} is {}", us.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_needs_a_core_for_input_one_per_decode_thread_and_one_spare() {
        assert!(cpu_plan(vec![0, 1], 1).is_err());
        let why = cpu_plan(vec![0, 1, 2], 2).unwrap_err();
        assert!(why.contains("3 cores available; pinning needs 4"), "{why}");
        let plan = cpu_plan(vec![0, 1, 2, 3], 2).unwrap();
        assert_eq!(plan.input, 3);
        assert_eq!(plan.decode, vec![1, 2]);
        // Gaps in the allowed set are kept.
        let plan = cpu_plan(vec![2, 4, 6, 8], 1).unwrap();
        assert_eq!((plan.input, plan.decode), (8, vec![6]));
    }

    #[test]
    fn the_decode_pool_leaves_a_core_for_the_machine_when_threads_are_pinned() {
        let cores = available_cores().len();
        let mut cfg = RealtimeConfig::default();
        assert_eq!(pinned_pool_size(&cfg), None, "off");
        cfg.mode = RealtimeMode::Try;
        let want = (cores >= 3).then(|| cores - 2);
        assert_eq!(pinned_pool_size(&cfg), want);
        cfg.pin_threads = false;
        assert_eq!(pinned_pool_size(&cfg), None, "pinning off");
    }

    #[test]
    fn off_asks_for_nothing() {
        let cfg = RealtimeConfig::default();
        assert!(Realtime::start(&cfg, 1).unwrap().is_none());
    }

    #[test]
    fn a_refused_priority_names_the_missing_permission_and_the_fix() {
        let r = explain_fifo(80, libc::EPERM);
        let text = r.to_string();
        assert!(text.contains("SCHED_FIFO priority 80"), "{text}");
        // Root here has CAP_SYS_NICE, so the explanation is the group's budget; an
        // unprivileged user gets the limits.d / setcap advice.
        let cap = has_capability(caps::Capability::CAP_SYS_NICE);
        if cap {
            assert!(text.contains("real-time budget"), "{text}");
        } else {
            assert!(
                text.contains("CAP_SYS_NICE") && text.contains("rtprio"),
                "{text}"
            );
        }
        let other = explain_fifo(120, libc::EINVAL).to_string();
        assert!(other.contains("1-99"), "{other}");
    }
}
