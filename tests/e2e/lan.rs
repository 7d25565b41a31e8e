//! The LAN protections against the real binary on loopback: slow and idle connections are
//! closed, token guessing is braked, foreign Host names are refused, all interfaces is allowed.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use demeter_tests::{demeter_bin, wait_for, Daemon, ADMIN_TOKEN};

/// Reads until the server closes the connection (or `limit` passes); returns how long it took.
fn time_to_close(
    mut tcp: TcpStream,
    mut trickle: impl FnMut(&mut TcpStream) -> bool,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    tcp.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 1024];
    while start.elapsed() < limit {
        match tcp.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {} // a 408 or similar before the close is fine
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if !trickle(&mut tcp) {
                    return Some(start.elapsed());
                }
            }
            Err(_) => return Some(start.elapsed()), // reset
        }
    }
    None
}

#[test]
fn slowloris_and_idle_connections_are_closed() {
    let d = Daemon::start_with(&[("DEMETER_HEADER_TIMEOUT_SECS", "2")]);
    // Headers trickling in one byte at a time never complete a request.
    let tcp = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let mut sent_start = false;
    let closed = time_to_close(
        tcp,
        |t| {
            let chunk: &[u8] = if sent_start { b"X" } else { b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " };
            sent_start = true;
            t.write_all(chunk).is_ok()
        },
        Duration::from_secs(30),
    );
    assert!(closed.is_some(), "a trickling client was never disconnected");
    // A connection that says nothing at all is closed too.
    let idle = time_to_close(TcpStream::connect(("127.0.0.1", d.port)).unwrap(), |_| true, Duration::from_secs(30));
    assert!(idle.is_some(), "an idle connection was never closed");
    // Meanwhile normal requests are served.
    assert_eq!(d.get("/health").0, 200);
}

#[test]
fn guessing_tokens_gets_429_with_retry_after_and_foreign_hosts_get_421() {
    let d = Daemon::start();
    let mut codes = Vec::new();
    for i in 0..12 {
        let code =
            match ureq::get(&d.url("/api/v1/sessions")).set("Authorization", &format!("Bearer dmt_guess{i}")).call() {
                Ok(r) => r.status(),
                Err(ureq::Error::Status(c, r)) => {
                    if c == 429 {
                        let wait: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
                        assert!(wait >= 1);
                    }
                    c
                }
                Err(e) => panic!("{e}"),
            };
        codes.push(code);
    }
    assert_eq!(&codes[..10], &[401; 10]);
    assert_eq!(&codes[10..], &[429, 429]);

    let mut tcp = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    write!(tcp, "GET / HTTP/1.1\r\nHost: rebound.example.com\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 421"), "{response}");
}

#[test]
fn listening_on_all_interfaces_is_allowed_because_auth_is_always_on() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(demeter_bin())
        .args([
            "run",
            "--watch",
            tmp.path().join("p").to_str().unwrap(),
            "--data",
            tmp.path().join("d").to_str().unwrap(),
        ])
        .args(["--listen", &format!("0.0.0.0:{port}")])
        .env("DEMETER_CONFIG", "")
        .env("DEMETER_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/api/v1/sessions");
    wait_for("the server", Duration::from_secs(30), || {
        ureq::get(&format!("http://127.0.0.1:{port}/health")).call().ok()
    });
    assert!(matches!(ureq::get(&url).call(), Err(ureq::Error::Status(401, _))));
    assert_eq!(ureq::get(&url).set("Authorization", &format!("Bearer {ADMIN_TOKEN}")).call().unwrap().status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
}
