//! init-sshd entry point; everything lives in the library (see cli.rs).

use clap::Parser;

// musl's allocator cost a third of the throughput on bulk transfers and 3x the connect
// latency (scripts/bench-sshd.sh); mimalloc without transparent huge pages (no_thp) also
// keeps the idle RSS at about 2 MB.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<std::process::ExitCode> {
    let code = init_sshd::cli::run(init_sshd::cli::Cli::parse())?;
    Ok(std::process::ExitCode::from(
        u8::try_from(code).unwrap_or(1),
    ))
}
