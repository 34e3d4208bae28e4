//! `mipsec`: see `mipsec --help`.

fn main() {
    std::process::exit(mipsec::cli::run(std::env::args_os()));
}
