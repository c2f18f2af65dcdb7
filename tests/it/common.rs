use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use monkeysee::config::RigConfig;

/// Counts allocations made by the current thread while counting is switched on and,
/// while a byte limit is set ([`allocation_peak_in`]), tracks the thread's live heap
/// bytes and refuses any single allocation above the limit.
pub struct CountingAlloc;

/// Allocations by threads counting into the shared count ([`allocations_in_pool`]).
static SHARED_COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// This thread counts into [`SHARED_COUNT`].
    static SHARED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
    /// Largest single allocation this thread may make (`usize::MAX`: no limit, no tracking).
    static LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Bytes this thread allocated minus those it freed, since tracking began.
    static LIVE: Cell<i64> = const { Cell::new(0) };
    /// Highest `LIVE` since tracking began.
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

// SAFETY: defers every operation to the system allocator; only reads and bumps
// thread-local counters (const-initialised Cells without destructors) on the side, and
// returns null (allocation failure, which the caller must handle) for a request above
// the thread's limit.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !admit(0, layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as i64));
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !admit(0, layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !admit(layout.size(), new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Counts an allocation growing a block from `old` to `new` bytes; false (refused) when
/// `new` is above the thread's limit.
fn admit(old: usize, new: usize) -> bool {
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = COUNT.try_with(|n| n.set(n.get() + 1));
        }
    });
    if SHARED.try_with(Cell::get).unwrap_or(false) {
        SHARED_COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let limit = LIMIT.try_with(Cell::get).unwrap_or(usize::MAX);
    if limit == usize::MAX {
        return true;
    }
    if new > limit {
        refused(new, limit);
        return false;
    }
    track(new as i64 - old as i64);
    true
}

fn track(delta: i64) {
    if LIMIT.try_with(Cell::get).unwrap_or(usize::MAX) == usize::MAX {
        return;
    }
    let _ = LIVE.try_with(|live| {
        live.set(live.get() + delta);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
    });
}

/// Says on stderr (without allocating) that a request was refused: the caller will
/// most likely abort the process with "memory allocation of N bytes failed".
fn refused(size: usize, limit: usize) {
    use std::io::Write as _;
    struct Buf([u8; 256], usize);
    impl std::fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let end = (self.1 + s.len()).min(self.0.len());
            self.0[self.1..end].copy_from_slice(&s.as_bytes()[..end - self.1]);
            self.1 = end;
            Ok(())
        }
    }
    let mut b = Buf([0; 256], 0);
    let _ = std::fmt::Write::write_fmt(
        &mut b,
        format_args!(
            "\nrefused a single allocation of {size} bytes (the limit is {limit}): \
             the input is the last case written under target/tmp/fuzz-*\n"
        ),
    );
    let _ = std::io::stderr().write_all(&b.0[..b.1]);
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Runs `f` and returns how many heap allocations this thread made inside it.
pub fn allocations_in<R>(f: impl FnOnce() -> R) -> (R, u64) {
    COUNT.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, COUNT.with(|n| n.get()))
}

/// Runs `f` on `pool` and returns how many heap allocations every thread of the pool
/// made while it ran (the calling thread of `f` is one of them).
pub fn allocations_in_pool<R: Send>(
    pool: &rayon::ThreadPool,
    f: impl FnOnce() -> R + Send,
) -> (R, u64) {
    use std::sync::atomic::Ordering;
    pool.install(|| {
        pool.broadcast(|_| SHARED.with(|c| c.set(true)));
        let before = SHARED_COUNT.load(Ordering::SeqCst);
        let r = f();
        let after = SHARED_COUNT.load(Ordering::SeqCst);
        pool.broadcast(|_| SHARED.with(|c| c.set(false)));
        (r, after - before)
    })
}

/// Runs `f` with every single allocation of this thread limited to `limit` bytes (a
/// larger request fails, which aborts the process unless the caller handles it), and
/// returns the peak of the heap bytes this thread held inside it.
pub fn allocation_peak_in<R>(limit: usize, f: impl FnOnce() -> R) -> (R, u64) {
    LIVE.with(|n| n.set(0));
    PEAK.with(|n| n.set(0));
    LIMIT.with(|l| l.set(limit.min(usize::MAX - 1)));
    let r = f();
    LIMIT.with(|l| l.set(usize::MAX));
    (r, PEAK.with(|n| n.get()).max(0) as u64)
}

/// Runs `f` with this thread's byte limit and peak tracking off (a panic hook's
/// backtrace is not the reader's memory).
pub fn untracked<R>(f: impl FnOnce() -> R) -> R {
    let limit = LIMIT.with(|l| l.replace(usize::MAX));
    let r = f();
    LIMIT.with(|l| l.set(limit));
    r
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn synthetic_rig_path() -> PathBuf {
    repo().join("firmware-config/synthetic.toml")
}

/// The synthetic rig with `replace` applied to its TOML text (pairs of exact
/// substrings), written into `dir` beside a copy of its RF table.
pub fn rig_variant(dir: &Path, replace: &[(&str, &str)]) -> (PathBuf, String) {
    let mut text = std::fs::read_to_string(synthetic_rig_path()).unwrap();
    for (a, b) in replace {
        assert!(text.contains(a), "test rig edit: {a:?} not found");
        text = text.replacen(a, b, 1);
    }
    std::fs::copy(
        repo().join("firmware-config/synthetic-rf.csv"),
        dir.join("synthetic-rf.csv"),
    )
    .unwrap();
    let p = dir.join("rig.toml");
    std::fs::write(&p, &text).unwrap();
    (p, text)
}

/// The synthetic rig at a small image size (32 px) so decoder tests run fast.
pub fn small_rig(dir: &Path) -> RigConfig {
    let (p, _) = rig_variant(
        dir,
        &[
            ("image_size = 96", "image_size = 32"),
            ("pixels_per_degree = 12.0", "pixels_per_degree = 4.0"),
        ],
    );
    RigConfig::load(&p).unwrap()
}

/// A stream name no other test uses.
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "ms-test-{}-{}-{}",
        tag,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// LSL outlets standing in for a rig: a float32 MUA stream and a string marker stream.
pub struct FakeRig {
    pub mua: lsl::StreamOutlet,
    pub markers: lsl::StreamOutlet,
    pub channels: usize,
    pub mua_name: String,
    pub marker_name: String,
}

impl FakeRig {
    pub fn new(tag: &str, channels: usize) -> FakeRig {
        let mua_name = unique(&format!("{tag}-mua"));
        let marker_name = unique(&format!("{tag}-markers"));
        let info = lsl::StreamInfo::new(
            &mua_name,
            "MUA",
            channels as u32,
            1000.0,
            lsl::ChannelFormat::Float32,
            &mua_name,
        )
        .unwrap();
        let mua = lsl::StreamOutlet::new(&info, 10, 360).unwrap();
        let minfo = lsl::StreamInfo::new(
            &marker_name,
            "Markers",
            1,
            lsl::IRREGULAR_RATE,
            lsl::ChannelFormat::String,
            &marker_name,
        )
        .unwrap();
        let markers = lsl::StreamOutlet::new(&minfo, 1, 360).unwrap();
        FakeRig {
            mua,
            markers,
            channels,
            mua_name,
            marker_name,
        }
    }

    /// Closes the MUA outlet and, after `silence`, opens another under the same name
    /// with `source_id` and `channels` (a restarted source, configured differently).
    pub fn replace_mua(&mut self, silence: std::time::Duration, source_id: &str, channels: usize) {
        let placeholder = lsl::StreamInfo::new(
            &unique("placeholder"),
            "none",
            1,
            1.0,
            lsl::ChannelFormat::Float32,
            "",
        )
        .unwrap();
        drop(std::mem::replace(
            &mut self.mua,
            lsl::StreamOutlet::new(&placeholder, 1, 1).unwrap(),
        ));
        std::thread::sleep(silence);
        self.mua = self.outlet_like_mua(source_id, channels);
    }

    /// An outlet with the MUA stream's name and rate and the given source_id and
    /// channel count.
    pub fn outlet_like_mua(&self, source_id: &str, channels: usize) -> lsl::StreamOutlet {
        let info = lsl::StreamInfo::new(
            &self.mua_name,
            "MUA",
            channels as u32,
            1000.0,
            lsl::ChannelFormat::Float32,
            source_id,
        )
        .unwrap();
        lsl::StreamOutlet::new(&info, 10, 360).unwrap()
    }

    pub fn mua_query(&self) -> String {
        format!("name='{}'", self.mua_name)
    }

    pub fn marker_query(&self) -> String {
        format!("name='{}'", self.marker_name)
    }

    /// Waits until the daemon's inlets are connected to both outlets.
    pub fn wait_for_daemon(&self, seconds: f64) -> bool {
        self.mua.wait_for_consumers(seconds) && self.markers.wait_for_consumers(seconds)
    }
}

/// What every torchvision-file loader refuses through `monkeysee::pth::open`, with the
/// reason in its error: a file that is not a PyTorch file, a missing file, a directory.
/// `err` loads a path and returns the error's text.
pub fn assert_unopenable_pth_files_are_refused(err: impl Fn(&Path) -> String) {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("weights.pth");
    std::fs::write(&corrupt, b"PK\x03\x04 this is not a checkpoint").unwrap();
    let e = err(&corrupt);
    assert!(e.contains("not a readable PyTorch file"), "{e}");
    let e = err(&dir.path().join("missing.pth"));
    assert!(e.contains("no such file"), "{e}");
    let e = err(dir.path());
    assert!(e.contains("a directory"), "{e}");
}
