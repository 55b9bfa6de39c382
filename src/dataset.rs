//! A labelled image set on disk, the ImageFolder convention: one sub-folder per class holding
//! that class's pictures (`DATA/<class>/*.jpg|png`).
//!
//! `edgeclass eval` names ImageNet classes by WordNet id (`n02123045/`) or English name
//! (`tabby/`), or a trained head's classes by name; `edgeclass train` takes the folder names
//! as the new class names, which must then be usable as MQTT and Home Assistant labels.

use std::path::{Path, PathBuf};

use crate::evaluate::LabelledClass;
use crate::postprocess::labels::{class_by_key, imagenet};
use crate::sysexits::Sysexit;

/// Fewest pictures a class needs before training starts: fewer leaves nothing to validate on.
pub const MIN_TRAINING_IMAGES: usize = 5;

/// Why a labelled folder cannot be used; every variant names the folder.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The folder or one of its class folders cannot be listed.
    #[error("cannot list {}", path.display())]
    Unreadable {
        /// The folder.
        path: PathBuf,
        /// Why listing failed.
        #[source]
        source: std::io::Error,
    },
    /// A class folder's name is neither a WordNet id nor an English name of a class.
    #[error("class folder {}: {name:?} names no ImageNet-1k class: {why}", folder.display())]
    UnknownClass {
        /// The class folder.
        folder: PathBuf,
        /// Its name.
        name: String,
        /// What the label table said.
        why: String,
    },
    /// Two class folders name the same class.
    #[error("class folders {} and {} both name class {index} ({name})", first.display(), second.display())]
    DuplicateClass {
        /// The folder seen first (name order).
        first: PathBuf,
        /// The folder seen second.
        second: PathBuf,
        /// The class index both name.
        index: usize,
        /// The class's English name.
        name: String,
    },
    /// A class folder's name cannot be a published label.
    #[error("class folder {}: {name:?} cannot be a label: {why}", folder.display())]
    BadClassName {
        /// The class folder.
        folder: PathBuf,
        /// Its name.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// Training needs at least two classes.
    #[error(
        "{} has {found} class folder(s); training needs at least 2 (e.g. open/ and closed/)",
        path.display()
    )]
    TooFewClasses {
        /// The folder.
        path: PathBuf,
        /// Class folders found.
        found: usize,
    },
    /// A class has too few pictures to train on.
    #[error(
        "class folder {} has {found} picture(s); training needs at least {MIN_TRAINING_IMAGES} per class",
        folder.display()
    )]
    TooFewImages {
        /// The class folder.
        folder: PathBuf,
        /// Pictures found.
        found: usize,
    },
    /// The folder has no class sub-folders at all.
    #[error(
        "{} has no class folders (expected one folder per class, e.g. n02123045/ or tabby/)",
        path.display()
    )]
    NoClasses {
        /// The folder.
        path: PathBuf,
    },
}

impl DatasetError {
    /// The kind of failure, for the process exit status.
    pub fn sysexit(&self) -> Sysexit {
        match self {
            Self::Unreadable { .. } | Self::NoClasses { .. } => Sysexit::NoInput,
            Self::UnknownClass { .. }
            | Self::DuplicateClass { .. }
            | Self::BadClassName { .. }
            | Self::TooFewClasses { .. }
            | Self::TooFewImages { .. } => Sysexit::DataErr,
        }
    }
}

/// The class sub-folders of `data` and their names, sorted by name. Files beside them are
/// ignored; no class folder at all is an error.
pub fn class_folders(data: &Path) -> Result<Vec<(String, PathBuf)>, DatasetError> {
    let mut folders: Vec<PathBuf> = entries(data)?.into_iter().filter(|p| p.is_dir()).collect();
    folders.sort();
    if folders.is_empty() {
        return Err(DatasetError::NoClasses {
            path: data.to_path_buf(),
        });
    }
    Ok(folders
        .into_iter()
        .map(|folder| {
            let name = folder
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, folder)
        })
        .collect())
}

/// The class sub-folders of `data`, each resolved to an ImageNet class. A folder naming no
/// class, or a class named twice, is an error.
pub fn imagenet_class_folders(data: &Path) -> Result<Vec<(LabelledClass, PathBuf)>, DatasetError> {
    let classes = imagenet();
    resolve(data, |name| {
        let index = class_by_key(name)?;
        Ok(LabelledClass {
            index,
            key: classes[index].wnid.clone(),
            name: classes[index].name.clone(),
        })
    })
}

/// The class sub-folders of `data`, each resolved to one of `names` (a trained head's
/// classes, output order). A folder naming none of them, or one named twice, is an error.
pub fn named_class_folders(
    data: &Path,
    names: &[String],
) -> Result<Vec<(LabelledClass, PathBuf)>, DatasetError> {
    resolve(data, |name| {
        let index = names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| format!("the model's classes are {}", names.join(", ")))?;
        Ok(LabelledClass {
            index,
            key: name.to_string(),
            name: name.to_string(),
        })
    })
}

fn resolve(
    data: &Path,
    class_of: impl Fn(&str) -> Result<LabelledClass, String>,
) -> Result<Vec<(LabelledClass, PathBuf)>, DatasetError> {
    let mut resolved: Vec<(LabelledClass, PathBuf)> = Vec::new();
    for (name, folder) in class_folders(data)? {
        let class = class_of(&name).map_err(|why| DatasetError::UnknownClass {
            folder: folder.clone(),
            name: name.clone(),
            why,
        })?;
        if let Some((_, first)) = resolved.iter().find(|(c, _)| c.index == class.index) {
            return Err(DatasetError::DuplicateClass {
                first: first.clone(),
                second: folder,
                index: class.index,
                name: class.name,
            });
        }
        resolved.push((class, folder));
    }
    Ok(resolved)
}

/// A class to train: its name (the folder's) and its pictures, sorted.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingClass {
    /// The class name, published as the label.
    pub name: String,
    /// The class folder.
    pub folder: PathBuf,
    /// Its pictures (every non-hidden file; unreadable ones are skipped when decoding).
    pub images: Vec<PathBuf>,
}

/// The classes of a training folder, checked before any work: at least two, each named like a
/// usable label and holding at least [`MIN_TRAINING_IMAGES`] files.
pub fn training_classes(data: &Path) -> Result<Vec<TrainingClass>, DatasetError> {
    training_classes_except(data, None)
}

/// [`training_classes`], leaving out the class folder named `skip` (a camera's
/// `unlabelled/` frames beside its class folders).
pub fn training_classes_except(
    data: &Path,
    skip: Option<&str>,
) -> Result<Vec<TrainingClass>, DatasetError> {
    let mut folders = class_folders(data)?;
    folders.retain(|(name, _)| Some(name.as_str()) != skip);
    if folders.len() < 2 {
        return Err(DatasetError::TooFewClasses {
            path: data.to_path_buf(),
            found: folders.len(),
        });
    }
    let mut classes = Vec::with_capacity(folders.len());
    for (name, folder) in folders {
        if let Err(why) = check_label(&name) {
            return Err(DatasetError::BadClassName { folder, name, why });
        }
        let images = images_in(&folder)?;
        if images.len() < MIN_TRAINING_IMAGES {
            return Err(DatasetError::TooFewImages {
                found: images.len(),
                folder,
            });
        }
        classes.push(TrainingClass {
            name,
            folder,
            images,
        });
    }
    Ok(classes)
}

/// Whether `name` can be published as a label: an MQTT payload and a Home Assistant sensor
/// option that automations can type. Letters, digits, `_`, `-`, `.` and inner spaces, at most
/// 64 characters, and not one of Home Assistant's own state words (`unknown`, `unavailable`,
/// `None`, see [`crate::postprocess::label_problem`]).
pub fn check_label(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > 64 {
        return Err("a label has 1 to 64 characters".into());
    }
    if name.trim() != name {
        return Err("a label cannot start or end with a space".into());
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ')))
    {
        return Err(format!(
            "{c:?} is not allowed (use letters, digits, '_', '-', '.' or spaces)"
        ));
    }
    match crate::postprocess::label_problem(name) {
        Some(problem) => Err(problem),
        None => Ok(()),
    }
}

/// The files in `folder`, sorted; hidden files are left out.
pub fn images_in(folder: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let mut files: Vec<PathBuf> = entries(folder)?
        .into_iter()
        .filter(|path| {
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            path.is_file() && !hidden
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Every entry of `folder`.
fn entries(folder: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let unreadable = |source| DatasetError::Unreadable {
        path: folder.to_path_buf(),
        source,
    };
    std::fs::read_dir(folder)
        .map_err(unreadable)?
        .map(|entry| entry.map(|e| e.path()).map_err(unreadable))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_must_be_typeable_and_not_home_assistant_state_words() {
        for good in ["open", "closed", "car_in", "Tür-offen", "state 2", "v1.5"] {
            assert_eq!(check_label(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "1 to 64"),
            (" open", "space"),
            ("a/b", "'/'"),
            ("a+b", "'+'"),
            ("#", "'#'"),
            ("Unknown", "Home Assistant"),
            ("unavailable", "Home Assistant"),
            ("None", "Home Assistant"),
        ] {
            let err = check_label(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(check_label(&"x".repeat(65)).is_err());
    }

    fn folder_with(classes: &[(&str, usize)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, count) in classes {
            let folder = dir.path().join(name);
            std::fs::create_dir(&folder).expect("mkdir");
            for i in 0..*count {
                std::fs::write(folder.join(format!("{i}.jpg")), b"x").expect("write");
            }
        }
        dir
    }

    #[test]
    fn training_needs_two_classes_of_five_pictures_with_usable_names() {
        let dir = folder_with(&[("closed", 5), ("open", 6)]);
        let classes = training_classes(dir.path()).expect("valid");
        let names: Vec<_> = classes
            .iter()
            .map(|c| (c.name.as_str(), c.images.len()))
            .collect();
        assert_eq!(names, [("closed", 5), ("open", 6)]);

        let one = folder_with(&[("open", 9)]);
        let err = training_classes(one.path()).expect_err("one class");
        assert!(
            matches!(err, DatasetError::TooFewClasses { found: 1, .. }),
            "{err}"
        );

        let few = folder_with(&[("closed", 5), ("open", 4)]);
        let err = training_classes(few.path()).expect_err("4 pictures");
        assert!(
            err.to_string().contains("open") && err.to_string().contains("has 4"),
            "{err}"
        );

        let bad = folder_with(&[("closed", 5), ("open+ajar", 5)]);
        let err = training_classes(bad.path()).expect_err("bad name");
        assert!(err.to_string().contains("open+ajar"), "{err}");
        assert_eq!(err.sysexit(), Sysexit::DataErr);
    }

    #[test]
    fn head_class_folders_resolve_by_name() {
        let dir = folder_with(&[("closed", 1), ("open", 1)]);
        let names = vec!["open".to_string(), "closed".to_string()];
        let resolved = named_class_folders(dir.path(), &names).expect("known names");
        let indices: Vec<_> = resolved
            .iter()
            .map(|(c, _)| (c.name.as_str(), c.index))
            .collect();
        assert_eq!(indices, [("closed", 1), ("open", 0)]);
        let err = named_class_folders(dir.path(), &names[..1]).expect_err("closed unknown");
        assert!(err.to_string().contains("closed"), "{err}");
    }
}
