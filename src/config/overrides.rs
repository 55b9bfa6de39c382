//! The overrides file: settings the daemon itself changed (the web page's thresholds), kept in
//! `<data dir>/overrides.toml` so the user's config file stays the user's.
//!
//! It is a TOML file with the config file's layout, merged over the config file when the
//! configuration is loaded ([`Config::load`](super::Config::load), at start, on SIGHUP and by
//! `check-config`), before the `EDGECLASS__...` environment overrides:
//!
//! - tables merge key by key (`[postprocess.thresholds] cat = 0.7` changes only `cat`);
//! - scalars and arrays replace the config file's value;
//! - the arrays of named tables merge element by element, matched by their name key:
//!   `[[cameras]]` by `id`, `[[heads]]` by `name`; an element with a new name is appended.
//!
//! A key the overrides file set is named with the file in errors ("key `postprocess.threshold`
//! (from overrides file /var/lib/edgeclass/overrides.toml)"); a daemon starting with a bad
//! overrides file exits with 78, and a reload keeps the previous settings.
//!
//! Writers use [`set`] or [`set_all`]: read the file, change keys, write a temporary file
//! next to it and rename it into place, so a reader never sees half a file and a crash loses
//! nothing. Other keys are kept (comments are not: the file is edgeclass's).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::tree::Node;

/// The overrides file's name in the data directory.
pub const FILE_NAME: &str = "overrides.toml";

/// The top-level arrays of named tables, and the key naming their elements.
const NAMED_ARRAYS: [(&str, &str); 2] = [("cameras", "id"), ("heads", "name")];

/// Serializes writers in this process, so two changes at once both land.
static WRITING: Mutex<()> = Mutex::new(());

/// `<data dir>/overrides.toml`: the data directory is `$STATE_DIRECTORY` under systemd (see
/// [`crate::model::fetch::data_dir`]).
pub fn path() -> PathBuf {
    crate::model::fetch::data_dir().join(FILE_NAME)
}

/// What can go wrong reading or writing the overrides file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum OverridesError {
    /// The file exists but cannot be read, or cannot be written.
    #[error("overrides file {}: {action}", file.display())]
    Io {
        /// The overrides file.
        file: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML (the message has the line and column); it is left as it is.
    #[error("overrides file {}: {message}", file.display())]
    Syntax {
        /// The overrides file.
        file: PathBuf,
        /// The TOML parser's description.
        message: String,
    },
    /// A key cannot be set: a value that is not a table is in the way, or a path is empty.
    #[error("overrides file {}: cannot set `{key}`: {message}", file.display())]
    Key {
        /// The overrides file.
        file: PathBuf,
        /// The key, dotted.
        key: String,
        /// What is in the way.
        message: String,
    },
}

/// Reads `file`: `None` when it does not exist.
pub fn read(file: &Path) -> Result<Option<toml::Table>, OverridesError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(OverridesError::Io {
                file: file.to_path_buf(),
                action: "cannot read",
                source,
            })
        }
    };
    text.parse()
        .map(Some)
        .map_err(|e: toml::de::Error| OverridesError::Syntax {
            file: file.to_path_buf(),
            message: e.to_string(),
        })
}

/// Sets one key of `file` (created with its folder if missing) to `value` and writes the file
/// atomically, keeping its other keys. `key` is the key's path: table names, then the key,
/// e.g. `["postprocess", "thresholds", "cat"]`; after `cameras` or `heads` comes the element's
/// `id` or `name` (`["cameras", "door", "heads"]`), and an element not in the file yet is
/// added with it.
pub fn set(file: &Path, key: &[&str], value: toml::Value) -> Result<Undo, OverridesError> {
    set_all(file, [(key, value)])
}

/// [`set`] for several keys in one write: all of them change, or none.
pub fn set_all<'k>(
    file: &Path,
    changes: impl IntoIterator<Item = (&'k [&'k str], toml::Value)>,
) -> Result<Undo, OverridesError> {
    let _writing = WRITING.lock().unwrap_or_else(PoisonError::into_inner);
    let previous = match std::fs::read_to_string(file) {
        Ok(text) => Some(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(OverridesError::Io {
                file: file.to_path_buf(),
                action: "cannot read",
                source,
            })
        }
    };
    // A file that does not parse is not overwritten: it may hold what someone wrote by hand.
    let mut table: toml::Table = match &previous {
        Some(text) => text
            .parse()
            .map_err(|e: toml::de::Error| OverridesError::Syntax {
                file: file.to_path_buf(),
                message: e.to_string(),
            })?,
        None => toml::Table::new(),
    };
    for (key, value) in changes {
        set_in(&mut table, key, value).map_err(|message| OverridesError::Key {
            file: file.to_path_buf(),
            key: key.join("."),
            message,
        })?;
    }
    write_atomically(file, &table.to_string())?;
    Ok(Undo {
        file: file.to_path_buf(),
        previous,
    })
}

/// What [`set_all`] replaced, to put it back when the change turned out unusable (the
/// configuration with it does not load); dropping it keeps the change.
#[derive(Debug)]
pub struct Undo {
    file: PathBuf,
    /// The file's text before the change; `None`: there was no file.
    previous: Option<String>,
}

impl Undo {
    /// Puts the file back as it was before the change (removes it if there was none).
    pub fn undo(self) -> Result<(), OverridesError> {
        let _writing = WRITING.lock().unwrap_or_else(PoisonError::into_inner);
        match &self.previous {
            Some(text) => write_atomically(&self.file, text),
            None => match std::fs::remove_file(&self.file) {
                Ok(()) => Ok(()),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(OverridesError::Io {
                    file: self.file.clone(),
                    action: "cannot remove",
                    source,
                }),
            },
        }
    }
}

/// Sets `key` in `table`; `Err` says what is in the way.
fn set_in(table: &mut toml::Table, key: &[&str], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = key.split_last() else {
        return Err("the key path is empty".into());
    };
    let mut table = table;
    let mut rest = parents;
    let mut at_root = true;
    while let Some((&segment, after)) = rest.split_first() {
        let named = NAMED_ARRAYS
            .iter()
            .find(|(array, _)| at_root && *array == segment);
        table = match named {
            Some(&(array, name_key)) => {
                let Some((&name, after_name)) = after.split_first() else {
                    return Err(format!(
                        "`{array}` is an array of tables: give the element's {name_key} and then \
                         the key"
                    ));
                };
                rest = after_name;
                named_element(table, array, name_key, name)?
            }
            None => {
                rest = after;
                table
                    .entry(segment)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .ok_or_else(|| format!("`{segment}` is not a table"))?
            }
        };
        at_root = false;
    }
    table.insert((*last).to_string(), value);
    Ok(())
}

/// The element of `table[array]` whose `name_key` is `name`, appended if there is none.
fn named_element<'t>(
    table: &'t mut toml::Table,
    array: &str,
    name_key: &str,
    name: &str,
) -> Result<&'t mut toml::Table, String> {
    let elements = table
        .entry(array)
        .or_insert_with(|| toml::Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| format!("`{array}` is not an array of tables"))?;
    let position = elements
        .iter()
        .position(|e| e.get(name_key).and_then(toml::Value::as_str) == Some(name));
    let index = match position {
        Some(index) => index,
        None => {
            let mut element = toml::Table::new();
            element.insert(name_key.to_string(), toml::Value::String(name.to_string()));
            elements.push(toml::Value::Table(element));
            elements.len() - 1
        }
    };
    elements[index]
        .as_table_mut()
        .ok_or_else(|| format!("`{array}[{index}]` is not a table"))
}

/// Writes `text` to a temporary file in `file`'s folder (created if missing), syncs it and
/// renames it onto `file`.
fn write_atomically(file: &Path, text: &str) -> Result<(), OverridesError> {
    let io = |action| {
        move |source| OverridesError::Io {
            file: file.to_path_buf(),
            action,
            source,
        }
    };
    let dir = file
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("cannot create its folder"))?;
    let mut temporary = tempfile::Builder::new()
        .prefix(".overrides-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io("cannot create a temporary file next to it"))?;
    temporary
        .write_all(text.as_bytes())
        .and_then(|()| temporary.as_file().sync_all())
        .map_err(io("cannot write"))?;
    temporary
        .persist(file)
        .map_err(|e| io("cannot rename the temporary file onto it")(e.error))?;
    Ok(())
}

/// Merges `overrides` over the config tree `root` (rules in the module docs); returns the key
/// paths it set (`postprocess.thresholds.cat`, `cameras[0].heads`, `cameras[2]` for an
/// appended element), or the key and problem of an element without its name.
pub(super) fn merge(
    root: &mut Node,
    overrides: toml::Table,
) -> Result<Vec<String>, (String, String)> {
    let mut set = Vec::new();
    let Node::Table(base) = root else {
        return Ok(set);
    };
    for (key, value) in overrides {
        match NAMED_ARRAYS.iter().find(|(array, _)| *array == key) {
            Some(&(array, name_key)) => merge_named(base, array, name_key, value, &mut set)?,
            None => merge_key(base, key.clone(), key, value, &mut set),
        }
    }
    Ok(set)
}

/// Tables merge key by key; anything else replaces.
fn merge_key(
    table: &mut BTreeMap<String, Node>,
    key: String,
    path: String,
    value: toml::Value,
    set: &mut Vec<String>,
) {
    match (table.get_mut(&key), value) {
        (Some(Node::Table(base)), toml::Value::Table(entries)) => {
            for (child, value) in entries {
                let child_path = format!("{path}.{child}");
                merge_key(base, child, child_path, value, set);
            }
        }
        (_, value) => {
            table.insert(key, Node::from(value));
            set.push(path);
        }
    }
}

/// Merges the elements of an array of named tables into the config's, by name.
fn merge_named(
    base: &mut BTreeMap<String, Node>,
    array: &str,
    name_key: &str,
    value: toml::Value,
    set: &mut Vec<String>,
) -> Result<(), (String, String)> {
    let toml::Value::Array(elements) = value else {
        return Err((
            array.to_string(),
            format!("expected an array of tables ([[{array}]]), each with its {name_key}"),
        ));
    };
    let existing = base
        .entry(array.to_string())
        .or_insert_with(|| Node::Array(Vec::new()));
    let Node::Array(existing) = existing else {
        // The config file's own mistake; its error is reported when it is deserialized.
        return Ok(());
    };
    for (index, element) in elements.into_iter().enumerate() {
        let name = element.get(name_key).and_then(toml::Value::as_str);
        let (Some(name), toml::Value::Table(entries)) = (name.map(str::to_string), element) else {
            return Err((
                format!("{array}[{index}].{name_key}"),
                format!("each [[{array}]] element needs its {name_key} (a string) to be merged"),
            ));
        };
        let position = existing.iter().position(|node| match node {
            Node::Table(table) => table.get(name_key) == Some(&Node::String(name.clone())),
            _ => false,
        });
        match position {
            Some(at) => {
                let Node::Table(table) = &mut existing[at] else {
                    continue;
                };
                // The name matched; it is not a change.
                for (key, value) in entries.into_iter().filter(|(key, _)| key != name_key) {
                    let path = format!("{array}[{at}].{key}");
                    merge_key(table, key, path, value, set);
                }
            }
            None => {
                set.push(format!("{array}[{}]", existing.len()));
                existing.push(Node::from(toml::Value::Table(entries)));
            }
        }
    }
    Ok(())
}

/// Whether `key` (an error's key path, map keys possibly quoted) is one of the paths `set`
/// or lies below one.
pub(super) fn covers(set: &[String], key: &str) -> bool {
    let key = key.replace('"', "");
    set.iter().any(|path| {
        key == *path
            || key
                .strip_prefix(path.as_str())
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn set_keeps_other_keys_and_adds_named_elements() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state/overrides.toml");
        set(&file, &["postprocess", "thresholds", "cat"], 0.7.into()).unwrap();
        set(&file, &["postprocess", "threshold"], 0.5.into()).unwrap();
        let heads = toml::Value::Array(vec!["door".into()]);
        set(&file, &["cameras", "porch", "heads"], heads).unwrap();
        set(&file, &["cameras", "porch", "interval_ms"], 100.into()).unwrap();
        let written = read(&file).unwrap().unwrap();
        assert_eq!(
            written,
            table(
                "[postprocess]\nthreshold = 0.5\n[postprocess.thresholds]\ncat = 0.7\n\
                 [[cameras]]\nid = \"porch\"\nheads = [\"door\"]\ninterval_ms = 100\n"
            )
        );
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
    }

    #[test]
    fn undo_puts_the_previous_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FILE_NAME);
        let undo = set(&file, &["log", "level"], "debug".into()).unwrap();
        undo.undo().unwrap();
        assert!(!file.exists());
        std::fs::write(&file, "[log]\nlevel = \"warn\"\n").unwrap();
        let undo = set(&file, &["log", "level"], "debug".into()).unwrap();
        assert_eq!(
            read(&file).unwrap().unwrap()["log"]["level"].as_str(),
            Some("debug")
        );
        undo.undo().unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "[log]\nlevel = \"warn\"\n"
        );
    }

    #[test]
    fn a_corrupt_file_or_a_value_in_the_way_is_named_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FILE_NAME);
        std::fs::write(&file, "[postprocess\n").unwrap();
        let error = set(&file, &["postprocess", "threshold"], 0.5.into()).unwrap_err();
        assert!(matches!(error, OverridesError::Syntax { .. }), "{error}");
        assert!(error.to_string().contains(&file.display().to_string()));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "[postprocess\n");
        assert!(matches!(read(&file), Err(OverridesError::Syntax { .. })));

        std::fs::write(&file, "postprocess = 3\n").unwrap();
        let error = set(&file, &["postprocess", "threshold"], 0.5.into()).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("`postprocess.threshold`")
                && text.contains("`postprocess` is not a table"),
            "{text}"
        );
        let error = set(&file, &["cameras", "door"], 1.into()).unwrap_err();
        assert!(
            error.to_string().contains("give the element's id"),
            "{error}"
        );
        assert!(set(&file, &[], 1.into()).is_err());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "postprocess = 3\n");
        assert!(read(&dir.path().join("none.toml")).unwrap().is_none());
    }

    fn node(text: &str) -> Node {
        Node::from(toml::Value::Table(table(text)))
    }

    #[test]
    fn tables_merge_by_key_values_replace_named_elements_merge_by_name() {
        let mut root = node(
            "[postprocess]\nthreshold = 0.6\ntop_k = 3\n[postprocess.thresholds]\ndog = 0.4\n\
             [[cameras]]\nid = \"door\"\nsource = \"file:/a\"\nheads = [\"x\", \"y\"]\n\
             [[cameras]]\nid = \"yard\"\nsource = \"file:/b\"\n\
             [[heads]]\nname = \"x\"\nweights = \"/x.gguf\"\n",
        );
        let set = merge(
            &mut root,
            table(
                "[postprocess]\nthreshold = 0.5\n[postprocess.thresholds]\ncat = 0.7\n\
                 [[cameras]]\nid = \"yard\"\nheads = [\"x\"]\n\
                 [[cameras]]\nid = \"gate\"\nsource = \"file:/c\"\n\
                 [[heads]]\nname = \"x\"\nweights = [\"/x1.gguf\", \"/x2.gguf\"]\n",
            ),
        )
        .unwrap();
        let expected = node(
            "[postprocess]\nthreshold = 0.5\ntop_k = 3\n[postprocess.thresholds]\ndog = 0.4\ncat = 0.7\n\
             [[cameras]]\nid = \"door\"\nsource = \"file:/a\"\nheads = [\"x\", \"y\"]\n\
             [[cameras]]\nid = \"yard\"\nsource = \"file:/b\"\nheads = [\"x\"]\n\
             [[cameras]]\nid = \"gate\"\nsource = \"file:/c\"\n\
             [[heads]]\nname = \"x\"\nweights = [\"/x1.gguf\", \"/x2.gguf\"]\n",
        );
        assert_eq!(root, expected);
        assert_eq!(
            set,
            [
                "cameras[1].heads",
                "cameras[2]",
                "heads[0].weights",
                "postprocess.threshold",
                "postprocess.thresholds.cat",
            ]
        );
        assert!(covers(&set, "postprocess.thresholds.\"cat\""));
        assert!(covers(&set, "cameras[2].source"));
        assert!(covers(&set, "cameras[1].heads[0]"));
        assert!(!covers(&set, "cameras[1].id"));
        assert!(!covers(&set, "postprocess.thresholds.\"dog\""));
        assert!(!covers(&set, "cameras[20]"));
    }

    #[test]
    fn named_elements_without_their_name_are_refused_with_the_key() {
        for (text, key) in [
            ("[[cameras]]\nsource = \"file:/c\"\n", "cameras[0].id"),
            ("[[heads]]\nname = 3\n", "heads[0].name"),
            ("cameras = [1]\n", "cameras[0].id"),
            ("cameras = 1\n", "cameras"),
        ] {
            let mut root = node("[[cameras]]\nid = \"door\"\nsource = \"file:/a\"\n");
            let (got, _) = merge(&mut root, table(text)).unwrap_err();
            assert_eq!(got, key, "{text}");
        }
    }
}
