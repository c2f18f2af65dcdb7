//! The load a rig computer carries beside the daemon (`bench --load N`): N processes,
//! each one thread that churns memory while it computes (allocates a block, writes every
//! page, sums it, frees it: page faults, zeroing and cache misses besides the CPU) and
//! one thread that writes a file in blocks without syncing, filling the page cache and
//! keeping the kernel's writeback busy, as a stimulus program and a recorder would.
//!
//! The processes are this binary's hidden `load-worker` subcommand ([`run_worker`]),
//! started by [`Load::start`] and killed when the [`Load`] is dropped; each also asks
//! the kernel to kill it if the bench dies first (`PR_SET_PDEATHSIG`). Their files live
//! in a folder the bench removes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use serde::Serialize;

/// What the load processes do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadSpec {
    /// Processes started beside the daemon.
    pub processes: usize,
    /// Memory each process allocates, touches and frees per round, MiB.
    pub churn_mib: usize,
    /// Size each process's file grows to before it starts over, MiB.
    pub file_mib: usize,
}

/// Running load processes; dropping this kills them.
pub struct Load {
    children: Vec<Child>,
}

impl Load {
    /// Starts `spec.processes` workers of `exe` (this program's binary) writing into
    /// `dir`.
    pub fn start(spec: &LoadSpec, exe: &Path, dir: &Path) -> anyhow::Result<Load> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut load = Load {
            children: Vec::new(),
        };
        for k in 0..spec.processes {
            let child = Command::new(exe)
                .arg("load-worker")
                .arg("--churn-mib")
                .arg(spec.churn_mib.to_string())
                .arg("--file-mib")
                .arg(spec.file_mib.to_string())
                .arg("--file")
                .arg(dir.join(format!("load-{k}.bin")))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| {
                    format!("starting a load process ({} load-worker)", exe.display())
                })?;
            load.children.push(child);
        }
        Ok(load)
    }

    /// The processes' ids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// CPU seconds (user + system) the processes have used so far, together (Linux
    /// `/proc/<pid>/stat`; 0 where it cannot be read).
    pub fn cpu_seconds(&self) -> f64 {
        self.children
            .iter()
            .filter_map(|c| std::fs::read_to_string(format!("/proc/{}/stat", c.id())).ok())
            .filter_map(|stat| Some(super::stat_cpu(&stat)?.1))
            .sum()
    }

    /// Whether every process is still running (a worker that died is a broken bench).
    pub fn all_running(&mut self) -> bool {
        self.children
            .iter_mut()
            .all(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

/// A load worker: churns memory on one thread and writes `file` on another, until killed.
pub fn run_worker(churn_mib: usize, file_mib: usize, file: PathBuf) -> anyhow::Result<()> {
    // Die with the bench, whatever happens to it.
    // SAFETY: prctl with PR_SET_PDEATHSIG and a valid signal number has no other effect.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let writer = std::thread::Builder::new()
        .name("load-writer".into())
        .spawn(move || write_forever(&file, file_mib))
        .context("starting the writer thread")?;
    let churn = churn_mib.max(1) << 20;
    let mut sum = 0u64;
    loop {
        if writer.is_finished() {
            return writer
                .join()
                .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
        }
        let mut block = vec![0u8; churn];
        for (i, page) in block.chunks_mut(4096).enumerate() {
            page[0] = i as u8;
            page[page.len() - 1] = (i >> 8) as u8;
        }
        sum = block
            .iter()
            .step_by(64)
            .fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
        std::hint::black_box(sum);
    }
}

/// Writes 4 MiB blocks to `file` until it holds `file_mib`, then starts over; returns
/// only on an error.
fn write_forever(file: &Path, file_mib: usize) -> anyhow::Result<()> {
    let block: Vec<u8> = (0..4usize << 20).map(|i| (i * 7 % 251) as u8).collect();
    let blocks = (file_mib.max(4) / 4).max(1);
    loop {
        let mut f =
            std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
        for _ in 0..blocks {
            f.write_all(&block)
                .with_context(|| format!("writing {}", file.display()))?;
        }
    }
}
