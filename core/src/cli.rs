//! The binaries' edge: logging set-up, Ctrl-C, the one-line error and its exit code, quoting
//! a printed command. Errors travel as data through the crates; this is where they become the
//! user's one line.

use std::fmt::Display;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Exit code of a run that failed on bad input or a fault (with one `error: ...` line).
pub const EXIT_ERROR: u8 = 2;
/// Exit code of a run stopped by Ctrl-C after saving (128 + SIGINT, the shell's convention).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Installs a `tracing` subscriber writing to stderr (colours only on a terminal); `RUST_LOG`
/// overrides the default `info`. Also lets a closed stdout (`dspnet-... | head`) end the
/// process quietly, as it does for C tools, instead of a panic on the broken pipe.
pub fn init_logging() {
    init_logging_at("info");
}

/// [`init_logging`] with `default` (e.g. `warn`) as the level when `RUST_LOG` is unset.
pub fn init_logging_at(default: &str) {
    quiet_broken_pipe();
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init();
}

/// Restores the default action of SIGPIPE (the Rust runtime ignores it, so a write to a closed
/// pipe returns EPIPE and `println!` panics): the process then ends silently, like `cat | head`.
pub fn quiet_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default takes no pointers and has no
    // preconditions; it is done before any other thread writes to stdout.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Ctrl-C (SIGINT) handling of the long-running binaries: the first one sets `stop` (the work
/// finishes its step, saves and returns) and prints `first` if given; a second one aborts at
/// once with exit code 130 and says so. The abort uses `_exit`, which runs no atexit handlers or
/// static destructors: `std::process::exit` would tear libtorch's statics down under the threads
/// still computing and crash (exit code 139). Nothing finished is lost: checkpoints are written
/// atomically, so the last saved one stays whole.
pub fn on_interrupt(stop: Arc<AtomicBool>, first: Option<&'static str>) {
    let _ = ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            eprintln!("\naborted: the last saved checkpoint (if any) is kept");
            // SAFETY: _exit takes an exit status and never returns; it touches no Rust state.
            unsafe { libc::_exit(EXIT_INTERRUPTED as i32) };
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

/// The one line a failure is shown as: the error's text with line breaks folded to spaces.
pub fn error_line(e: &dyn Display) -> String {
    e.to_string().split('\n').map(str::trim_end).collect::<Vec<_>>().join(" ")
}

/// Ends a binary's body: success, or `error: <one line>` on stderr and exit code 2.
pub fn exit_with<E: Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_line(&e));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_paste_back_as_one_argument() {
        assert_eq!(shell_word("runs/fmnist-0.5"), "runs/fmnist-0.5");
        assert_eq!(shell_word("runs/with space"), "'runs/with space'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("$HOME"), "'$HOME'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn errors_become_one_line() {
        assert_eq!(error_line(&"a\nb"), "a b");
        assert_eq!(error_line(&"one line"), "one line");
    }
}
