//! Helpers shared by the thin binaries in `tools/`: logging set-up, device parsing, exit codes.

use crate::error::TrainerError;
use std::process::ExitCode;
use tch::Device;

/// Installs a `tracing` subscriber writing to stderr (colours only on a terminal); `RUST_LOG`
/// overrides the default `info`.
pub fn init_logging() {
    let filter = tracing_subscriber_filter();
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init();
}

fn tracing_subscriber_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// Parses `cpu`, `cuda` or `cuda:N`. Errors name the option and the accepted values, and say
/// when CUDA was asked for but libtorch sees no CUDA device.
pub fn parse_device(s: &str) -> Result<Device, TrainerError> {
    let d = match s {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        _ => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Device::Cuda(n),
            None => {
                return Err(TrainerError::Config(format!("--device {s}: use cpu, cuda or cuda:N")));
            }
        },
    };
    if d.is_cuda() && !tch::Cuda::is_available() {
        return Err(TrainerError::Config(format!("--device {s}: libtorch sees no CUDA device here; use --device cpu")));
    }
    Ok(d)
}

/// Runs a binary's body: prints `error: <one line>` and returns exit code 2 on failure.
pub fn exit_with(result: Result<(), TrainerError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
