//! The celador binary: everything happens in [`celador::cli`].

fn main() -> std::process::ExitCode {
    celador::cli::main()
}
