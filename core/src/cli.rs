//! The binaries' edge: logging set-up, SIGINT/SIGTERM, the one-line error and its exit code,
//! quoting a printed command. Errors travel as data through the crates; this is where they become the
//! user's one line.

use std::fmt::Display;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
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

/// A request to stop at the next step boundary, set by SIGINT (Ctrl-C) or SIGTERM (what SLURM,
/// Kubernetes and spot instances send before SIGKILL): the number of the first signal, 0 while
/// none came. Cloned handles share it; a parent process can set it too ([`StopSignal::request`]).
#[derive(Clone, Debug, Default)]
pub struct StopSignal(Arc<AtomicI32>);

impl StopSignal {
    /// A handle no signal reaches (tests, library callers); see [`StopSignal::install`].
    pub fn new() -> Self {
        StopSignal::default()
    }

    /// Handles SIGINT and SIGTERM on a thread of their own: the first one is recorded (the work
    /// finishes its step, saves and returns) and `first` printed if given; a second one aborts at
    /// once with exit code 128 + its number and says so. A stop asked for with
    /// [`StopSignal::request`] is not a signal: one signal after it still only stops. The abort uses `_exit`, which runs no
    /// atexit handlers or static destructors: `std::process::exit` would tear libtorch's statics
    /// down under the threads still computing and crash (exit code 139). Nothing finished is lost:
    /// checkpoints are written atomically, so the last saved one stays whole.
    ///
    /// Errors: the signal handlers cannot be registered (the OS's reason).
    pub fn install(first: Option<&'static str>) -> std::io::Result<Self> {
        use signal_hook::consts::signal::{SIGINT, SIGTERM};
        let stop = StopSignal::new();
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let handle = stop.clone();
        std::thread::Builder::new().name("dspnet-signals".into()).spawn(move || {
            let mut received = 0;
            for sig in signals.forever() {
                received += 1;
                // a stop asked for otherwise (`request`: a parent's, see dspnet-compare's child)
                // keeps its signal number and does not count as the first signal
                handle.request(sig);
                if received > 1 {
                    eprintln!("\naborted: the last saved checkpoint (if any) is kept");
                    // SAFETY: _exit takes an exit status and never returns; it touches no Rust state.
                    unsafe { libc::_exit(128 + sig) };
                }
                if let Some(m) = first {
                    eprintln!("\n{m}");
                }
            }
        })?;
        Ok(stop)
    }

    /// Asks to stop as signal `sig` would (2 for SIGINT, 15 for SIGTERM); a request already
    /// recorded stays.
    pub fn request(&self, sig: i32) {
        let _ = self.0.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The signal that asked to stop, if any.
    pub fn signal(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    /// The exit code of a run stopped by this request: 128 + the signal (130 for SIGINT, 143
    /// for SIGTERM), 130 when asked without a number.
    pub fn exit_code(&self) -> u8 {
        self.signal().map_or(EXIT_INTERRUPTED, |s| (128 + s).clamp(129, 255) as u8)
    }
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
    fn a_stop_request_keeps_its_first_signal_and_gives_the_shell_exit_code() {
        let s = StopSignal::new();
        assert_eq!((s.signal(), s.exit_code()), (None, 130));
        let other = s.clone();
        other.request(15);
        s.request(2);
        assert_eq!((s.signal(), s.exit_code()), (Some(15), 143));
        let int = StopSignal::new();
        int.request(2);
        assert_eq!(int.exit_code(), 130);
    }

    #[test]
    fn errors_become_one_line() {
        assert_eq!(error_line(&"a\nb"), "a b");
        assert_eq!(error_line(&"one line"), "one line");
    }
}
