//! `demeter`: the headless daemon. See `cli` for the commands.

mod cli;
mod eval;
mod export;
mod model;
mod process;
mod run;
mod settings;
mod supervise;
mod token;

fn main() -> std::process::ExitCode {
    cli::main()
}
