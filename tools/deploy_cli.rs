//! Shared by the deploy binaries (`dspnet-profile`, `dspnet-select`): argument parsing whose
//! errors are one line, and exit codes.
//!
//! Exit codes: 0 success; 1 the request was valid but cannot be met (no width fits the budget,
//! [`DeployError::NoWidthFits`]); 2 bad input (options, run directory, checkpoint, results,
//! unwritable output), including command-line syntax errors.

use clap::Parser;
use dspnet_deploy::DeployError;
use std::process::ExitCode;

/// Exit code of an error: 1 for [`DeployError::NoWidthFits`], 2 for everything else.
pub fn exit_code(e: &DeployError) -> u8 {
    match e {
        DeployError::NoWidthFits(_) => 1,
        _ => 2,
    }
}

/// Parses the command line. `--help` and `--version` print and exit 0 as usual; any other
/// clap error is printed as ONE line `error: ...` (usage hint dropped) and gives exit code 2.
pub fn parse_args<T: Parser>() -> Result<T, ExitCode> {
    T::try_parse().map_err(|e| {
        use clap::error::ErrorKind;
        if matches!(
            e.kind(),
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        ) {
            e.exit();
        }
        let text = e.render().to_string();
        let body = text.split("\nUsage:").next().unwrap_or(&text);
        let line = body.split_whitespace().collect::<Vec<_>>().join(" ");
        eprintln!("error: {}", line.strip_prefix("error: ").unwrap_or(&line));
        ExitCode::from(2)
    })
}

/// Prints `error: <one line>` for an error and returns its exit code ([`exit_code`]).
pub fn finish(result: Result<(), DeployError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", dspnet_core::cli::error_line(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}
