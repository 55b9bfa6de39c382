//! Broker faults against a real mosquitto configured for each case, seen through the real
//! daemon: refused credentials, a broker certificate the CA file does not trust, and a snapshot
//! larger than the broker accepts.

mod common {
    pub mod daemon;
    pub mod mosquitto;
    pub mod tls;
    pub mod wait;
}

use std::path::Path;
use std::thread;
use std::time::Duration;

use common::daemon::Daemon;
use common::mosquitto::{write_password_file, Mosquitto, Subscriber};
use common::tls::make_certificates;
use common::wait::poll_until;

const WAIT: Duration = Duration::from_secs(30);

/// How long the retries are watched: backoff from 100 ms doubling to 1.6 s allows about 8
/// attempts in it, a loop without backoff hundreds.
const RETRY_WINDOW: Duration = Duration::from_secs(6);

fn image(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/images")
        .join(name)
        .display()
        .to_string()
}

/// One `file:` camera per `(id, image)`, synthetic weights, `mqtt` lines added to `[mqtt]`.
fn config(url: &str, mqtt: &str, cameras: &[(&str, &str)]) -> String {
    let mut text = format!(
        "[model]\nsynthetic_seed = 7\nprecision = \"q8_0\"\nthreads = 1\n\
         [publish_policy]\nmode = \"every\"\n\
         [mqtt]\nurl = \"{url}\"\nreconnect_min_ms = 100\nreconnect_max_ms = 1600\n{mqtt}\n\
         [mqtt.discovery]\nenabled = false\n[web]\nenabled = false\n"
    );
    for (id, file) in cameras {
        text.push_str(&format!(
            "[[cameras]]\nid = \"{id}\"\nsource = \"file:{}\"\ninterval_ms = 100\n\
             [cameras.motion]\nenabled = false\n",
            image(file)
        ));
    }
    text
}

/// Connection attempts the broker logged (`log_type all`).
fn connections(broker: &Mosquitto) -> usize {
    broker.log().matches("New connection from").count()
}

fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn refused_credentials_are_one_error_naming_the_keys_then_backoff() {
    let broker = Mosquitto::start_with(|dir| {
        let file = write_password_file(&dir.join("passwd"), "edge", "s3cret");
        format!("password_file {}", file.display())
    });
    let mut daemon = Daemon::start(&config(
        &broker.url(),
        "username = \"edge\"\npassword = \"wrong\"",
        &[("door", "chelsea.jpg")],
    ));
    assert!(
        poll_until(WAIT, || connections(&broker) >= 1),
        "the daemon never tried to connect\n{}",
        daemon.stderr()
    );
    let first = connections(&broker);
    thread::sleep(RETRY_WINDOW);
    let attempts = connections(&broker) - first;
    let stderr = daemon.stderr();
    assert!(
        (2..=12).contains(&attempts),
        "{attempts} connection attempts in {RETRY_WINDOW:?}: expected a few retries on an \
         exponential backoff\n{stderr}"
    );
    let errors = lines_with(&stderr, "ERROR");
    assert_eq!(errors.len(), 1, "exactly one error line\n{stderr}");
    assert!(
        errors[0].contains("mqtt.username") && errors[0].contains("mqtt.password"),
        "the error names the keys to fix: {}",
        errors[0]
    );
    assert!(
        broker.log().contains("not authorised"),
        "the broker refused for the credentials\n{}",
        broker.log()
    );
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit(WAIT);
}

#[test]
fn an_untrusted_broker_certificate_is_an_error_naming_the_ca_file() {
    let broker = Mosquitto::start_with(|dir| {
        make_certificates(dir);
        format!(
            "cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n",
            d = dir.display()
        )
    });
    // A CA of its own, which did not sign the broker's certificate.
    let other = tempfile::tempdir().unwrap();
    make_certificates(other.path());
    let wrong_ca = other.path().join("ca.pem");
    let url = format!("mqtts://127.0.0.1:{}", broker.port());
    let mqtt = format!("ca_file = \"{}\"", wrong_ca.display());
    let mut daemon = Daemon::start(&config(&url, &mqtt, &[("door", "chelsea.jpg")]));
    assert!(
        poll_until(WAIT, || daemon.stderr().contains("ERROR")),
        "no error about the certificate\n{}",
        daemon.stderr()
    );
    thread::sleep(RETRY_WINDOW);
    let stderr = daemon.stderr();
    let errors = lines_with(&stderr, "ERROR");
    assert_eq!(errors.len(), 1, "exactly one error line\n{stderr}");
    assert!(
        errors[0].contains("mqtt.ca_file") && errors[0].contains(&wrong_ca.display().to_string()),
        "the error names the key and the CA file: {}",
        errors[0]
    );
    let attempts = connections(&broker);
    assert!(
        (2..=14).contains(&attempts),
        "{attempts} TLS connection attempts: expected retries on a backoff\n{stderr}"
    );
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit(WAIT);
}

/// mosquitto drops the connection of a client sending a packet over `max_packet_size`, and
/// acknowledges but discards a payload over `message_size_limit`; either way, a snapshot too
/// large for the broker is skipped (with one warning) while events and smaller snapshots flow
/// over the first connection.
#[test]
fn a_snapshot_larger_than_the_broker_accepts_is_skipped_once_and_events_flow() {
    const LIMIT: usize = 20_000;
    assert!(std::fs::metadata(image("astronaut.jpg")).unwrap().len() > LIMIT as u64);
    assert!(std::fs::metadata(image("chelsea.jpg")).unwrap().len() < LIMIT as u64 - 100);
    for limit in ["max_packet_size", "message_size_limit"] {
        let broker = Mosquitto::start_with(|_| format!("{limit} {LIMIT}"));
        let subscriber = Subscriber::connect(
            broker.port(),
            &["edgeclass/+/event", "edgeclass/+/snapshot"],
        );
        let before = connections(&broker);
        let mut daemon = Daemon::start(&config(
            &broker.url(),
            &format!("max_packet_bytes = {LIMIT}"),
            &[("big", "astronaut.jpg"), ("small", "chelsea.jpg")],
        ));
        let events = subscriber.collect_on("edgeclass/big/event", 20, WAIT);
        assert_eq!(
            events.len(),
            20,
            "{limit}: events of the camera with big snapshots\n{}",
            daemon.stderr()
        );
        let small = subscriber.wait_for_topic("edgeclass/small/snapshot", WAIT);
        assert!(small.is_some(), "{limit}: the small snapshot is published");
        let stderr = daemon.stderr();
        let warnings = lines_with(&stderr, "snapshot exceeds");
        assert_eq!(warnings.len(), 1, "{limit}: one warning\n{stderr}");
        assert!(
            warnings[0].contains("big") && warnings[0].contains("mqtt.max_packet_bytes"),
            "{}",
            warnings[0]
        );
        assert_eq!(
            connections(&broker) - before,
            1,
            "{limit}: the daemon's first connection only, no reconnect loop\n{}",
            broker.log()
        );
        daemon.signal(libc::SIGTERM);
        daemon.wait_exit(WAIT);
        let rest = subscriber.close();
        assert!(
            rest.iter().all(|m| m.topic != "edgeclass/big/snapshot"),
            "{limit}: no big snapshot reached the broker's subscribers"
        );
    }
}
