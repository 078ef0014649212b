//! Running the built `hexeract` binary, for the CLI tests.

#![allow(dead_code)] // each test binary uses its own part

use std::process::{Command, Output};

/// The environment variables a connection URL can come from: unset for
/// every run, so that only the URL a test passes counts.
const URL_VARIABLES: [&str; 3] = ["HEXERACT_DATABASE_URL", "DATABASE_URL", "HEXERACT_AMQP_URL"];

/// `hexeract`, with no connection URL in its environment.
pub fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hexeract"));
    for variable in URL_VARIABLES {
        command.env_remove(variable);
    }
    command
}

/// Runs `hexeract args…` with no connection URL in its environment.
pub fn hexeract(args: &[&str]) -> Output {
    command().args(args).output().expect("run hexeract")
}

/// What a run printed, standard output then standard error.
pub fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Runs `hexeract args…`, checks it exits with `code`, and returns what it
/// printed (both streams).
#[track_caller]
pub fn exits(code: i32, args: &[&str]) -> String {
    let output = hexeract(args);
    let printed = text(&output);
    assert_eq!(output.status.code(), Some(code), "hexeract {args:?}:\n{printed}");
    printed
}
