//! The `edgeclass` command line: parses arguments, calls into the library, maps errors to
//! sysexits codes.

use clap::{Parser, Subcommand};
use edgeclass::commands;

#[derive(Parser)]
#[command(
    name = "edgeclass",
    version,
    about = "Classify camera frames on the edge and publish Top-3 events over MQTT"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: cameras -> classifier -> MQTT events.
    Run(commands::run::Args),
    /// Validate a configuration file without running.
    CheckConfig(commands::check_config::Args),
    /// Print the Top-3 classes of image files.
    Classify(commands::classify::Args),
    /// Measure accuracy, calibration and thresholds on labelled images.
    Eval(commands::eval::Args),
    /// Convert safetensors weights to a quantized GGUF file.
    Quantize(commands::quantize::Args),
    /// Download, verify, quantize and cache the ImageNet weights.
    FetchModel(commands::fetch_model::Args),
    /// Measure inference latency per precision and thread count.
    Bench(commands::bench::Args),
    /// List V4L2 cameras and their formats.
    ListCameras(commands::list_cameras::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => commands::run::run(args),
        Command::CheckConfig(args) => commands::check_config::run(args),
        Command::Classify(args) => commands::classify::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Quantize(args) => commands::quantize::run(args),
        Command::FetchModel(args) => commands::fetch_model::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::ListCameras(args) => commands::list_cameras::run(args),
    };
    if let Err(err) = result {
        eprintln!("edgeclass: {}", edgeclass::exit::message_of(&err));
        std::process::exit(edgeclass::exit::code_of(&err));
    }
}
