//! Helpers shared by the thin binaries in `tools/`: logging set-up, device parsing, exit codes.

use crate::error::TrainerError;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

/// Ctrl-C (SIGINT) handling of the training binaries: the first one sets `stop` (the trainer
/// finishes its step, saves a checkpoint and returns) and prints `first` if given; a second one
/// aborts at once with exit code 130 (128 + SIGINT) and says so. The abort uses `_exit`, which
/// runs no atexit handlers or static destructors: `std::process::exit` would tear libtorch's
/// statics down under the threads still computing the step and crash (exit code 139). Nothing
/// finished is lost: checkpoints are written atomically, so the last saved one stays whole.
pub fn on_interrupt(stop: Arc<AtomicBool>, first: Option<&'static str>) {
    let _ = ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            eprintln!("\naborted: the last saved checkpoint (if any) is kept");
            // SAFETY: _exit takes an exit status and never returns; it touches no Rust state.
            unsafe { libc::_exit(130) };
        }
        if let Some(m) = first {
            eprintln!("\n{m}");
        }
    });
}

/// `s` as one shell word: unchanged when it holds only safe characters, else in single quotes
/// (a `'` inside written as `'\''`), so a printed command can be pasted as it is.
pub fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
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

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn shell_words_paste_back_as_one_argument() {
        assert_eq!(shell_word("runs/fmnist-0.5"), "runs/fmnist-0.5");
        assert_eq!(shell_word("runs/with space"), "'runs/with space'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("$HOME"), "'$HOME'");
        assert_eq!(shell_word(""), "''");
    }
}
