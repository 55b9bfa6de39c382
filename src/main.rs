//! The `edgeclass` command line: parses arguments, calls into the library, and decides the
//! process exit status from the error chain (sysexits codes).

use std::error::Error;

use clap::{Parser, Subcommand};
use edgeclass::commands;
use edgeclass::sysexits::Sysexit;

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
    /// Train a head for your own classes on labelled pictures.
    Train(commands::train::Args),
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
        Command::Train(args) => commands::train::run(args),
        Command::Quantize(args) => commands::quantize::run(args),
        Command::FetchModel(args) => commands::fetch_model::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::ListCameras(args) => commands::list_cameras::run(args),
    };
    if let Err(err) = result {
        // A reader that stopped reading (`edgeclass classify --json ... | head -1`) is not a
        // failure: end quietly with success, as ripgrep does.
        if is_broken_pipe(&err) {
            std::process::exit(0);
        }
        // `{:#}` names each cause once: no error repeats its source in its own message.
        print_error(&format!("edgeclass: {err:#}"));
        std::process::exit(exit_code(&err));
    }
}

/// Prints the error that ends the command on stderr. Under systemd stderr is the journal, which
/// would file it at the stream's priority (info): a `<3>` prefix on each line (journald's
/// `SyslogLevelPrefix=`) files it as an error, so `journalctl -p err` shows why the start failed.
fn print_error(message: &str) {
    if systemd_journal_logger::connected_to_journal() {
        for line in message.lines() {
            eprintln!("<3>{line}");
        }
    } else {
        eprintln!("{message}");
    }
}

/// Whether the command failed only because its stdout was closed.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The exit status of a failed command: the outermost error in the chain that knows what kind
/// of failure it is decides; anything else is a generic failure (1).
fn exit_code(err: &anyhow::Error) -> i32 {
    err.chain().find_map(sysexit_of).map_or(1, Sysexit::code)
}

/// The stage errors that classify themselves, and I/O errors.
fn sysexit_of(cause: &(dyn Error + 'static)) -> Option<Sysexit> {
    use edgeclass::{
        capture, config, dataset, model, postprocess, preprocess, publish, train, web,
    };
    // Each stage error type has an inherent `sysexit()`; try them in turn.
    macro_rules! sysexit_of_any {
        ($($error:ty),+ $(,)?) => {
            $(
                if let Some(e) = cause.downcast_ref::<$error>() {
                    return Some(e.sysexit());
                }
            )+
        };
    }
    sysexit_of_any!(
        config::ConfigError,
        capture::CaptureError,
        preprocess::PreprocessError,
        model::ModelError,
        model::fetch::FetchError,
        postprocess::PostprocessError,
        publish::PublishError,
        dataset::DatasetError,
        train::TrainError,
        web::WebError,
    );
    cause
        .downcast_ref::<std::io::Error>()
        .map(|_| Sysexit::IoErr)
}
