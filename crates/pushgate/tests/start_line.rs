//! The one line `pushgate serve` logs at start, read from the real
//! binary's stderr: version, addresses, store, broker, auth, the demo.

mod common;

use common::{Proc, TempDir};

/// The start line, and the lines before it.
fn until_start(p: &Proc) -> (String, Vec<String>) {
    let mut lines = p.lines_until("pushgate listening");
    let line = lines.pop().unwrap();
    (line, lines)
}

/// The value of `field=` in a text log line, without its quotes.
fn field(line: &str, name: &str) -> String {
    let rest = line
        .split(&format!(" {name}="))
        .nth(1)
        .unwrap_or_else(|| panic!("no {name} in {line}"));
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next().unwrap().to_owned(),
        None => rest.split_whitespace().next().unwrap().to_owned(),
    }
}

#[test]
fn in_memory_open_with_the_demo() {
    let p = Proc::start(["--listen", "127.0.0.1:0"]);
    let line = p.line("pushgate listening");
    let addr = field(&line, "addr");
    assert!(line.contains(" INFO "), "{line}");
    assert_eq!(field(&line, "version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(field(&line, "store"), "memory");
    assert_eq!(field(&line, "broker"), "none");
    assert_eq!(field(&line, "auth"), "off (every channel open)");
    assert_eq!(field(&line, "api"), "loopback only");
    assert_eq!(field(&line, "demo"), format!("http://{addr}/"));
    assert!(!line.contains("redirect="), "{line}");
    // What is left open is said apart, as warnings.
    let warned = [p.line("WARN"), p.line("WARN")].join("\n");
    assert!(warned.contains("no API key configured"), "{warned}");
    assert!(
        warned.contains("every channel is open to anyone"),
        "{warned}"
    );
}

#[test]
fn on_disk_with_a_key_a_secret_and_a_broker_password_masked() {
    let dir = TempDir::new("start-line");
    let p = Proc::serve([
        "--data-dir",
        dir.0.to_str().unwrap(),
        "--sync",
        "interval",
        "--api-key",
        "the-api-key",
        "--auth-secret",
        "a-secret-of-at-least-32-bytes-for-tests",
    ]);
    let (line, before) = until_start(&p);
    assert_eq!(
        field(&line, "store"),
        format!("disk {} (sync every 100ms)", dir.0.display())
    );
    assert_eq!(field(&line, "auth"), "tokens checked with HS256 secret");
    assert_eq!(field(&line, "api"), "api key");
    assert_eq!(field(&line, "demo"), "off");
    assert!(
        !line.contains("the-api-key") && !line.contains("for-tests"),
        "{line}"
    );
    // One info line says it all; the store's opening is its own report
    // (with how long it took).
    let infos: Vec<_> = before.iter().filter(|l| l.contains(" INFO ")).collect();
    assert_eq!(infos.len(), 1, "{infos:?}");
    assert!(infos[0].contains("history store opened"), "{infos:?}");
    drop(p);

    let p = Proc::serve(["--broker", "redis://me:s3cret@127.0.0.1:1/2"]);
    let line = p.line("pushgate listening");
    assert_eq!(
        field(&line, "broker"),
        "redis://me:***@127.0.0.1:1/2 (prefix pushgate)"
    );
    assert!(!line.contains("s3cret"), "{line}");
    assert_eq!(field(&line, "store"), "redis (the broker's)");
}

#[test]
fn with_tls_and_its_redirect() {
    let dir = TempDir::new("start-line-tls");
    std::fs::create_dir_all(&dir.0).unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let p = Proc::start([
        "--listen",
        "localhost:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-redirect",
        "127.0.0.1:0",
    ]);
    let (line, before) = until_start(&p);
    assert!(before.iter().all(|l| !l.contains(" INFO ")), "{before:?}");
    let addr = field(&line, "addr");
    assert!(addr.starts_with("127.0.0.1:"), "{line}");
    assert_eq!(field(&line, "tls"), "true");
    assert!(
        field(&line, "redirect").starts_with("http://127.0.0.1:"),
        "{line}"
    );
    assert_eq!(field(&line, "demo"), format!("https://{addr}/"));
}
