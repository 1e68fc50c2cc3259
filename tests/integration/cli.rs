//! The command line and configuration sources, through the real binary.

use crate::harness::*;

#[test]
fn bad_flag_value_exits_2_naming_the_flag() {
    let tmp = TempDir::new("cli-port");
    let (code, _out, err) = run_cli(&["--port", "abc"], tmp.path(), &[]);
    assert_eq!(code, Some(2), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got: {err:?}");
    assert!(lines[0].contains("--port"), "names the flag: {err:?}");
}

#[test]
fn unknown_flag_exits_2_naming_the_flag() {
    let tmp = TempDir::new("cli-bogus");
    let (code, _out, err) = run_cli(&["--bogus"], tmp.path(), &[]);
    assert_eq!(code, Some(2), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got: {err:?}");
    assert!(lines[0].contains("--bogus"), "names the flag: {err:?}");
}

#[test]
fn help_lists_flags_and_exits_0() {
    let tmp = TempDir::new("cli-help");
    let (code, out, err) = run_cli(&["--help"], tmp.path(), &[]);
    assert_eq!(code, Some(0), "stderr: {err}");
    let text = format!("{out}{err}");
    for flag in [
        "--host",
        "--port",
        "--data-dir",
        "--info-dir",
        "--dir-structure",
        "--max-file-size",
        "--tus-extensions",
        "--allow-empty",
        "--workers",
        "--head-timeout",
        "--idle-timeout",
        "--body-timeout",
        "--shutdown-timeout",
    ] {
        assert!(
            text.contains(flag),
            "--help does not mention {flag}:\n{text}"
        );
    }
}

#[test]
fn version_prints_name_and_version() {
    let tmp = TempDir::new("cli-version");
    let (code, out, err) = run_cli(&["--version"], tmp.path(), &[]);
    assert_eq!(code, Some(0), "stderr: {err}");
    assert_eq!(
        out.trim(),
        format!("tusring {}", env!("CARGO_PKG_VERSION")),
        "stdout of --version"
    );
}

#[test]
fn port_from_environment() {
    let tmp = TempDir::new("cli-env");
    let port = free_port();
    let d = Daemon::builder(&tmp)
        .port(None)
        .env("RUSTUS_SERVER_PORT", &port.to_string())
        .start();
    assert_eq!(d.port, port, "RUSTUS_SERVER_PORT must be honoured");
    assert_eq!(d.options("/files").status, 200);
}

#[test]
fn flag_beats_env_beats_dotenv() {
    let tmp = TempDir::new("cli-dotenv");
    let (a, b, c) = (free_port(), free_port(), free_port());
    std::fs::write(
        tmp.join(".env"),
        format!("# settings for the test\nRUSTUS_SERVER_PORT={a}\nRUSTUS_MAX_FILE_SIZE=100\n"),
    )
    .unwrap();

    // .env alone.
    let d = Daemon::builder(&tmp).port(None).start();
    assert_eq!(d.port, a, ".env port");
    assert_eq!(
        d.options("/files").header("Tus-Max-Size"),
        Some("100"),
        "RUSTUS_MAX_FILE_SIZE from .env"
    );
    drop(d);

    // The environment beats .env.
    let d = Daemon::builder(&tmp)
        .port(None)
        .env("RUSTUS_SERVER_PORT", &b.to_string())
        .start();
    assert_eq!(d.port, b, "env beats .env");
    drop(d);

    // A flag beats both.
    let d = Daemon::builder(&tmp)
        .port(Some(c))
        .env("RUSTUS_SERVER_PORT", &b.to_string())
        .start();
    assert_eq!(d.port, c, "flag beats env");
}

#[test]
fn boolean_env_var_enables_allow_empty() {
    let tmp = TempDir::new("cli-bool");
    let d = Daemon::builder(&tmp)
        .env("RUSTUS_ALLOW_EMPTY", "true")
        .start();
    let r = d.post(&[("Upload-Length", "0")]);
    assert_eq!(r.status, 201, "RUSTUS_ALLOW_EMPTY=true: {r:?}");
}
