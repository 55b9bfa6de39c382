//! The *Label and train* page's data: each camera's collected frames and class folders under
//! `<data dir>/datasets/<camera>/` (`unlabelled/` as `[cameras.collect]` fills it, one folder
//! per class beside it), listed, moved between classes and deleted.
//!
//! No name from a request reaches the file system: a class or frame is found by comparing the
//! requested name with what the camera's folder lists, and only the listed entry is used. A new
//! class name must be a usable label ([`crate::dataset::check_label`]) and not hidden.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::api::ApiError;
use super::App;

/// The folder `[cameras.collect]` saves frames into, beside the class folders.
pub const UNLABELLED: &str = "unlabelled";

/// Where the cameras' datasets are: `<data dir>/datasets`.
#[derive(Debug, Clone)]
pub(super) struct Datasets {
    root: PathBuf,
}

/// One class folder (or `unlabelled`) and its frames, sorted by name (capture time).
#[derive(Debug, Serialize)]
pub(super) struct ClassFrames {
    name: String,
    frames: Vec<String>,
}

/// `GET /api/datasets/{camera}`.
#[derive(Serialize)]
struct Listing {
    camera: String,
    /// `unlabelled` first, then the classes by name.
    classes: Vec<ClassFrames>,
}

/// One frame of a request: its class folder and file name.
#[derive(Debug, Deserialize)]
pub(super) struct FrameRef {
    class: String,
    file: String,
}

/// `POST /api/datasets/{camera}/assign`.
#[derive(Deserialize)]
pub(super) struct Assign {
    frames: Vec<FrameRef>,
    /// The class folder to move them into.
    to: String,
}

/// `POST /api/datasets/{camera}/delete`.
#[derive(Deserialize)]
pub(super) struct Delete {
    frames: Vec<FrameRef>,
}

/// `POST /api/datasets/{camera}/classes`.
#[derive(Deserialize)]
pub(super) struct NewClass {
    name: String,
}

impl Datasets {
    pub(super) fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("datasets"),
        }
    }

    /// A camera's folder; `camera` must be a configured camera's id (a topic level: no `/`).
    pub(super) fn camera_dir(&self, camera: &str) -> PathBuf {
        self.root.join(camera)
    }

    /// The classes of `camera`'s folder with their frames; a folder not made yet is empty.
    fn list(&self, camera: &str) -> io::Result<Vec<ClassFrames>> {
        let dir = self.camera_dir(camera);
        let mut classes = vec![ClassFrames {
            name: UNLABELLED.into(),
            frames: Vec::new(),
        }];
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(classes),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry?;
            if let Some(name) = visible_name(&entry.path()) {
                if entry.file_type()?.is_dir() {
                    names.push(name);
                }
            }
        }
        names.sort();
        for name in names {
            let frames = files_in(&dir.join(&name))?;
            if name == UNLABELLED {
                classes[0].frames = frames;
            } else {
                classes.push(ClassFrames { name, frames });
            }
        }
        Ok(classes)
    }
}

/// The name of `path` unless it is hidden (temporary files, `.` and `..`) or not UTF-8.
fn visible_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    (!name.starts_with('.')).then(|| name.to_string())
}

/// The visible files of `folder`, sorted.
fn files_in(folder: &Path) -> io::Result<Vec<String>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            files.extend(visible_name(&entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Runs `work` on `camera`'s folder off the async runtime, after checking the camera is one
/// the daemon runs.
async fn on_camera<T: Send + 'static>(
    app: &Arc<App>,
    camera: &str,
    work: impl FnOnce(&Datasets, &str) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let camera = app
        .board
        .camera(camera)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "camera not found".into()))?
        .id()
        .to_string();
    let datasets = app.datasets.clone();
    tokio::task::spawn_blocking(move || work(&datasets, &camera))
        .await
        .map_err(internal)?
}

/// The listed path of `frame`, or 404 naming it.
fn resolve(dir: &Path, listing: &[ClassFrames], frame: &FrameRef) -> Result<PathBuf, ApiError> {
    listing
        .iter()
        .find(|c| c.name == frame.class)
        .and_then(|c| c.frames.iter().find(|f| **f == frame.file))
        .map(|file| dir.join(&frame.class).join(file))
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no frame {:?} in class {:?}", frame.file, frame.class),
            )
        })
}

/// `GET /api/datasets/{camera}`: the classes and their frames.
pub(super) async fn list(
    State(app): State<Arc<App>>,
    UrlPath(camera): UrlPath<String>,
) -> Result<Response, ApiError> {
    let listing = on_camera(&app, &camera, |datasets, camera| {
        Ok(Listing {
            camera: camera.to_string(),
            classes: datasets.list(camera).map_err(internal)?,
        })
    })
    .await?;
    Ok(Json(listing).into_response())
}

/// `GET /api/datasets/{camera}/frames/{class}/{file}`: one frame's file as it was saved.
pub(super) async fn frame(
    State(app): State<Arc<App>>,
    UrlPath((camera, class, file)): UrlPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    let bytes = on_camera(&app, &camera, move |datasets, camera| {
        let listing = datasets.list(camera).map_err(internal)?;
        let path = resolve(
            &datasets.camera_dir(camera),
            &listing,
            &FrameRef { class, file },
        )?;
        std::fs::read(path).map_err(internal)
    })
    .await?;
    let content_type = if bytes.starts_with(b"\x89PNG") {
        "image/png"
    } else {
        "image/jpeg"
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        bytes,
    )
        .into_response())
}

/// `POST /api/datasets/{camera}/classes` `{"name": ...}`: a new, empty class folder.
pub(super) async fn create_class(
    State(app): State<Arc<App>>,
    UrlPath(camera): UrlPath<String>,
    Json(request): Json<NewClass>,
) -> Result<Response, ApiError> {
    let name = request.name;
    check_class_name(&name).map_err(|why| ApiError(StatusCode::BAD_REQUEST, why))?;
    on_camera(&app, &camera, move |datasets, camera| {
        let folder = datasets.camera_dir(camera).join(&name);
        match std::fs::create_dir_all(folder.parent().unwrap_or(&folder))
            .and_then(|()| std::fs::create_dir(&folder))
        {
            Ok(()) => Ok(StatusCode::CREATED.into_response()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(ApiError(
                StatusCode::CONFLICT,
                format!("class {name:?} exists"),
            )),
            Err(e) => Err(internal(e)),
        }
    })
    .await
}

/// Whether `name` can be a class folder: a usable label, not hidden, not `unlabelled`.
fn check_class_name(name: &str) -> Result<(), String> {
    crate::dataset::check_label(name)?;
    if name.starts_with('.') {
        return Err("a class name cannot start with '.'".into());
    }
    if name.eq_ignore_ascii_case(UNLABELLED) {
        return Err(format!("{UNLABELLED:?} holds the frames not labelled yet"));
    }
    Ok(())
}

/// `DELETE /api/datasets/{camera}/classes/{class}`: the class folder goes; its frames go back
/// to `unlabelled` (nothing labelled is lost by a slip of the finger).
pub(super) async fn delete_class(
    State(app): State<Arc<App>>,
    UrlPath((camera, class)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    on_camera(&app, &camera, move |datasets, camera| {
        let listing = datasets.list(camera).map_err(internal)?;
        let Some(found) = listing
            .iter()
            .find(|c| c.name == class && c.name != UNLABELLED)
        else {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no class {class:?}"),
            ));
        };
        let dir = datasets.camera_dir(camera);
        let frames: Vec<_> = found
            .frames
            .iter()
            .map(|file| FrameRef {
                class: found.name.clone(),
                file: file.clone(),
            })
            .collect();
        move_frames(&dir, &listing, &frames, UNLABELLED)?;
        std::fs::remove_dir(dir.join(&found.name)).map_err(internal)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// `POST /api/datasets/{camera}/assign` `{"frames": [{"class", "file"}...], "to": class}`:
/// moves the frames into the class folder. Every frame is checked before any moves.
pub(super) async fn assign(
    State(app): State<Arc<App>>,
    UrlPath(camera): UrlPath<String>,
    Json(request): Json<Assign>,
) -> Result<Response, ApiError> {
    on_camera(&app, &camera, move |datasets, camera| {
        let listing = datasets.list(camera).map_err(internal)?;
        let Some(to) = listing.iter().find(|c| c.name == request.to) else {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no class {:?} (create it first)", request.to),
            ));
        };
        let moved = move_frames(
            &datasets.camera_dir(camera),
            &listing,
            &request.frames,
            &to.name,
        )?;
        Ok(Json(serde_json::json!({ "moved": moved })).into_response())
    })
    .await
}

/// Moves `frames` (all checked first) into the listed class `to`; returns how many moved.
/// A frame already in `to` stays; a name taken there is refused (nothing is overwritten).
fn move_frames(
    dir: &Path,
    listing: &[ClassFrames],
    frames: &[FrameRef],
    to: &str,
) -> Result<usize, ApiError> {
    let sources = frames
        .iter()
        .map(|f| resolve(dir, listing, f))
        .collect::<Result<Vec<_>, _>>()?;
    let target = dir.join(to);
    std::fs::create_dir_all(&target).map_err(internal)?;
    let mut moved = 0;
    for (frame, source) in frames.iter().zip(sources) {
        if frame.class == to {
            continue;
        }
        let destination = target.join(&frame.file);
        if destination.exists() {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "{to}/{} exists; {moved} frame(s) moved before it",
                    frame.file
                ),
            ));
        }
        std::fs::rename(&source, &destination).map_err(internal)?;
        moved += 1;
    }
    Ok(moved)
}

/// `POST /api/datasets/{camera}/delete` `{"frames": [...]}`: deletes the frames' files (all
/// checked first).
pub(super) async fn delete_frames(
    State(app): State<Arc<App>>,
    UrlPath(camera): UrlPath<String>,
    Json(request): Json<Delete>,
) -> Result<Response, ApiError> {
    on_camera(&app, &camera, move |datasets, camera| {
        let dir = datasets.camera_dir(camera);
        let listing = datasets.list(camera).map_err(internal)?;
        let paths = request
            .frames
            .iter()
            .map(|f| resolve(&dir, &listing, f))
            .collect::<Result<Vec<_>, _>>()?;
        for path in &paths {
            std::fs::remove_file(path).map_err(internal)?;
        }
        Ok(Json(serde_json::json!({ "deleted": paths.len() })).into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_are_labels_and_never_paths() {
        for good in ["open", "car in", "Tür-offen"] {
            assert_eq!(check_class_name(good), Ok(()), "{good}");
        }
        for bad in [
            "..",
            ".",
            ".hidden",
            "a/b",
            "../x",
            "unlabelled",
            "Unlabelled",
            "",
        ] {
            assert!(check_class_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn frames_resolve_only_to_listed_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let datasets = Datasets::new(dir.path());
        let camera = datasets.camera_dir("door");
        std::fs::create_dir_all(camera.join(UNLABELLED)).expect("mkdir");
        std::fs::create_dir_all(camera.join("open")).expect("mkdir");
        std::fs::write(camera.join(UNLABELLED).join("a.jpg"), b"x").expect("write");
        std::fs::write(camera.join(UNLABELLED).join(".tmp-b.jpg"), b"x").expect("write");
        std::fs::write(dir.path().join("secret"), b"x").expect("write");
        let listing = datasets.list("door").expect("list");
        let names: Vec<_> = listing.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, [UNLABELLED, "open"]);
        assert_eq!(listing[0].frames, ["a.jpg"]);
        let frame = |class: &str, file: &str| FrameRef {
            class: class.into(),
            file: file.into(),
        };
        assert!(resolve(&camera, &listing, &frame(UNLABELLED, "a.jpg")).is_ok());
        for (class, file) in [
            (UNLABELLED, ".tmp-b.jpg"),
            (UNLABELLED, "../../secret"),
            ("..", "secret"),
            ("open", "a.jpg"),
        ] {
            let err = resolve(&camera, &listing, &frame(class, file)).expect_err(file);
            assert_eq!(err.0, StatusCode::NOT_FOUND);
        }
        let moved =
            move_frames(&camera, &listing, &[frame(UNLABELLED, "a.jpg")], "open").expect("moved");
        assert_eq!(moved, 1);
        assert!(camera.join("open/a.jpg").is_file());
    }
}
