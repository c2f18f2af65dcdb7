//! Display: shows each reconstruction (beside the true stimulus when it is known)
//! in a minifb window on the main thread, or, headless, writes PNG frames and a
//! contact sheet. The display never slows the decoder: the decoder hands frames
//! over through a latest-wins triple buffer, so a slow display only skips frames.
//!
//! Nothing that can wait sits on the display thread either: stimulus images are decoded
//! by the `stimuli` thread when their onset marker arrives ([`StimulusLoader`]), about
//! 200 ms before their frame, and headless PNGs are encoded and written by the
//! `frames-writer` thread ([`HeadlessPresenter`]; a full queue costs a counted
//! `frames_unwritten`, not a frame on screen).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};
use image::{imageops, Rgb, RgbImage};

use crate::telemetry::Counters;
use crate::window::ImageId;

/// A reconstruction as the decoder produced it: `[3][size][size]` floats in [0, 1].
pub fn rgb_planes_to_image(planes: &[f32], size: usize) -> RgbImage {
    let plane = size * size;
    RgbImage::from_fn(size as u32, size as u32, |x, y| {
        let i = y as usize * size + x as usize;
        let q = |v: f32| (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
        Rgb([q(planes[i]), q(planes[plane + i]), q(planes[2 * plane + i])])
    })
}

/// Looks up stimulus images by id in a folder (`<id>.png`, `.jpg`, `.jpeg`),
/// resized to the reconstruction size. Missing images are remembered as missing.
pub struct StimulusStore {
    dir: Option<PathBuf>,
    size: u32,
    cache: HashMap<String, Option<RgbImage>>,
}

impl StimulusStore {
    pub fn new(dir: Option<PathBuf>, size: usize) -> Self {
        StimulusStore {
            dir,
            size: size as u32,
            cache: HashMap::new(),
        }
    }

    pub fn get(&mut self, id: &str) -> Option<&RgbImage> {
        let dir = self.dir.as_ref()?;
        if !self.cache.contains_key(id) {
            let img = ["png", "jpg", "jpeg"]
                .iter()
                .map(|ext| dir.join(format!("{id}.{ext}")))
                .find(|p| p.exists())
                .and_then(|p| image::open(p).ok())
                .map(|i| {
                    imageops::resize(
                        &i.to_rgb8(),
                        self.size,
                        self.size,
                        imageops::FilterType::Triangle,
                    )
                });
            self.cache.insert(id.to_string(), img);
        }
        self.cache.get(id).and_then(Option::as_ref)
    }
}

/// Stimulus images decoded off the display thread: the marker thread sends each onset's
/// image id ([`StimulusLoader::requests`]), the `stimuli` thread loads it with a
/// [`StimulusStore`], and the display collects what is ready ([`StimulusLoader::get`]).
pub struct StimulusLoader {
    ready: Receiver<(ImageId, Option<RgbImage>)>,
    /// What the display has collected (cleared when it grows past [`Self::KEEP`]).
    cache: HashMap<String, Option<RgbImage>>,
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl StimulusLoader {
    /// Images the display keeps before it starts over.
    const KEEP: usize = 512;

    /// The queue the marker thread sends image ids on, and its other end for [`start`].
    ///
    /// [`start`]: StimulusLoader::start
    pub fn requests() -> (Sender<ImageId>, Receiver<ImageId>) {
        bounded(256)
    }

    /// Starts the `stimuli` thread on `dir`, loading every id that arrives on `requests`
    /// at `size` px.
    pub fn start(
        dir: PathBuf,
        size: usize,
        requests: Receiver<ImageId>,
    ) -> std::io::Result<StimulusLoader> {
        let (tx, ready) = bounded(64);
        let stop = Arc::new(AtomicBool::new(false));
        let quit = stop.clone();
        let thread = std::thread::Builder::new()
            .name("stimuli".into())
            .spawn(move || {
                let mut store = StimulusStore::new(Some(dir), size);
                // Polled: a receiver blocked in the channel would make the marker
                // thread's `try_send` take the channel's lock to wake it.
                while !quit.load(Ordering::Relaxed) {
                    match requests.try_recv() {
                        Ok(id) => {
                            let img = store.get(id.as_str()).cloned();
                            if tx.send_timeout((id, img), Duration::from_secs(1)).is_err() {
                                return;
                            }
                        }
                        Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(5)),
                        Err(TryRecvError::Disconnected) => return,
                    }
                }
            })?;
        Ok(StimulusLoader {
            ready,
            cache: HashMap::new(),
            thread: Some(thread),
            stop,
        })
    }

    /// The stimulus for `id`: `Some(Some(image))` when loaded, `Some(None)` when the
    /// folder has none, `None` when it is not loaded yet.
    pub fn get(&mut self, id: &str) -> Option<Option<&RgbImage>> {
        while let Ok((loaded, img)) = self.ready.try_recv() {
            if self.cache.len() >= Self::KEEP {
                self.cache.clear();
            }
            self.cache.insert(loaded.as_str().to_string(), img);
        }
        self.cache.get(id).map(Option::as_ref)
    }
}

impl Drop for StimulusLoader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock a send waiting on a full queue.
        while self.ready.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Places the stimulus (if any) left of the reconstruction, 4 px apart.
pub fn side_by_side(recon: &RgbImage, stimulus: Option<&RgbImage>) -> RgbImage {
    match stimulus {
        None => recon.clone(),
        Some(s) => {
            let gap = 4;
            let mut out = RgbImage::from_pixel(
                s.width() + gap + recon.width(),
                recon.height().max(s.height()),
                Rgb([32, 32, 32]),
            );
            imageops::replace(&mut out, s, 0, 0);
            imageops::replace(&mut out, recon, (s.width() + gap) as i64, 0);
            out
        }
    }
}

/// What a presenter shows for one frame.
pub struct Shown<'a> {
    pub seq: u64,
    pub image_id: Option<&'a str>,
    pub picture: &'a RgbImage,
    /// End-to-end latency so far, for the title bar.
    pub latency_ms: f64,
}

/// Something that presents frames: a window or a folder.
pub trait Presenter {
    /// Shows one frame. Returns false when the user closed the window.
    fn present(&mut self, shown: &Shown<'_>) -> anyhow::Result<bool>;
    /// Keeps the window responsive between frames. Returns false when closed.
    fn idle(&mut self) -> bool {
        true
    }
    /// Writes whatever is written at the end (the contact sheet).
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Shows nothing and keeps nothing: for runs whose frames only need counting and timing.
pub struct DiscardPresenter;

impl Presenter for DiscardPresenter {
    fn present(&mut self, _shown: &Shown<'_>) -> anyhow::Result<bool> {
        Ok(true)
    }
}

/// A minifb window, scaled up by an integer factor.
pub struct WindowPresenter {
    window: minifb::Window,
    buffer: Vec<u32>,
    scale: usize,
    width: usize,
    height: usize,
}

impl WindowPresenter {
    /// Opens a window sized for a reconstruction (and a stimulus beside it) of
    /// `size` pixels. Fails (no panic) without a display.
    pub fn open(size: usize, with_stimulus: bool, scale: usize) -> anyhow::Result<Self> {
        let base_w = if with_stimulus { 2 * size + 4 } else { size };
        let (width, height) = (base_w * scale, size * scale);
        let mut window = minifb::Window::new("monkeysee — waiting for the first frame", width, height, minifb::WindowOptions::default())
            .map_err(|e| anyhow::anyhow!("cannot open a window ({e}); is DISPLAY set? Use --headless --out DIR to write frames instead"))?;
        window.set_target_fps(0);
        let mut me = WindowPresenter {
            window,
            buffer: vec![0x202020; width * height],
            scale,
            width,
            height,
        };
        me.window
            .update_with_buffer(&me.buffer, width, height)
            .map_err(|e| anyhow::anyhow!("window update failed: {e}"))?;
        Ok(me)
    }
}

impl Presenter for WindowPresenter {
    fn present(&mut self, shown: &Shown<'_>) -> anyhow::Result<bool> {
        if !self.window.is_open() || self.window.is_key_down(minifb::Key::Escape) {
            return Ok(false);
        }
        let pic = shown.picture;
        let s = self.scale;
        self.buffer.fill(0x202020);
        for y in 0..self.height.min(pic.height() as usize * s) {
            for x in 0..self.width.min(pic.width() as usize * s) {
                let p = pic.get_pixel((x / s) as u32, (y / s) as u32).0;
                self.buffer[y * self.width + x] =
                    (p[0] as u32) << 16 | (p[1] as u32) << 8 | p[2] as u32;
            }
        }
        self.window.set_title(&format!(
            "monkeysee — frame {} — {} — {:.1} ms",
            shown.seq,
            shown.image_id.unwrap_or("sliding"),
            shown.latency_ms
        ));
        self.window
            .update_with_buffer(&self.buffer, self.width, self.height)
            .map_err(|e| anyhow::anyhow!("window update failed: {e}"))?;
        Ok(true)
    }

    fn idle(&mut self) -> bool {
        self.window.update();
        self.window.is_open() && !self.window.is_key_down(minifb::Key::Escape)
    }
}

/// Headless: `DIR/frames/NNNNNN.png` per frame, `DIR/contact_sheet.png` at the end.
/// The `frames-writer` thread encodes and writes; [`Presenter::present`] only queues a
/// copy. A frame that finds the queue full is not written (counted as
/// `frames_unwritten`); a write error ends the run at the next frame.
pub struct HeadlessPresenter {
    tx: Option<Sender<(u64, RgbImage)>>,
    writer: Option<JoinHandle<anyhow::Result<u64>>>,
    counters: Option<Arc<Counters>>,
    written: u64,
}

impl HeadlessPresenter {
    /// Frames that may wait for the disk.
    const QUEUE: usize = 32;
    /// Frames in the contact sheet, at most.
    const MAX_THUMBS: usize = 100;

    /// Creates `DIR/frames` and starts the writer; `counters`, when given, counts the
    /// frames not written.
    pub fn new(out_dir: &Path, counters: Option<Arc<Counters>>) -> anyhow::Result<Self> {
        let frames_dir = out_dir.join("frames");
        std::fs::create_dir_all(&frames_dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", frames_dir.display()))?;
        let (tx, rx) = bounded::<(u64, RgbImage)>(Self::QUEUE);
        let out_dir = out_dir.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("frames-writer".into())
            .spawn(move || write_frames(&rx, &frames_dir, &out_dir))
            .map_err(|e| anyhow::anyhow!("spawning the frames-writer thread: {e}"))?;
        Ok(HeadlessPresenter {
            tx: Some(tx),
            writer: Some(writer),
            counters,
            written: 0,
        })
    }

    /// Frames written (known once [`Presenter::finish`] has returned).
    pub fn frames_written(&self) -> u64 {
        self.written
    }

    /// Waits for the writer and takes its result.
    fn join(&mut self) -> anyhow::Result<()> {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            self.written = w
                .join()
                .map_err(|_| anyhow::anyhow!("the frames-writer thread panicked"))??;
        }
        Ok(())
    }
}

/// The `frames-writer` thread: every queued frame as a PNG, then the contact sheet.
fn write_frames(
    rx: &Receiver<(u64, RgbImage)>,
    frames_dir: &Path,
    out_dir: &Path,
) -> anyhow::Result<u64> {
    let mut thumbs: Vec<RgbImage> = Vec::new();
    let mut written = 0;
    for (seq, picture) in rx.iter() {
        let _span = tracing::trace_span!("write_png", seq).entered();
        let path = frames_dir.join(format!("{seq:06}.png"));
        picture
            .save(&path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        written += 1;
        if thumbs.len() < HeadlessPresenter::MAX_THUMBS {
            thumbs.push(picture);
        }
    }
    if !thumbs.is_empty() {
        let sheet = contact_sheet(thumbs.iter(), 10);
        let path = out_dir.join("contact_sheet.png");
        sheet
            .save(&path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(written)
}

impl Presenter for HeadlessPresenter {
    fn present(&mut self, shown: &Shown<'_>) -> anyhow::Result<bool> {
        if self.writer.as_ref().is_some_and(|w| w.is_finished()) {
            // The writer only stops early on an error: report it.
            self.join()?;
        }
        let Some(tx) = &self.tx else {
            return Ok(true);
        };
        let queued = tx.try_send((shown.seq, shown.picture.clone()));
        if let (Err(_), Some(c)) = (queued, &self.counters) {
            Counters::inc(&c.frames_unwritten);
        }
        Ok(true)
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.join()
    }
}

/// Tiles images in a grid of `columns`, 2 px apart.
pub fn contact_sheet<'a>(
    images: impl Iterator<Item = &'a RgbImage> + Clone,
    columns: usize,
) -> RgbImage {
    let n = images.clone().count();
    let (w, h) = images
        .clone()
        .fold((1, 1), |(w, h), i| (w.max(i.width()), h.max(i.height())));
    let cols = columns.min(n).max(1) as u32;
    let rows = n.div_ceil(cols as usize) as u32;
    let pad = 2;
    let mut sheet = RgbImage::from_pixel(
        cols * (w + pad) + pad,
        rows * (h + pad) + pad,
        Rgb([16, 16, 16]),
    );
    for (k, img) in images.enumerate() {
        let (c, r) = (k as u32 % cols, k as u32 / cols);
        imageops::replace(
            &mut sheet,
            img,
            (pad + c * (w + pad)) as i64,
            (pad + r * (h + pad)) as i64,
        );
    }
    sheet
}
