//! `hexeract top`: placeholder until the metrics endpoint exists.

use clap::Args;

use crate::Failure;
use crate::output::Output;

/// Arguments of `hexeract top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The metrics endpoint of the running system.
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "HOST:PORT")]
    connect: String,
    /// Print one snapshot as text and exit.
    #[arg(long)]
    once: bool,
}

pub async fn run(_args: TopArgs, _out: &Output) -> Result<(), Failure> {
    Err(Failure::Usage("not yet".into()))
}
