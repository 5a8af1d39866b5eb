//! `drover export GRAPH.json --format dot|json|svg -o FILE`.

use std::path::PathBuf;

use drover::export::{ExportOptions, Format};

use crate::Failure;

/// Arguments of `drover export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The JSON graph file.
    graph: PathBuf,
    /// The placement rule: `optimised` (default: the linear pass, then the min-cut
    /// refinement) or `linear` (the forward and backward sweeps only). Overrides the file's
    /// `pass` field.
    #[arg(long)]
    pass: Option<drover::Pass>,
    /// Output format.
    #[arg(long, value_parser = ["dot", "json", "svg"])]
    format: String,
    /// Output file (`-` for standard output).
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// In DOT and SVG, above this many tasks collapse tasks with the same function, pool and
    /// reason into one node (0 never summarises).
    #[arg(long, default_value_t = 300)]
    summarise_above: usize,
}

/// Runs the command.
pub fn run(args: Args) -> Result<(), Failure> {
    let format: Format = args.format.parse().map_err(Failure::Usage)?;
    if same_file(&args.graph, &args.output) {
        return Err(Failure::Usage(format!(
            "-o {} is the graph file itself: it would be overwritten; write the export elsewhere",
            args.output.display()
        )));
    }
    let planned = crate::load_with(&args.graph, args.pass)?;
    let options = ExportOptions {
        summarise_above: (args.summarise_above > 0).then_some(args.summarise_above),
    };
    crate::write_output(&args.output, &planned.export(format, options))
}

/// Whether `a` and `b` name the same existing file (through links and relative paths).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
