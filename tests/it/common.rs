use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use monkeysee::config::RigConfig;

/// Counts allocations made by the current thread while counting is switched on.
pub struct CountingAlloc;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers every operation to the system allocator; only bumps thread-local
// counters (const-initialised Cells without destructors) on the side.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn note() {
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = COUNT.try_with(|n| n.set(n.get() + 1));
        }
    });
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
