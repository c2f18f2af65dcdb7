//! Which Burn backend runs the decoder, chosen once per command.
//!
//! `run` and `train` both take `--device cpu|cuda`. The choice becomes a backend type
//! here, in one place: a job implements [`OnBackend`] (inference) or
//! [`OnTrainBackend`] (training) and [`dispatch`] / [`dispatch_training`] call it with
//! the right type. The CUDA backend exists only in builds with `--features cuda`; asking
//! for it elsewhere, or on a machine whose CUDA runtime does not start, is an error that
//! says what to do.

#[cfg(feature = "offline")]
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::backend::Backend;

/// Where the decoder computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ComputeDevice {
    Cpu,
    Cuda,
}

/// Work generic over an inference backend.
pub trait OnBackend {
    type Output;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output;
}

/// Work generic over a training (autodiff) backend.
#[cfg(feature = "offline")]
pub trait OnTrainBackend {
    type Output;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Runs `job` on the backend `device` names.
pub fn dispatch<J: OnBackend>(device: ComputeDevice, job: J) -> anyhow::Result<J::Output> {
    match device {
        ComputeDevice::Cpu => Ok(job.run::<super::CpuBackend>(Default::default())),
        ComputeDevice::Cuda => {
            #[cfg(feature = "cuda")]
            {
                let device = probe_cuda()?;
                Ok(job.run::<burn::backend::Cuda>(device))
            }
            #[cfg(not(feature = "cuda"))]
            {
                drop(job);
                Err(no_cuda_build())
            }
        }
    }
}

/// Runs `job` on the training backend `device` names.
#[cfg(feature = "offline")]
pub fn dispatch_training<J: OnTrainBackend>(
    device: ComputeDevice,
    job: J,
) -> anyhow::Result<J::Output> {
    match device {
        ComputeDevice::Cpu => Ok(job.run::<super::CpuTrainBackend>(Default::default())),
        ComputeDevice::Cuda => {
            #[cfg(feature = "cuda")]
            {
                let device = probe_cuda()?;
                Ok(job.run::<burn::backend::Autodiff<burn::backend::Cuda>>(device))
            }
            #[cfg(not(feature = "cuda"))]
            {
                drop(job);
                Err(no_cuda_build())
            }
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn no_cuda_build() -> anyhow::Error {
    anyhow::anyhow!(
        "this monkeysee was built without CUDA support: rebuild with \
`cargo build --release --features cuda`, or use --device cpu"
    )
}

/// Checks that a CUDA device can be used, turning Burn's panic into an error.
#[cfg(feature = "cuda")]
fn probe_cuda() -> anyhow::Result<burn::backend::cuda::CudaDevice> {
    use burn::tensor::Tensor;
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(|| {
        let device = burn::backend::cuda::CudaDevice::default();
        let t = Tensor::<burn::backend::Cuda, 1>::zeros([4], &device);
        let _ = t.into_data();
        device
    });
    std::panic::set_hook(hook);
    r.map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown error".into());
        anyhow::anyhow!(
            "no usable CUDA GPU (Burn's CUDA runtime failed to start: {msg}); run with \
--device cpu, or on a machine with an NVIDIA GPU and driver"
        )
    })
}

/// Who the CPU compute pool serves, which sets its default size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolRole {
    /// The live daemon: ingest and window threads need a core of their own, so the
    /// pool takes all cores but one.
    Live,
    /// Training and evaluation: nothing else runs, so the pool takes every core.
    Offline,
}

/// Threads for the CPU compute pool: `requested`, or the role's default when 0.
pub fn compute_threads(requested: usize, role: PoolRole) -> usize {
    if requested > 0 {
        return requested;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match role {
        PoolRole::Live => cores.saturating_sub(1).max(1),
        PoolRole::Offline => cores,
    }
}
