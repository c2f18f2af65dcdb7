//! `monkeysee rf-table`: a synthetic receptive-field table for a rig.

use std::path::PathBuf;

use clap::Args;

use monkeysee::config::RigConfig;
use monkeysee::rf::RfTable;

#[derive(Args)]
pub struct RfTableArgs {
    /// Rig config whose arrays get RFs (its own RF table, if any, is not read).
    #[arg(long, value_name = "RIG.toml")]
    rig: PathBuf,
    /// Output CSV.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Writes the table and says how many RFs it holds.
pub fn run(args: RfTableArgs) -> anyhow::Result<()> {
    let rig = RigConfig::load_without_rf_table(&args.rig)?;
    let table = RfTable::synthetic(&rig, args.seed);
    table.save(&args.out)?;
    println!(
        "wrote {} RFs to {}",
        table.entries.len(),
        args.out.display()
    );
    Ok(())
}
