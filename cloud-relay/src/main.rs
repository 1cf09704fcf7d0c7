//! `venue-relay`: the relay's command line. Only `--version` and `--help` work in this build; the
//! `serve` and `appliance` commands arrive with the sync issue.

use clap::Parser;

/// The cloud relay that venue appliances sync through.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("venue-relay has no commands yet in this build; see `venue-relay --help`")
}
