//! `edgeclass list-cameras`: V4L2 devices and the modes they offer, to fill in `[[cameras]]`.

use std::fmt::Write;

use crate::capture::{list_cameras, CameraInfo};

/// Arguments of `edgeclass list-cameras`: none.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Prints every V4L2 device with its `source` value and the formats, sizes and frame rates it
/// offers, marking the formats edgeclass cannot use.
pub fn run(_args: Args) -> anyhow::Result<()> {
    let cameras = list_cameras()?;
    print!("{}", render(&cameras));
    Ok(())
}

/// One block per device: header line, then one line per format and size with its frame rates.
fn render(cameras: &[CameraInfo]) -> String {
    if cameras.is_empty() {
        return "no cameras found (no /dev/video* devices; is the camera plugged in and is this \
                user in the `video` group?)\n"
            .into();
    }
    let mut out = String::new();
    for camera in cameras {
        let _ = writeln!(
            out,
            "{}  {}  (source = \"v4l2:{}\")",
            camera.path, camera.name, camera.index
        );
        if let Some(error) = &camera.error {
            let _ = writeln!(out, "    not usable: {error}");
            continue;
        }
        // Modes come sorted by format, size, rate: group consecutive rates of one size.
        let mut modes = camera.modes.iter().peekable();
        while let Some(first) = modes.next() {
            let mut rates = vec![first.fps];
            while let Some(next) = modes.next_if(|m| {
                (&m.format, m.width, m.height) == (&first.format, first.width, first.height)
            }) {
                rates.push(next.fps);
            }
            rates.sort_unstable_by(|a, b| b.cmp(a));
            let rates: Vec<String> = rates.iter().map(u32::to_string).collect();
            let unusable = if first.pixel_format.is_none() {
                "  (not supported by edgeclass)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {:<6} {:>4}x{:<4} @ {} fps{unusable}",
                first.format,
                first.width,
                first.height,
                rates.join(", ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{CameraMode, PixelFormat};

    fn mode(format: &str, width: u32, height: u32, fps: u32) -> CameraMode {
        CameraMode {
            format: format.into(),
            pixel_format: (format == "MJPEG").then_some(PixelFormat::Mjpeg),
            width,
            height,
            fps,
        }
    }

    #[test]
    fn renders_devices_grouped_by_format_and_size() {
        let cameras = [
            CameraInfo {
                index: 0,
                path: "/dev/video0".into(),
                name: "USB Camera".into(),
                modes: vec![
                    mode("GRAY", 320, 240, 30),
                    mode("MJPEG", 640, 480, 15),
                    mode("MJPEG", 640, 480, 30),
                    mode("MJPEG", 1280, 720, 30),
                ],
                error: None,
            },
            CameraInfo {
                index: 1,
                path: "/dev/video1".into(),
                name: "USB Camera".into(),
                modes: vec![],
                error: Some("not a capture device".into()),
            },
        ];
        let text = render(&cameras);
        let expected = "\
/dev/video0  USB Camera  (source = \"v4l2:0\")
    GRAY    320x240  @ 30 fps  (not supported by edgeclass)
    MJPEG   640x480  @ 30, 15 fps
    MJPEG  1280x720  @ 30 fps
/dev/video1  USB Camera  (source = \"v4l2:1\")
    not usable: not a capture device
";
        assert_eq!(text, expected);
    }

    #[test]
    fn says_so_when_there_are_no_cameras() {
        assert!(render(&[]).starts_with("no cameras found"));
    }
}
