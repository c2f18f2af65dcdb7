//! `monkeysee eval`: models scored on a dataset's test split.

use std::path::PathBuf;

use clap::Args;

use monkeysee::config::RigConfig;
use monkeysee::eval::{EvalOptions, EvalReport, ModelMetrics};

#[derive(Args)]
#[command(
    after_help = "Writes OUT/metrics.json (per model, and per linear decoder fitted on the train \
split: pixel_r, ssim, ident_top1, ident_2way with their chance levels, the same single-trial, \
RF recovery for learned RFs) and OUT/grid.png (stimulus, each model, the linear decoder).\n\n\
With --report also OUT/report.html (every analysis of the paper on one page, figures as PNG \
beside it) and OUT/report.json.\n\n\
Example:\n  monkeysee eval --model models/demo-e2e --model models/demo-spatial --data sim/dataset \
--out eval --report [--alexnet alexnet-owt-7be5be79.pth]"
)]
pub struct EvalArgs {
    /// Model folder (repeat to compare models side by side).
    #[arg(long = "model", value_name = "DIR", required = true)]
    models: Vec<PathBuf>,
    /// Dataset folder with a test split.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Rig config; default: the one recorded in the dataset's dataset.json.
    #[arg(long, value_name = "RIG.toml")]
    rig: Option<PathBuf>,
    /// Ground-truth RF table for learned-RF models; default: rf-truth.csv beside the dataset.
    #[arg(long, value_name = "CSV")]
    rf_truth: Option<PathBuf>,
    /// Test images in the grid.
    #[arg(long, default_value_t = 12)]
    grid_images: usize,
    /// Also run the paper's analyses (feature correlation, occlusion per area and window,
    /// colourfulness, learned RFs, relative correlations, area-restricted models) and write
    /// OUT/report.html with its figures and OUT/report.json.
    #[arg(long)]
    report: bool,
    /// torchvision's pretrained AlexNet (alexnet-owt-7be5be79.pth, supplied by you) for the
    /// report's feature correlations (paper Table 1); without it they are skipped.
    #[arg(long, value_name = "FILE.pth", requires = "report")]
    alexnet: Option<PathBuf>,
    /// A learning curve from `monkeysee learning-curve` (its curve.json) to show on the
    /// report page.
    #[arg(long, value_name = "curve.json", requires = "report")]
    curve: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl EvalArgs {
    /// The evaluation's options, with --rig loaded when given.
    fn options(self) -> anyhow::Result<EvalOptions> {
        Ok(EvalOptions {
            rig: self.rig.as_deref().map(RigConfig::load).transpose()?,
            models: self.models,
            data: self.data,
            out: self.out,
            grid_images: self.grid_images,
            rf_truth: self.rf_truth,
            report: self.report,
            alexnet: self.alexnet,
            progress: !self.quiet,
            train_trials: None,
            curve: self.curve,
        })
    }
}

/// Evaluates the models and prints one row of scores per model and linear decoder.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let opts = args.options()?;
    let report = monkeysee::eval::eval(&opts)?;
    print_report(&report);
    println!("wrote {}/metrics.json and grid.png", opts.out.display());
    if let Some(r) = &report.report {
        print_analyses(r);
        println!(
            "wrote {}/report.html, report.json and {} figures",
            opts.out.display(),
            r.figures.len()
        );
    }
    Ok(())
}

/// The score table, each learned-RF model's RF recovery, and the report's notes.
fn print_report(report: &EvalReport) {
    println!(
        "{:<20} {:>7} {:>7} {:>6} {:>6} {:>7} {:>7} {:>9} {:>9}",
        "entry", "pixel r", "chance", "SSIM", "chance", "ident", "2-way", "1-trial r", "1-trial id"
    );
    let n = report.entries.first().map_or(0, |m| m.scores.n_images);
    for m in &report.entries {
        let s = &m.scores;
        println!(
            "{:<20} {:>7.3} {:>7.3} {:>6.3} {:>6.3} {:>7.3} {:>7.3} {:>9.3} {:>9.3}",
            m.name,
            s.pixel_r,
            s.pixel_r_chance,
            s.ssim,
            s.ssim_chance,
            s.ident_top1,
            s.ident_2way,
            s.single_trial_pixel_r,
            s.single_trial_ident_top1
        );
        print_rf_recovery(m);
    }
    println!(
        "identification: n-way over {n} test images (chance {:.3}), 2-way (chance 0.5)",
        1.0 / n.max(1) as f64
    );
    for note in &report.notes {
        println!("note: {note}");
    }
}

/// How well a learned-RF model's centres recover the true RFs, per area.
fn print_rf_recovery(m: &ModelMetrics) {
    for (area, r) in m.rf_recovery.iter().flatten() {
        println!(
            "  RF centres vs truth, {area}: r_x {:.3} r_y {:.3} within-array r {:.3} error {:.2} deg \
(start: r_x {:.3} r_y {:.3} within-array r {:.3} error {:.2} deg); moved {:.2} deg, {:.0}% closer \
(random moves: {:.0}%, 95th pct {:.0}%), toward the truth by {:+.3} deg (random: 95th pct {:+.3})",
            r.r_x, r.r_y, r.within_array_r, r.mean_error_deg, r.initial_r_x, r.initial_r_y,
            r.initial_within_array_r, r.initial_mean_error_deg, r.mean_shift_deg,
            100.0 * r.fraction_closer, 100.0 * r.null_fraction_closer,
            100.0 * r.null_fraction_closer_p95, r.mean_projection_deg,
            r.null_mean_projection_p95_deg
        );
    }
}

/// The report's headline numbers: occlusion drops, colourfulness, RF slopes.
fn print_analyses(r: &monkeysee::eval::report::ReportSummary) {
    use monkeysee::eval::occlusion::Keep;
    use monkeysee::units::Area;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "colourfulness of the originals: {:.1}",
        mean(&r.original_colourfulness)
    );
    for m in &r.models {
        let all = &m.conditions[0];
        let drops: Vec<String> = Area::ALL
            .iter()
            .filter_map(|&a| {
                m.condition(Keep::AllBut(a))
                    .map(|c| format!("{a} {:+.3}", c.pixel_r - all.pixel_r))
            })
            .collect();
        let colour: Vec<String> = Area::ALL
            .iter()
            .filter_map(|&a| {
                m.condition(Keep::Only(a))
                    .map(|c| format!("{a} {:.1}", mean(&c.colourfulness)))
            })
            .collect();
        println!(
            "{} ({}, areas {}): pixel r {:.3}; occluding an area changes it by {}; colourfulness from one area: {}",
            m.name,
            m.kind,
            m.areas,
            all.pixel_r,
            drops.join(", "),
            colour.join(", ")
        );
        for (area, f) in &m.rf_size_eccentricity {
            if let Some(l) = &f.learned {
                println!(
                    "  {area}: learned RF size = {:.3} + {:.3} x eccentricity (r {:.2}; true slope {})",
                    l.intercept_deg,
                    l.slope,
                    l.r,
                    f.truth.as_ref().map_or("-".into(), |t| format!("{:.3}", t.slope))
                );
            }
        }
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}
