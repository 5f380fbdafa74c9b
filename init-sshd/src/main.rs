//! init-sshd entry point; everything lives in the library (see cli.rs).

use clap::Parser;

fn main() -> anyhow::Result<std::process::ExitCode> {
    let code = init_sshd::cli::run(init_sshd::cli::Cli::parse())?;
    Ok(std::process::ExitCode::from(
        u8::try_from(code).unwrap_or(1),
    ))
}
