//! The overrides file, `<data dir>/overrides.toml`: settings the web page changes, kept out of
//! the user's config file. Loading merges it over the config file's tree: tables key by key,
//! `[[heads]]` entries by `name` and `[[cameras]]` entries by `id` (a matching entry's keys are
//! replaced, an unmatched one is added), anything else replaced. [`update`] rewrites it
//! atomically.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::tree::Node;
use super::ConfigError;

/// The overrides file's name in the data directory.
pub const OVERRIDES_FILE: &str = "overrides.toml";

/// `<data dir>/overrides.toml`.
pub fn overrides_path() -> PathBuf {
    crate::model::fetch::data_dir().join(OVERRIDES_FILE)
}

/// Reads the overrides file, if there is one; an unreadable or malformed file is an error
/// naming it (the config file's values are never silently used instead).
fn read(file: &Path) -> Result<Option<toml::Table>, ConfigError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Read {
                file: file.to_path_buf(),
                source,
            })
        }
    };
    text.parse()
        .map(Some)
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            file: file.to_path_buf(),
            message: e.to_string(),
        })
}

/// Merges the overrides file `file` (when there is one) over `root`.
pub(super) fn apply(root: &mut Node, file: &Path) -> Result<(), ConfigError> {
    if let Some(table) = read(file)? {
        merge(root, Node::from(toml::Value::Table(table)), None);
    }
    Ok(())
}

/// Merges `over` into `base`; `key` is the key both sit at.
fn merge(base: &mut Node, over: Node, key: Option<&str>) {
    match (base, over) {
        (Node::Table(base), Node::Table(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value, Some(&key)),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (Node::Array(base), Node::Array(over)) if identity(key).is_some() => {
            let id = identity(key).unwrap_or_default();
            for entry in over {
                let matching = base
                    .iter_mut()
                    .find(|b| id_of(b, id).is_some() && id_of(b, id) == id_of(&entry, id));
                match matching {
                    Some(existing) => merge(existing, entry, None),
                    None => base.push(entry),
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// The key that identifies an entry of the array at `key`.
fn identity(key: Option<&str>) -> Option<&'static str> {
    match key {
        Some("heads") => Some("name"),
        Some("cameras") => Some("id"),
        _ => None,
    }
}

fn id_of<'a>(entry: &'a Node, id: &str) -> Option<&'a str> {
    match entry {
        Node::Table(table) => match table.get(id) {
            Some(Node::String(value)) => Some(value),
            _ => None,
        },
        _ => None,
    }
}

/// Changes the overrides file `file` with `change` and writes it atomically (a temporary file
/// beside it, renamed over it); a missing file starts empty.
pub fn update(file: &Path, change: impl FnOnce(&mut toml::Table)) -> anyhow::Result<()> {
    let mut table = read(file)?.unwrap_or_default();
    change(&mut table);
    let dir = file.parent().context("the overrides file has a folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let temporary = dir.join(format!(".{OVERRIDES_FILE}.tmp"));
    let text = format!(
        "# Written by edgeclass (the web page); merged over the config file.\n{}",
        toml::to_string(&table)?
    );
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, file)
        .with_context(|| format!("renaming {} to {}", temporary.display(), file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> Node {
        Node::from(toml::Value::Table(text.parse().expect("toml")))
    }

    #[test]
    fn heads_merge_by_name_cameras_by_id_tables_by_key() {
        let mut base = tree(
            "[mqtt]\nurl = \"a\"\nclient_id = \"x\"\n\
             [[cameras]]\nid = \"door\"\nsource = \"s\"\n[[cameras]]\nid = \"yard\"\nsource = \"t\"\n\
             [[heads]]\nname = \"h1\"\nweights = \"1.gguf\"\n",
        );
        let over = tree(
            "[mqtt]\nurl = \"b\"\n\
             [[cameras]]\nid = \"yard\"\nheads = [\"h2\"]\n\
             [[heads]]\nname = \"h2\"\nweights = \"2.gguf\"\n\
             [[heads]]\nname = \"h1\"\nweights = \"1b.gguf\"\n",
        );
        merge(&mut base, over, None);
        let expected = tree(
            "[mqtt]\nurl = \"b\"\nclient_id = \"x\"\n\
             [[cameras]]\nid = \"door\"\nsource = \"s\"\n\
             [[cameras]]\nid = \"yard\"\nsource = \"t\"\nheads = [\"h2\"]\n\
             [[heads]]\nname = \"h1\"\nweights = \"1b.gguf\"\n\
             [[heads]]\nname = \"h2\"\nweights = \"2.gguf\"\n",
        );
        assert_eq!(base, expected);
    }

    #[test]
    fn updates_are_written_whole_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("state").join(OVERRIDES_FILE);
        update(&file, |t| {
            t.insert("a".into(), toml::Value::Integer(1));
        })
        .expect("first");
        update(&file, |t| {
            t.insert("b".into(), toml::Value::Integer(2));
        })
        .expect("second");
        let table = read(&file).expect("read").expect("exists");
        assert_eq!(table.get("a"), Some(&toml::Value::Integer(1)));
        assert_eq!(table.get("b"), Some(&toml::Value::Integer(2)));
        std::fs::write(&file, "a = [").expect("corrupt");
        let err = read(&file).expect_err("malformed");
        assert!(err.to_string().contains(OVERRIDES_FILE), "{err}");
    }
}
