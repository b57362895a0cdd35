//! The `dynloss-wgpu` command line: parse, build the library's configuration, call it.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run(cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(cli::exit_code(&e))
        }
    }
}
