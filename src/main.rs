//! The tusring daemon. Exit codes: 0 after a clean shutdown, 1 when the daemon cannot
//! start or run, 2 for a usage error (bad flag or value).

use std::process::ExitCode;
use tusring::config::{self, Action};

fn main() -> ExitCode {
    let config = match config::load_from_process() {
        Ok(Action::Run(c)) => c,
        Ok(Action::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Action::Version(v)) => {
            println!("{v}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tusring: {e}");
            return ExitCode::from(2);
        }
    };
    // Before any thread exists (the logger's included): SIGTERM and SIGINT are taken only
    // by the main thread's sigtimedwait, never delivered to a thread that would die of them.
    tusring::server::listen::block_shutdown_signals();
    tusring::log::set_json(config.log_format == tusring::config::LogFormat::Json);
    tusring::log::init(config.log_level);
    let result = tusring::server::run(config);
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tusring::error!("{e}");
            ExitCode::from(1)
        }
    };
    tusring::log::flush();
    code
}
