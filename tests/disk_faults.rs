//! Disk faults on a real small disk (a tmpfs, read-only or full): `quantize` fails naming the
//! path and leaves no file, and a daemon whose frame collection cannot write keeps classifying
//! and publishing, with one warning naming the path. (`fetch-model` on a full or read-only disk
//! is in `tests/fetch.rs`, next to its HTTP server.)

mod common {
    pub mod cli;
    pub mod daemon;
    pub mod disk;
    pub mod mosquitto;
    pub mod wait;
}

use std::path::Path;
use std::time::Duration;

use common::cli::{edgeclass, fixture, text};
use common::daemon::Daemon;
use common::disk::SmallDisk;
use common::mosquitto::{Mosquitto, Subscriber};
use common::wait::poll_until;

const WAIT: Duration = Duration::from_secs(30);

/// Holds two of the fixture photos at most (tmpfs counts whole 4 KiB pages).
const SMALL_DISK: usize = 40 * 1024;

#[test]
fn quantize_onto_a_full_or_read_only_disk_names_the_path_and_leaves_no_file() {
    let input = fixture("model_tiny_resnet18.safetensors");
    for read_only in [false, true] {
        let disk = SmallDisk::mount(if read_only { 1 << 20 } else { 64 * 1024 });
        if read_only {
            disk.make_read_only();
        }
        let output = disk.path().join("resnet18-q8_0.gguf");
        let out = edgeclass(&[
            "quantize",
            "--input",
            &input.display().to_string(),
            "--output",
            &output.display().to_string(),
        ]);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(74),
            "read-only {read_only}: I/O error\n{stderr}"
        );
        assert!(
            stderr.contains(&output.display().to_string()),
            "read-only {read_only}: the error names the output file\n{stderr}"
        );
        assert_eq!(
            disk.entries(),
            Vec::<String>::new(),
            "read-only {read_only}: no partial file is left"
        );
    }
}

fn collecting_daemon(url: &str, dir: &Path) -> Daemon {
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
    Daemon::start(&format!(
        "[model]\nsynthetic_seed = 7\nprecision = \"q8_0\"\nthreads = 1\n\
         [publish_policy]\nmode = \"every\"\n\
         [mqtt]\nurl = \"{url}\"\n[mqtt.discovery]\nenabled = false\n[web]\nenabled = false\n\
         [[cameras]]\nid = \"door\"\nsource = \"file:{}\"\ninterval_ms = 100\n\
         [cameras.motion]\nenabled = false\n\
         [cameras.collect]\nenabled = true\ndir = \"{}\"\nevery_s = 1\nmin_change = 0.0\n",
        images.display(),
        dir.display()
    ))
}

#[test]
fn frame_collection_on_a_full_or_read_only_disk_warns_once_and_events_flow() {
    let photos: Vec<Vec<u8>> = ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]
        .iter()
        .map(|name| std::fs::read(fixture(&format!("images/{name}"))).expect("photo"))
        .collect();
    for read_only in [false, true] {
        let disk = SmallDisk::mount(SMALL_DISK);
        if read_only {
            disk.make_read_only();
        }
        let broker = Mosquitto::start();
        let subscriber = Subscriber::connect(broker.port(), &["edgeclass/door/event"]);
        let mut daemon = collecting_daemon(&broker.url(), disk.path());
        let failed = poll_until(WAIT, || daemon.stderr().contains("cannot save a frame"));
        assert!(
            failed,
            "read-only {read_only}: no save failed\n{}",
            daemon.stderr()
        );
        subscriber.drain_pending();
        // Several more save attempts (one a second) fail while events keep coming.
        let events = subscriber.collect_on("edgeclass/door/event", 30, WAIT);
        assert_eq!(
            events.len(),
            30,
            "read-only {read_only}: events after the failure"
        );
        daemon.signal(libc::SIGTERM);
        assert!(daemon.wait_exit(WAIT).success());
        let stderr = daemon.stderr();
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("cannot save a frame"))
            .collect();
        assert_eq!(
            warnings.len(),
            1,
            "read-only {read_only}: one warning\n{stderr}"
        );
        assert!(
            warnings[0].contains(&disk.path().display().to_string()),
            "the warning names the folder: {}",
            warnings[0]
        );
        // Whatever is on the disk is a whole photo under its final name, nothing partial.
        let entries = disk.entries();
        assert_eq!(entries.is_empty(), read_only, "{entries:?}");
        for name in entries {
            assert!(
                name.starts_with("door-") && name.ends_with(".jpg"),
                "{name}"
            );
            let saved = std::fs::read(disk.path().join(&name)).expect("saved frame");
            assert!(photos.contains(&saved), "{name} is not a whole photo");
        }
    }
}
