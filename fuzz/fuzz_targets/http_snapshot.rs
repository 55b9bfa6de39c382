//! An HTTP camera's answer to a snapshot request: the fuzzed bytes are the whole response
//! (status line, headers, body), served from a 127.0.0.1 listener to `capture::fetch_snapshot`,
//! the fetch the camera thread runs. `Ok` with the body as an encoded frame, or an error naming
//! the URL; never a panic or a hang.
#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use edgeclass::capture::{fetch_snapshot, PixelFormat};
use libfuzzer_sys::fuzz_target;

/// The listener's URL and the channel that hands it the next response to serve.
fn server() -> &'static (String, Mutex<SyncSender<Vec<u8>>>) {
    static SERVER: OnceLock<(String, Mutex<SyncSender<Vec<u8>>>)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!(
            "http://{}/snapshot.jpg",
            listener.local_addr().expect("address")
        );
        let (responses, next) = sync_channel::<Vec<u8>>(1);
        std::thread::spawn(move || {
            for response in next {
                let Ok((mut stream, _)) = listener.accept() else {
                    continue;
                };
                // Read the request's head before answering, so closing sends no reset.
                let mut request = Vec::new();
                let mut buf = [0; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(&response);
                let _ = stream.shutdown(Shutdown::Write);
                // Wait for the client to close, so it reads everything written.
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            }
        });
        (url, Mutex::new(responses))
    })
}

fuzz_target!(|response: Vec<u8>| {
    let (url, responses) = server();
    responses
        .lock()
        .expect("server channel")
        .send(response.clone())
        .expect("server thread");
    match fetch_snapshot(url, Duration::from_secs(5)) {
        Ok(frame) => {
            assert_eq!(frame.format, PixelFormat::Encoded);
            assert!(!frame.data.is_empty());
        }
        Err(e) => assert!(e.to_string().contains(url.as_str()), "{e}"),
    }
});
