//! torchvision's `.pth` state dicts (pretrained VGG19 and AlexNet, files the user
//! supplies): opening one with burn-store's PyTorch reader with errors that say what
//! was expected, and the one damage that reader lets through.

use std::path::Path;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use burn::tensor::DType;
use burn_store::pytorch::PytorchReader;
use burn_store::{ModuleSnapshot, PytorchStore};

/// Opens `path` for reading; `what()` says what file was expected (it leads every error).
pub fn open(path: &Path, what: &dyn Fn() -> String) -> anyhow::Result<PytorchReader> {
    if !path.exists() {
        bail!("{}, but there is no such file", what());
    }
    if !path.is_file() {
        bail!("{}, but that is a directory, not a file", what());
    }
    PytorchReader::new(path)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("{}: not a readable PyTorch file", what()))
}

/// The shape of the tensor `key`, which must be float32 (the networks run in float32).
pub fn f32_shape(
    reader: &PytorchReader,
    key: &str,
    what: &dyn Fn() -> String,
) -> anyhow::Result<Vec<usize>> {
    let tensor = reader
        .get(key)
        .with_context(|| format!("{}; it has no {key}", what()))?;
    if tensor.dtype != DType::F32 {
        bail!(
            "{}; {key} is {:?}, the network runs in float32: save the file with float32 weights",
            what(),
            tensor.dtype
        );
    }
    Ok(tensor.shape.as_slice().to_vec())
}

/// Loads `store` into `net`, which must take exactly `tensors` tensors from it. Shape
/// errors and missing tensors already fail `load_from` (the store validates and refuses
/// partial loads); the count is a last guard.
pub fn load_into<B: Backend, M: ModuleSnapshot<B>>(
    net: &mut M,
    store: PytorchStore,
    tensors: usize,
    what: &dyn Fn() -> String,
) -> anyhow::Result<()> {
    let result = net
        .load_from(&mut store.allow_partial(false))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(what)?;
    if !result.errors.is_empty() || result.applied.len() != tensors {
        bail!("{}; loading it gave:\n{result}", what());
    }
    Ok(())
}

/// burn-store 0.21 reads a legacy-format (`torch.save` before 1.6) float32 tensor whose
/// bytes lie past the end of the file as zeros, without an error, so a file cut short
/// would load. There each tensor of a torchvision state dict is its own storage, written
/// in state-dict order as an 8-byte count and its bytes: `Err((have, need))` when the
/// file's tensor data is shorter than `keys`' tensors need. Zip-format files are checked
/// by the zip reader.
pub fn legacy_data_complete(
    reader: &PytorchReader,
    keys: impl Iterator<Item = String>,
) -> Result<(), (usize, usize)> {
    let meta = reader.metadata();
    let (true, Some(have)) = (meta.is_legacy_format(), meta.total_data_size) else {
        return Ok(());
    };
    let need: usize = keys
        .filter_map(|k| reader.get(&k))
        .map(|t| 8 + 4 * t.shape.as_slice().iter().product::<usize>())
        .sum();
    if have < need {
        Err((have, need))
    } else {
        Ok(())
    }
}
