//! The report's measures that are not scores: colourfulness, and the geometry of learned
//! receptive fields.

use serde::Serialize;

use crate::units::Area;

/// Hasler & Süsstrunk's colourfulness (2003, "Measuring colourfulness in natural
/// images", SPIE 5007) of an image `[3][H][W]` in [0, 1], on the 0–255 scale their
/// thresholds use (≈ 0 grey, 33 moderately, 59 quite, 82 highly, 109 extremely
/// colourful): with rg = R − G and yb = ½(R + G) − B,
/// C = √(σ_rg² + σ_yb²) + 0.3 · √(μ_rg² + μ_yb²).
pub fn colourfulness(image: &[f32]) -> f64 {
    let plane = image.len() / 3;
    let (r, g, b) = (
        &image[..plane],
        &image[plane..2 * plane],
        &image[2 * plane..3 * plane],
    );
    let (mut s_rg, mut s_yb, mut q_rg, mut q_yb) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for i in 0..plane {
        let (r, g, b) = (
            r[i].clamp(0.0, 1.0) as f64 * 255.0,
            g[i].clamp(0.0, 1.0) as f64 * 255.0,
            b[i].clamp(0.0, 1.0) as f64 * 255.0,
        );
        let rg = r - g;
        let yb = 0.5 * (r + g) - b;
        s_rg += rg;
        s_yb += yb;
        q_rg += rg * rg;
        q_yb += yb * yb;
    }
    let n = plane.max(1) as f64;
    let (m_rg, m_yb) = (s_rg / n, s_yb / n);
    let var_rg = (q_rg / n - m_rg * m_rg).max(0.0);
    let var_yb = (q_yb / n - m_yb * m_yb).max(0.0);
    (var_rg + var_yb).sqrt() + 0.3 * (m_rg * m_rg + m_yb * m_yb).sqrt()
}

/// One electrode's RF in the visual field, degrees (x right, y up; σ).
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct RfDeg {
    pub x: f64,
    pub y: f64,
    pub sigma: f64,
}

impl RfDeg {
    pub fn eccentricity(&self) -> f64 {
        self.x.hypot(self.y)
    }
}

/// The least-squares line σ = intercept + slope · eccentricity of one area's RFs.
#[derive(Clone, Debug, Serialize)]
pub struct SizeEccentricity {
    pub electrodes: usize,
    pub slope: f64,
    pub intercept_deg: f64,
    /// Pearson r of size and eccentricity.
    pub r: f64,
}

/// The fit of σ against eccentricity; `None` under 3 RFs or without spread in
/// eccentricity.
pub fn size_vs_eccentricity(rfs: &[RfDeg]) -> Option<SizeEccentricity> {
    if rfs.len() < 3 {
        return None;
    }
    let n = rfs.len() as f64;
    let (mx, my) = (
        rfs.iter().map(RfDeg::eccentricity).sum::<f64>() / n,
        rfs.iter().map(|r| r.sigma).sum::<f64>() / n,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for rf in rfs {
        let (dx, dy) = (rf.eccentricity() - mx, rf.sigma - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx <= 1e-12 {
        return None;
    }
    let slope = sxy / sxx;
    Some(SizeEccentricity {
        electrodes: rfs.len(),
        slope,
        intercept_deg: my - slope * mx,
        r: if syy > 0.0 {
            sxy / (sxx * syy).sqrt()
        } else {
            0.0
        },
    })
}

/// The areas a model reads: those with an electrode not left out (`dropped`, rig order;
/// `areas[e]` is electrode e's area), in V1, V4, IT order.
pub fn areas_read(areas: &[Area], dropped: &[usize]) -> Vec<Area> {
    Area::ALL
        .into_iter()
        .filter(|a| {
            areas
                .iter()
                .enumerate()
                .any(|(e, x)| x == a && !dropped.contains(&e))
        })
        .collect()
}

/// `V1+V4`, or `all` for every area.
pub fn areas_label(areas: &[Area]) -> String {
    if areas.len() == Area::ALL.len() {
        "all".into()
    } else {
        areas.iter().map(|a| a.name()).collect::<Vec<_>>().join("+")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform(rgb: [f32; 3], side: usize) -> Vec<f32> {
        rgb.iter()
            .flat_map(|&v| std::iter::repeat_n(v, side * side))
            .collect()
    }

    #[test]
    fn colourfulness_follows_hasler_and_susstrunk() {
        // Grey has none; a uniform colour only the mean term.
        assert!(colourfulness(&uniform([0.4; 3], 4)) < 1e-9);
        let red = colourfulness(&uniform([1.0, 0.0, 0.0], 4));
        // rg = 255, yb = 127.5: 0.3 · √(255² + 127.5²).
        assert!((red - 0.3 * (255.0f64.powi(2) + 127.5f64.powi(2)).sqrt()).abs() < 1e-9);
        // Half red, half green: μ_rg = 0, σ_rg = 255; yb = 127.5 everywhere.
        let side = 4;
        let mut img = vec![0.0f32; 3 * side * side];
        for i in 0..side * side {
            if i % 2 == 0 {
                img[i] = 1.0;
            } else {
                img[side * side + i] = 1.0;
            }
        }
        let c = colourfulness(&img);
        assert!((c - (255.0 + 0.3 * 127.5)).abs() < 1e-9, "{c}");
    }

    #[test]
    fn the_size_eccentricity_line_is_the_least_squares_line() {
        let rfs: Vec<RfDeg> = (1..=5)
            .map(|i| RfDeg {
                x: i as f64,
                y: 0.0,
                sigma: 0.5 + 0.25 * i as f64,
            })
            .collect();
        let fit = size_vs_eccentricity(&rfs).unwrap();
        assert!((fit.slope - 0.25).abs() < 1e-12 && (fit.intercept_deg - 0.5).abs() < 1e-12);
        assert!((fit.r - 1.0).abs() < 1e-12);
        assert!(size_vs_eccentricity(&rfs[..2]).is_none());
    }

    #[test]
    fn areas_read_skip_areas_left_out_whole() {
        let areas = [Area::V1, Area::V1, Area::V4, Area::IT];
        assert_eq!(areas_read(&areas, &[]), Area::ALL.to_vec());
        assert_eq!(areas_read(&areas, &[0, 3]), vec![Area::V1, Area::V4]);
        assert_eq!(areas_label(&areas_read(&areas, &[0, 1, 2])), "IT");
        assert_eq!(areas_label(&areas_read(&areas, &[3])), "V1+V4");
        assert_eq!(areas_label(&Area::ALL), "all");
    }
}
