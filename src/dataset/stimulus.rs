//! A stimulus as a dataset holds it: the centre square of the image, resized to the
//! rig's side, RGB in [0, 1] (`[y][x][c]`), stored as 8 bits in `images.npy`.

use std::path::Path;

/// Loads an image, crops the centre square and resizes it to `size`.
pub fn load_square(path: &Path, size: usize) -> Result<Vec<f32>, image::ImageError> {
    let img = image::ImageReader::open(path)
        .map_err(image::ImageError::IoError)?
        .with_guessed_format()
        .map_err(image::ImageError::IoError)?
        .decode()?
        .to_rgb8();
    let (w, h) = img.dimensions();
    let side = w.min(h);
    let cropped =
        image::imageops::crop_imm(&img, (w - side) / 2, (h - side) / 2, side, side).to_image();
    let resized = image::imageops::resize(
        &cropped,
        size as u32,
        size as u32,
        image::imageops::FilterType::Triangle,
    );
    Ok(resized
        .into_raw()
        .iter()
        .map(|&v| v as f32 / 255.0)
        .collect())
}

/// `[0, 1]` floats to 8-bit RGB.
pub fn to_rgb8(img: &[f32]) -> Vec<u8> {
    img.iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect()
}
