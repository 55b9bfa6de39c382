//! A labelled image set on disk: one sub-folder per class, named by the class's WordNet id
//! (`n02123045/`) or English name (`tabby/`), holding that class's pictures.

use std::path::{Path, PathBuf};

use super::LabelledClass;
use crate::postprocess::labels::{class_by_key, imagenet};
use crate::sysexits::Sysexit;

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
            Self::UnknownClass { .. } | Self::DuplicateClass { .. } => Sysexit::DataErr,
        }
    }
}

/// The class sub-folders of `data`, sorted by name, each resolved to an ImageNet class. Files
/// beside them are ignored; a folder naming no class, or a class named twice, is an error.
pub fn class_folders(data: &Path) -> Result<Vec<(LabelledClass, PathBuf)>, DatasetError> {
    let mut folders: Vec<PathBuf> = entries(data)?.into_iter().filter(|p| p.is_dir()).collect();
    folders.sort();
    let classes = imagenet();
    let mut resolved: Vec<(LabelledClass, PathBuf)> = Vec::new();
    for folder in folders {
        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let index = class_by_key(&name).map_err(|why| DatasetError::UnknownClass {
            folder: folder.clone(),
            name: name.clone(),
            why,
        })?;
        if let Some((_, first)) = resolved.iter().find(|(c, _)| c.index == index) {
            return Err(DatasetError::DuplicateClass {
                first: first.clone(),
                second: folder,
                index,
                name: classes[index].name.clone(),
            });
        }
        resolved.push((
            LabelledClass {
                index,
                key: classes[index].wnid.clone(),
                name: classes[index].name.clone(),
            },
            folder,
        ));
    }
    if resolved.is_empty() {
        return Err(DatasetError::NoClasses {
            path: data.to_path_buf(),
        });
    }
    Ok(resolved)
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
