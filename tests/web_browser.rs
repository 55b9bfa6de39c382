//! The web page in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! installed by `.ci/setup`), driven through chromedriver with fantoccini against the real
//! daemon on 127.0.0.1. A failing test saves a screenshot under `target/web-browser/`.

mod common {
    pub mod mosquitto;
    pub mod rng;
    pub mod scenes;
    pub mod wait;
    pub mod web;
}

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use common::mosquitto::free_port;
use common::wait::{is_listening, poll_until};
use common::web::{config, sample, WebDaemon};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(30);

/// chromedriver on a free port; killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: run `sudo .ci/setup` (installs chromium and chromium-driver)"
            );
        }
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        assert!(
            poll_until(WAIT, || is_listening(port)),
            "chromedriver did not listen on {port}"
        );
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `test` with a fresh headless browser; an error saves a screenshot, then fails the test.
fn in_browser<F, Fut>(name: &str, test: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let driver = Driver::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1100,900"],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a chromium session through chromedriver");
        let result = test(client.clone()).await;
        if let Err(err) = &result {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-browser");
            let file = dir.join(format!("{name}.png"));
            let saved = match client.screenshot().await {
                Ok(png) => std::fs::create_dir_all(&dir)
                    .and_then(|()| std::fs::write(&file, png))
                    .map(|()| format!("screenshot: {}", file.display()))
                    .unwrap_or_else(|e| format!("no screenshot: {e}")),
                Err(e) => format!("no screenshot: {e}"),
            };
            let _ = client.close().await;
            panic!("{name}: {err:#}\n{saved}");
        }
        let _ = client.close().await;
    });
}

/// Polls `check` until it returns `Some`, for at most [`WAIT`].
async fn eventually<T, Fut: Future<Output = anyhow::Result<Option<T>>>>(
    what: &str,
    mut check: impl FnMut() -> Fut,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A label map naming every ImageNet class with markup: the page must show it as text.
fn hostile_label_map(dir: &Path) -> PathBuf {
    let mut text = String::from("[names]\n");
    for index in 0..1000 {
        text += &format!(
            "\"{index}\" = \"<script>window.pwned = 1</script><img src=x onerror='window.pwned = 1'> {index}\"\n"
        );
    }
    let file = dir.join("hostile.toml");
    std::fs::write(&file, text).expect("write the label map");
    file
}

/// The text of every element matching `css`.
async fn texts(client: &Client, css: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for element in client.find_all(Locator::Css(css)).await? {
        out.push(element.text().await?);
    }
    Ok(out)
}

async fn not_pwned(client: &Client) -> anyhow::Result<()> {
    let pwned = client
        .execute("return window.pwned === undefined;", vec![])
        .await?;
    ensure!(pwned == json!(true), "markup in a label ran as script");
    let injected = client
        .execute(
            "return document.querySelectorAll('main script, main img[src=\"x\"]').length;",
            vec![],
        )
        .await?;
    ensure!(injected == json!(0), "markup in a label became elements");
    Ok(())
}

#[test]
fn the_camera_tile_follows_events_and_shows_labels_as_text() {
    // Two photos in turn: the tile's label and bars must change as their events arrive.
    let frames = tempfile::tempdir().unwrap();
    for name in ["chelsea.jpg", "coffee.jpg"] {
        std::fs::copy(sample(name), frames.path().join(name)).unwrap();
    }
    let source = format!("file:{}", frames.path().display());
    let daemon = WebDaemon::start(|broker, port, dir| {
        let map = hostile_label_map(dir);
        let camera = [("door", source.as_str())];
        let mut text = config(broker, port, &camera, "", "");
        text = text.replace(
            "[postprocess]\n",
            &format!("[postprocess]\nlabel_map = \"{}\"\n", map.display()),
        );
        text.replace("interval_ms = 100", "interval_ms = 400")
    });
    let url = daemon.url("/");
    in_browser("camera_tile", |client| async move {
        client.goto(&url).await?;
        let tile = ".tile[data-camera=\"door\"]";
        let mut seen = BTreeSet::new();
        let deadline = Instant::now() + WAIT;
        while seen.len() < 2 {
            ensure!(
                Instant::now() < deadline,
                "the tile showed only {seen:?}, not several events"
            );
            let label = texts(&client, &format!("{tile} .label")).await?;
            let bars = texts(&client, &format!("{tile} .bars")).await?;
            if let (Some(label), Some(bars)) = (label.first(), bars.first()) {
                if !label.is_empty() {
                    seen.insert((label.clone(), bars.clone()));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = texts(&client, &format!("{tile} .status")).await?;
        ensure!(status == ["online"], "status {status:?}");
        let bars = client
            .find_all(Locator::Css(&format!("{tile} .bar")))
            .await?;
        ensure!(bars.len() == 3, "{} bars", bars.len());
        let label = texts(&client, &format!("{tile} .label")).await?.join("");
        ensure!(
            label.contains("<script>window.pwned = 1</script>"),
            "label {label:?}"
        );
        not_pwned(&client).await?;
        let live = texts(&client, "#live").await?;
        ensure!(live == ["live"], "live badge {live:?}");
        Ok(())
    });
}

#[test]
fn an_uploaded_image_shows_its_top3() {
    let source = format!("file:{}", sample("chelsea.jpg").display());
    let daemon = WebDaemon::start(|broker, port, dir| {
        let map = hostile_label_map(dir);
        config(broker, port, &[("door", source.as_str())], "", "").replace(
            "[postprocess]\n",
            &format!("[postprocess]\nlabel_map = \"{}\"\n", map.display()),
        )
    });
    // What the API says about the same file, to compare with the page.
    let photo = std::fs::read(sample("coffee.jpg")).unwrap();
    let mut response = daemon
        .agent()
        .post(daemon.url("/api/classify"))
        .send(&photo[..])
        .unwrap();
    let answer: serde_json::Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    let expected = answer["classification"]["label"]
        .as_str()
        .unwrap()
        .to_string();
    let url = daemon.url("/#classify");
    in_browser("upload", |client| async move {
        client.goto(&url).await?;
        let input = client.find(Locator::Css("#files")).await?;
        input
            .send_keys(&sample("coffee.jpg").display().to_string())
            .await
            .context("choose the file")?;
        let label = eventually("the upload's Top-3", || {
            let client = client.clone();
            async move {
                let bars = client.find_all(Locator::Css(".result .bar")).await?;
                let label = texts(&client, ".result .label").await?;
                Ok((bars.len() == 3).then(|| label.join("")))
            }
        })
        .await?;
        ensure!(label.starts_with(&expected), "{label:?} vs {expected:?}");
        let details = texts(&client, ".result .details").await?.join("");
        ensure!(details.starts_with("ImageNet: "), "{details:?}");
        not_pwned(&client).await?;
        Ok(())
    });
}

/// The names of the files in `folder`, sorted.
fn files_in(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn bulk_labelling_in_the_grid_moves_files_and_training_shows_progress_and_report() {
    use common::scenes::{door, Variation};
    let source = format!("file:{}", sample("chelsea.jpg").display());
    let daemon = WebDaemon::start(|broker, port, dir| {
        let dataset = dir.join("state/datasets/door");
        for (class, open) in [("unlabelled", true), ("closed", false)] {
            std::fs::create_dir_all(dataset.join(class)).unwrap();
            for seed in 0..12 {
                door(open, seed, Variation::CAMERA)
                    .save(dataset.join(class).join(format!("door-{seed:02}.png")))
                    .unwrap();
            }
        }
        config(broker, port, &[("door", source.as_str())], "", "")
    });
    let dataset = daemon.dir.path().join("state/datasets/door");
    let url = daemon.url("/#label");
    let (check_dataset, check_unlabelled) = (dataset.clone(), dataset.join("unlabelled"));
    in_browser("label_and_train", |client| async move {
        client.goto(&url).await?;
        // A new class, created on the page, becomes the assign target.
        client
            .find(Locator::Css("#new-class"))
            .await?
            .send_keys("open")
            .await?;
        client
            .find(Locator::Css("#create-class"))
            .await?
            .click()
            .await?;
        eventually("the new class in the class list", || {
            let client = client.clone();
            async move {
                let value = client
                    .execute(
                        "return document.getElementById('assign-class').value;",
                        vec![],
                    )
                    .await?;
                Ok((value == json!("open")).then_some(()))
            }
        })
        .await?;
        client
            .find(Locator::Css("#show-class"))
            .await?
            .select_by_value("unlabelled")
            .await?;
        let frames = eventually("12 unlabelled frames in the grid", || {
            let client = client.clone();
            async move {
                let frames = client.find_all(Locator::Css("#frames .frame img")).await?;
                Ok((frames.len() == 12).then_some(frames.len()))
            }
        })
        .await?;
        ensure!(frames == 12);
        // Click, then shift-click: the range between them.
        client
            .find(Locator::Css("#frames .frame[data-file=\"door-00.png\"]"))
            .await?
            .click()
            .await?;
        client
            .execute(
                "document.querySelector('#frames .frame[data-file=\"door-03.png\"]')\
                 .dispatchEvent(new MouseEvent('click', {bubbles: true, shiftKey: true}));",
                vec![],
            )
            .await?;
        let selected = texts(&client, "#selected-count").await?;
        ensure!(
            selected == ["4 selected"],
            "click and shift-click: {selected:?}"
        );
        client
            .find(Locator::Css("#select-none"))
            .await?
            .click()
            .await?;
        // Select all, then click one frame off again: 11 selected.
        client
            .find(Locator::Css("#select-all"))
            .await?
            .click()
            .await?;
        client
            .find(Locator::Css("#frames .frame[data-file=\"door-05.png\"]"))
            .await?
            .click()
            .await?;
        let selected = texts(&client, "#selected-count").await?;
        ensure!(selected == ["11 selected"], "{selected:?}");
        client.find(Locator::Css("#assign")).await?.click().await?;
        eventually("the grid after the move", || {
            let client = client.clone();
            async move {
                let left = client.find_all(Locator::Css("#frames .frame")).await?;
                Ok((left.len() == 1).then_some(()))
            }
        })
        .await?;
        let open = files_in(&check_dataset.join("open"));
        ensure!(open.len() == 11, "open/ holds {open:?}");
        ensure!(!open.contains(&"door-05.png".to_string()), "{open:?}");
        let unlabelled = files_in(&check_unlabelled);
        ensure!(
            unlabelled == ["door-05.png"],
            "unlabelled/ holds {unlabelled:?}"
        );

        // Training: live progress, then the report.
        client.find(Locator::Css("#train")).await?.click().await?;
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut saw_progress = false;
        loop {
            let status = texts(&client, "#train-status").await?.join("");
            // Progress while it runs (pictures through the backbone, then epochs; fitting
            // cached features can be over within one poll), not only the final line.
            saw_progress |= status.starts_with("reading pictures ")
                || (status.starts_with("epoch ") && status.contains("validation accuracy"));
            ensure!(!status.contains("failed"), "{status}");
            if status.starts_with("done") {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "training did not finish: {status}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ensure!(saw_progress, "no progress was shown while training ran");
        let status = texts(&client, "#train-status").await?.join("");
        ensure!(
            status.contains("validation accuracy") && status.contains("learning rate"),
            "the last epoch's figures: {status}"
        );
        let report = texts(&client, "#train-report").await?.join(" ");
        ensure!(report.contains("accuracy: validation"), "{report}");
        let rows = client
            .find_all(Locator::Css("#train-report table.confusion tr"))
            .await?;
        ensure!(rows.len() == 3, "confusion matrix rows: {}", rows.len());
        let activate = client.find(Locator::Css("#activate")).await?;
        ensure!(
            activate.attr("disabled").await?.is_none(),
            "Activate stays disabled"
        );
        Ok(())
    });
}

#[test]
fn the_threshold_slider_previews_unknown_frames_and_apply_writes_the_overrides_file() {
    let source = format!("file:{}", sample("chelsea.jpg").display());
    let daemon = WebDaemon::start(|broker, port, _| {
        config(broker, port, &[("door", source.as_str())], "", "")
    });
    let scored = poll_until(WAIT, || {
        daemon.get_json("/api/thresholds")["recent"]
            .as_array()
            .is_some_and(|r| r.len() >= 3)
    });
    assert!(scored, "no recent scores\n{}", daemon.stderr());
    let overrides = daemon.dir.path().join("state/overrides.toml");
    let url = daemon.url("/#thresholds");
    in_browser("thresholds", |client| async move {
        client.goto(&url).await?;
        let tile = ".tile.threshold";
        let (label, total) = eventually("a label's histogram", || {
            let client = client.clone();
            async move {
                let names = texts(&client, &format!("{tile} .name")).await?;
                let totals = texts(&client, &format!("{tile} .total")).await?;
                Ok(names.first().cloned().zip(totals.first().cloned()))
            }
        })
        .await?;
        let total: usize = total.parse().context("frame count")?;
        ensure!(total >= 3, "{total} frames");
        // The note says since when and how many frames the daemon recorded.
        let note = texts(&client, "#thresholds-note").await?.join("");
        ensure!(
            note.starts_with("Recording since ") && note.contains("classifications seen"),
            "{note}"
        );
        // The global threshold (0.0 from the config): its preview covers every recent frame.
        let global = ".tile.threshold-global";
        let unknown = texts(&client, &format!("{global} .would-unknown")).await?;
        let all = texts(&client, &format!("{global} .total")).await?;
        ensure!(
            unknown.first().map(String::as_str) == Some("0"),
            "{unknown:?}"
        );
        let all: usize = all.first().context("the global tile")?.parse()?;
        ensure!(
            all >= total,
            "{all} frames in the global preview, {total} of one label"
        );
        client
            .execute(
                "const s = document.querySelector('.tile.threshold-global .slider'); \
                 s.value = '1'; s.dispatchEvent(new Event('input'));",
                vec![],
            )
            .await?;
        let unknown = texts(&client, &format!("{global} .would-unknown")).await?;
        ensure!(
            unknown.first() == Some(&all.to_string()),
            "global 1.0: {unknown:?} of {all}"
        );
        let value = texts(&client, &format!("{global} .value")).await?;
        ensure!(
            value.first().map(String::as_str) == Some("1.00"),
            "{value:?}"
        );
        let bars = client
            .find_all(Locator::Css(&format!("{tile} .histogram rect")))
            .await?;
        ensure!(bars.len() == 20, "{} histogram bars", bars.len());
        // Threshold 0.0 from the config: no frame would be unknown.
        let unknown = texts(&client, &format!("{tile} .would-unknown")).await?;
        ensure!(
            unknown.first().map(String::as_str) == Some("0"),
            "{unknown:?}"
        );
        // Moving the slider to 1.0 turns every recent frame of the label unknown.
        client
            .execute(
                "const s = document.querySelector('.tile.threshold .slider'); \
                 s.value = '1'; s.dispatchEvent(new Event('input'));",
                vec![],
            )
            .await?;
        let unknown = texts(&client, &format!("{tile} .would-unknown")).await?;
        ensure!(
            unknown.first() == Some(&total.to_string()),
            "{unknown:?} of {total}"
        );
        let listed = client
            .find_all(Locator::Css(&format!("{tile} .frames li")))
            .await?;
        ensure!(listed.len() == total, "{} frames listed", listed.len());
        client
            .find(Locator::Css(&format!("{tile} .apply")))
            .await?
            .click()
            .await?;
        let written = eventually("the overrides file", || {
            let overrides = overrides.clone();
            async move { Ok(std::fs::read_to_string(&overrides).ok()) }
        })
        .await?;
        let table: toml::Table = written.parse().context("overrides TOML")?;
        let value = table["postprocess"]["thresholds"]
            .get(&label)
            .and_then(|v| v.as_float());
        ensure!(value == Some(1.0), "{label}: {written}");
        let status = eventually("the applied note", || {
            let client = client.clone();
            async move {
                let text = texts(&client, &format!("{tile} .applied")).await?.join("");
                Ok(text.starts_with("applied").then_some(text))
            }
        })
        .await?;
        ensure!(status == "applied 1.00", "{status}");
        Ok(())
    });
}
