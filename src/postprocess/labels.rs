//! The ImageNet-1k class table shipped in `configs/labels/imagenet1k.tsv`, class keys, and the
//! label map and groups files (formats in the [module docs](super)).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;
use toml::Spanned;

use super::{FileKind, PostprocessError};

/// One ImageNet-1k class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageNetClass {
    /// Model output index, 0..=999.
    pub index: usize,
    /// WordNet id, e.g. `n02123045`.
    pub wnid: String,
    /// English name (torchvision's), e.g. `tabby`.
    pub name: String,
    /// Every WordNet synonym, e.g. `tabby, tabby cat`.
    pub synonyms: String,
}

/// The 1000 classes in model output order.
pub fn imagenet() -> &'static [ImageNetClass] {
    static CLASSES: OnceLock<Vec<ImageNetClass>> = OnceLock::new();
    CLASSES.get_or_init(|| {
        // The file is compiled in and checked by tests, so a malformed line is a build defect.
        include_str!("../../configs/labels/imagenet1k.tsv")
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let mut fields = line.splitn(4, '\t');
                let mut next = || fields.next().unwrap_or_default().to_string();
                let index = next().parse().unwrap_or(usize::MAX);
                ImageNetClass {
                    index,
                    wnid: next(),
                    name: next(),
                    synonyms: next(),
                }
            })
            .collect()
    })
}

/// The class named by `key`: an index (`"281"`), a WordNet id (`"n02123045"`) or an English name
/// (`"tabby"`; exact first, then ASCII case-insensitive). `Err` says why nothing matched.
pub(crate) fn class_by_key(key: &str) -> Result<usize, String> {
    let classes = imagenet();
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        let index: usize = key
            .parse()
            .map_err(|_| "bad class index (expected a number 0..=999)".to_string())?;
        return if index < classes.len() {
            Ok(index)
        } else {
            Err(format!(
                "class index {index} out of range 0..={}",
                classes.len() - 1
            ))
        };
    }
    if is_wnid(key) {
        return classes
            .iter()
            .position(|c| c.wnid == key)
            .ok_or_else(|| format!("no ImageNet-1k class has WordNet id {key}"));
    }
    if let Some(index) = classes.iter().position(|c| c.name == key) {
        return Ok(index);
    }
    let mut folded = classes.iter().filter(|c| c.name.eq_ignore_ascii_case(key));
    match (folded.next(), folded.next()) {
        (Some(only), None) => Ok(only.index),
        (Some(a), Some(b)) => Err(format!(
            "ambiguous English name: {:?} ({}) and {:?} ({}); write it exactly or use the index",
            a.name, a.index, b.name, b.index
        )),
        _ => Err("no ImageNet-1k class has this index, WordNet id or English name".to_string()),
    }
}

/// `n` followed by eight digits.
fn is_wnid(key: &str) -> bool {
    key.len() == 9 && key.starts_with('n') && key[1..].bytes().all(|b| b.is_ascii_digit())
}

/// Like [`class_by_key`], plus inclusive index ranges `"151-268"`.
fn classes_by_member_key(key: &str) -> Result<RangeInclusive<usize>, String> {
    match key.split_once('-') {
        Some((first, last)) if key.starts_with(|c: char| c.is_ascii_digit()) => {
            let max = imagenet().len() - 1;
            let bad = || format!("bad index range (expected N or N-M with N <= M <= {max})");
            let first: usize = first.trim().parse().map_err(|_| bad())?;
            let last: usize = last.trim().parse().map_err(|_| bad())?;
            if first <= last && last <= max {
                Ok(first..=last)
            } else {
                Err(bad())
            }
        }
        _ => class_by_key(key).map(|i| i..=i),
    }
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A label file's text and where it came from, for error messages.
struct Source<'a> {
    kind: FileKind,
    path: &'a Path,
    text: String,
}

impl<'a> Source<'a> {
    fn read(kind: FileKind, path: &'a Path) -> Result<Self, PostprocessError> {
        let text = std::fs::read_to_string(path).map_err(|source| PostprocessError::Read {
            kind,
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self { kind, path, text })
    }

    fn parse<T: for<'de> Deserialize<'de>>(&self) -> Result<T, PostprocessError> {
        toml::from_str(&self.text).map_err(|err| PostprocessError::Parse {
            kind: self.kind,
            path: self.path.to_path_buf(),
            line: err.span().map_or(1, |span| line_of(&self.text, span.start)),
            message: err.message().to_string(),
        })
    }

    fn entry_error(&self, at: usize, entry: String, problem: String) -> PostprocessError {
        PostprocessError::Entry {
            kind: self.kind,
            path: self.path.to_path_buf(),
            line: line_of(&self.text, at),
            entry,
            problem,
        }
    }
}

/// Entries of a TOML table in file order, so the first error reported is the first in the file.
fn in_file_order<V>(table: BTreeMap<Spanned<String>, V>) -> Vec<(Spanned<String>, V)> {
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelMapFile {
    #[serde(default)]
    names: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    groups: BTreeMap<Spanned<String>, String>,
}

/// A loaded label map file: output labels for classes and groups.
#[derive(Debug, Clone)]
pub(crate) struct LabelMap {
    path: PathBuf,
    /// Indexed by class; `None` keeps the English name.
    class_labels: Vec<Option<String>>,
    /// `(group name, label, line)` in file order; checked against the groups by
    /// [`Self::group_labels`].
    group_labels: Vec<(String, String, usize)>,
}

impl LabelMap {
    pub(crate) fn load(path: &Path) -> Result<Self, PostprocessError> {
        let source = Source::read(FileKind::LabelMap, path)?;
        let file: LabelMapFile = source.parse()?;
        let classes = imagenet();
        let mut class_labels: Vec<Option<String>> = vec![None; classes.len()];
        let mut named_by: Vec<Option<String>> = vec![None; classes.len()];
        for (key, label) in in_file_order(file.names) {
            let entry = format!("names.{:?}", key.get_ref());
            let fail =
                |problem: String| source.entry_error(key.span().start, entry.clone(), problem);
            let index = class_by_key(key.get_ref()).map_err(&fail)?;
            if label.trim().is_empty() {
                return Err(fail("empty label".to_string()));
            }
            if let Some(earlier) = &named_by[index] {
                return Err(fail(format!(
                    "class {index} ({}) is already named by key {earlier:?}",
                    classes[index].name
                )));
            }
            named_by[index] = Some(key.get_ref().clone());
            class_labels[index] = Some(label);
        }
        let mut group_labels = Vec::new();
        for (key, label) in in_file_order(file.groups) {
            let line = line_of(&source.text, key.span().start);
            if label.trim().is_empty() {
                return Err(source.entry_error(
                    key.span().start,
                    format!("groups.{:?}", key.get_ref()),
                    "empty label".to_string(),
                ));
            }
            group_labels.push((key.into_inner(), label, line));
        }
        Ok(Self {
            path: path.to_path_buf(),
            class_labels,
            group_labels,
        })
    }

    /// The mapped label of each class (`None` keeps the English name), in class order.
    pub(crate) fn class_labels(&self) -> &[Option<String>] {
        &self.class_labels
    }

    /// The mapped label of each of `groups` (same order), failing on a `[groups]` key that names
    /// no group. Without a groups file (`groups` empty) the `[groups]` table is ignored so one
    /// label map serves configs with and without groups.
    pub(crate) fn group_labels(
        &self,
        groups: &[Group],
    ) -> Result<Vec<Option<&str>>, PostprocessError> {
        let mut labels = vec![None; groups.len()];
        if groups.is_empty() {
            return Ok(labels);
        }
        for (name, label, line) in &self.group_labels {
            let Some(at) = groups.iter().position(|g| &g.name == name) else {
                let known: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
                return Err(PostprocessError::Entry {
                    kind: FileKind::LabelMap,
                    path: self.path.clone(),
                    line: *line,
                    entry: format!("groups.{name:?}"),
                    problem: format!(
                        "no such group in the groups file (groups: {})",
                        known.join(", ")
                    ),
                });
            };
            labels[at] = Some(label.as_str());
        }
        Ok(labels)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupsFile {
    #[serde(default)]
    groups: BTreeMap<Spanned<String>, GroupEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupEntry {
    members: Vec<Spanned<String>>,
}

/// A group of classes whose probabilities are summed into one output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    pub(crate) name: String,
    /// Class indices, ascending.
    pub(crate) members: Vec<usize>,
}

/// Loads a groups file: groups in file order, each class in at most one group.
pub(crate) fn load_groups(path: &Path) -> Result<Vec<Group>, PostprocessError> {
    let source = Source::read(FileKind::Groups, path)?;
    let file: GroupsFile = source.parse()?;
    let classes = imagenet();
    // For each class, the group (and member entry) that claimed it, to report overlaps.
    let mut owner: Vec<Option<(usize, String)>> = vec![None; classes.len()];
    let mut groups: Vec<Group> = Vec::new();
    for (name, entry) in in_file_order(file.groups) {
        let group_index = groups.len();
        if name.get_ref().trim().is_empty() {
            return Err(source.entry_error(
                name.span().start,
                "groups.\"\"".to_string(),
                "empty group name".to_string(),
            ));
        }
        if entry.members.is_empty() {
            return Err(source.entry_error(
                name.span().start,
                format!("groups.{}.members", name.get_ref()),
                "a group needs at least one member".to_string(),
            ));
        }
        let mut members = Vec::new();
        for member in &entry.members {
            let fail = |problem: String| {
                source.entry_error(
                    member.span().start,
                    format!("groups.{}.members {:?}", name.get_ref(), member.get_ref()),
                    problem,
                )
            };
            for index in classes_by_member_key(member.get_ref()).map_err(&fail)? {
                if let Some((other, other_member)) = &owner[index] {
                    let other_name: &str = if *other == group_index {
                        name.get_ref()
                    } else {
                        &groups[*other].name
                    };
                    return Err(fail(format!(
                        "class {index} ({}) is already in group {other_name} (via {other_member:?})",
                        classes[index].name
                    )));
                }
                owner[index] = Some((group_index, member.get_ref().clone()));
                members.push(index);
            }
        }
        members.sort_unstable();
        groups.push(Group {
            name: name.into_inner(),
            members,
        });
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_matches_imagenet_1k() {
        let classes = imagenet();
        assert_eq!(classes.len(), 1000);
        for (i, class) in classes.iter().enumerate() {
            assert_eq!(class.index, i, "line for class {i} is out of order");
            assert!(
                class.wnid.starts_with('n') && class.wnid.len() == 9,
                "{class:?}"
            );
        }
        assert_eq!(
            (classes[0].wnid.as_str(), classes[0].name.as_str()),
            ("n01440764", "tench")
        );
        assert_eq!(
            (classes[281].wnid.as_str(), classes[281].name.as_str()),
            ("n02123045", "tabby")
        );
        assert!(classes[281].synonyms.contains("tabby cat"));
        assert_eq!(
            (classes[999].wnid.as_str(), classes[999].name.as_str()),
            ("n15075141", "toilet tissue")
        );
    }

    #[test]
    fn class_keys_resolve_by_index_wnid_and_name() {
        assert_eq!(class_by_key("281"), Ok(281));
        assert_eq!(class_by_key("n02123045"), Ok(281));
        assert_eq!(class_by_key("tabby"), Ok(281));
        assert_eq!(class_by_key("TABBY"), Ok(281));
        // Exact case wins over the case-insensitive fallback.
        assert_eq!(class_by_key("Cardigan"), Ok(264));
        assert_eq!(class_by_key("cardigan"), Ok(474));
        assert!(class_by_key("CARDIGAN").unwrap_err().contains("ambiguous"));
        assert!(class_by_key("1000").unwrap_err().contains("out of range"));
        assert!(class_by_key("12x").unwrap_err().contains("bad class index"));
        assert!(class_by_key("n99999999")
            .unwrap_err()
            .contains("WordNet id"));
        assert!(class_by_key("unicorn").is_err());
    }

    #[test]
    fn member_keys_accept_ranges() {
        assert_eq!(classes_by_member_key("151-268"), Ok(151..=268));
        assert_eq!(classes_by_member_key("7"), Ok(7..=7));
        // Hyphenated English names are names, not ranges.
        assert_eq!(classes_by_member_key("go-kart"), Ok(573..=573));
        for bad in ["151-", "268-151", "990-1000", "1-2-3"] {
            let err = classes_by_member_key(bad).unwrap_err();
            assert!(err.contains("bad index range"), "{bad}: {err}");
        }
    }

    #[test]
    fn lines_are_one_based() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }
}
