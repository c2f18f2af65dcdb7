//! The decoder's U-Net, defined once (DESIGN §2): a stem, nested skip blocks and a head.
//!
//! Every network monkeysee runs is built from an [`Architecture`] and walks its
//! [`Architecture::blocks`]: the Burn module that is trained, saved and loaded
//! ([`super::unet::UNet`]), the inference networks with BatchNorm folded in
//! ([`super::infer`]), and the CPU training engine's network with its backward pass
//! (`crate::train::host`). None of them knows how many levels there are or how wide they
//! are. To change the U-Net (one more level, other widths), change [`DEFAULT_LEVELS`] and
//! retrain; the equality tests of each pair run on several architectures
//! ([`test_architectures`]) and need no change.
//!
//! Every convolution is 4×4, stride 2, padding 1: a down convolution halves the side, a
//! transposed (up) convolution doubles it. For a base width `w`:
//! - stem: conv `in → w`, LeakyReLU;
//! - skip block `i` (outermost first) on `x [outer]`: conv `outer → inner`, BatchNorm,
//!   LeakyReLU, the next block (if any, giving `2·inner`), transposed conv `→ outer`,
//!   BatchNorm; then `ReLU(cat(x, up))`, `2·outer` channels;
//! - head: transposed conv `2w → 3`, then `sigmoid`, or with `residual`
//!   `clamp(x[last 3 channels] + head, 0, 1)`.

use serde::{Deserialize, Serialize};

/// Negative slope of every LeakyReLU (the stem's and each block's down path).
pub const LEAKY_SLOPE: f64 = 0.2;

/// Inner width of each skip block as a multiple of the base width, outermost first: the
/// paper's pix2pix generator, blocks of `(outer, inner)` widths (w, 2w), (2w, 4w),
/// (4w, 8w), (8w, 8w). Models saved without a `levels` field have this shape.
pub const PAPER_LEVELS: [usize; 4] = [2, 4, 8, 8];

/// [`PAPER_LEVELS`] as a list: what a saved config without `levels` means.
pub fn paper_levels() -> Vec<usize> {
    PAPER_LEVELS.to_vec()
}

/// The levels new models get.
pub const DEFAULT_LEVELS: [usize; 4] = PAPER_LEVELS;

/// Most skip blocks a config may ask for (the image side must be a multiple of 2^(levels+1)).
pub const MAX_LEVELS: usize = 8;

/// The U-Net's shape: input channels, base width, the skip blocks' widths and the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Architecture {
    /// Channels of the input image (15 for the spatial models, 3 for the baseline).
    pub in_channels: usize,
    /// Base width `w` (64 in the paper).
    pub width: usize,
    /// Inner width of each skip block as a multiple of `w`, outermost first
    /// ([`PAPER_LEVELS`]); a block's outer width is the inner width of the block around
    /// it (`w` for the outermost).
    pub levels: Vec<usize>,
    /// The output corrects the input's last three channels (an image given with the input,
    /// the linear pathway's) instead of being `sigmoid(head)`.
    pub residual: bool,
}

/// The channel widths of one skip block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockShape {
    /// Channels of the block's input and of its up convolution's output.
    pub outer: usize,
    /// Channels of its down convolution's output.
    pub inner: usize,
    /// Channels into its up convolution: `inner` for the innermost block, else the
    /// `2·inner` of the block inside it.
    pub up_in: usize,
}

impl Architecture {
    /// A network of [`DEFAULT_LEVELS`] with a sigmoid output.
    pub fn new(in_channels: usize, width: usize) -> Self {
        Self {
            in_channels,
            width,
            levels: DEFAULT_LEVELS.to_vec(),
            residual: false,
        }
    }

    pub fn with_levels(mut self, levels: &[usize]) -> Self {
        self.levels = levels.to_vec();
        self
    }

    pub fn with_residual(mut self, residual: bool) -> Self {
        self.residual = residual;
        self
    }

    /// Number of skip blocks.
    pub fn depth(&self) -> usize {
        self.levels.len()
    }

    /// The skip blocks, outermost first.
    pub fn blocks(&self) -> Vec<BlockShape> {
        let widths: Vec<usize> = self.levels.iter().map(|m| m * self.width).collect();
        (0..widths.len())
            .map(|i| BlockShape {
                outer: if i == 0 { self.width } else { widths[i - 1] },
                inner: widths[i],
                up_in: if i + 1 == widths.len() {
                    widths[i]
                } else {
                    2 * widths[i]
                },
            })
            .collect()
    }

    /// The image side must be a multiple of this: the stem and every block halve it.
    pub fn size_multiple(&self) -> usize {
        1 << (self.depth() + 1)
    }

    /// Number of convolution weights (4×4 kernels; biases and norms not counted).
    pub fn conv_weights(&self) -> u64 {
        let w = self.width as u64;
        let stem = self.in_channels as u64 * w;
        let blocks: u64 = self
            .blocks()
            .iter()
            .map(|b| (b.outer * b.inner + b.up_in * b.outer) as u64)
            .sum();
        let head = 2 * w * 3;
        16 * (stem + blocks + head)
    }

    /// Checks the shape against `max_width` and an image side; says what is wrong.
    pub fn validate(&self, max_width: usize, image_size: usize) -> Result<(), String> {
        if self.width == 0 || self.width > max_width {
            return Err(format!(
                "width {} is not between 1 and {max_width}",
                self.width
            ));
        }
        if self.levels.is_empty() || self.levels.len() > MAX_LEVELS {
            return Err(format!(
                "levels {:?}: a U-Net has between 1 and {MAX_LEVELS} levels",
                self.levels
            ));
        }
        if let Some(&m) = self.levels.iter().find(|&&m| m == 0 || m > 64) {
            return Err(format!(
                "levels {:?}: a level's width multiple {m} is not between 1 and 64",
                self.levels
            ));
        }
        let multiple = self.size_multiple();
        if image_size == 0 || !image_size.is_multiple_of(multiple) {
            return Err(format!(
                "image_size {image_size} is not a multiple of {multiple} (the U-Net of {} levels halves it {} times)",
                self.depth(),
                self.depth() + 1
            ));
        }
        if self.residual && self.in_channels < 3 {
            return Err("a residual U-Net needs an input image of 3 channels to correct".into());
        }
        Ok(())
    }
}

/// Architectures of one to five levels, plain and residual, small enough to run in a
/// test at [`Architecture::size_multiple`] pixels: each network pair's equality test
/// runs on all of them, so it holds whatever [`DEFAULT_LEVELS`] says.
#[cfg(test)]
pub(crate) fn test_architectures(in_channels: usize, width: usize) -> Vec<Architecture> {
    let default = Architecture::new(in_channels, width);
    let mut deeper = DEFAULT_LEVELS.to_vec();
    deeper.push(*deeper.last().unwrap_or(&1));
    vec![
        default.clone().with_levels(&[1]),
        default.clone().with_levels(&[2, 3]).with_residual(true),
        default.clone().with_residual(true),
        default.clone(),
        default.with_levels(&deeper),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paper_levels_give_the_pix2pix_block_widths() {
        let blocks = Architecture::new(15, 64)
            .with_levels(&PAPER_LEVELS)
            .blocks();
        let widths: Vec<_> = blocks.iter().map(|b| (b.outer, b.inner, b.up_in)).collect();
        assert_eq!(
            widths,
            [
                (64, 128, 256),
                (128, 256, 512),
                (256, 512, 1024),
                (512, 512, 512)
            ]
        );
    }

    #[test]
    fn validation_names_the_field_at_fault() {
        let a = Architecture::new(15, 16);
        assert!(a.validate(1024, 96).is_ok());
        assert!(a.validate(1024, 80).unwrap_err().contains("multiple of 32"));
        assert!(a.validate(8, 96).unwrap_err().contains("width 16"));
        let deep = a.clone().with_levels(&[2; 9]);
        assert!(deep.validate(1024, 1024).unwrap_err().contains("levels"));
        let zero = a.clone().with_levels(&[2, 0]);
        assert!(zero.validate(1024, 96).unwrap_err().contains("multiple 0"));
        let five = a.with_levels(&[2, 4, 8, 8, 8]);
        assert!(five
            .validate(1024, 96)
            .unwrap_err()
            .contains("multiple of 64"));
        assert!(five.validate(1024, 128).is_ok());
    }
}
