//! The ImageNet-1k class table shipped in `configs/labels/imagenet1k.tsv`.

use std::sync::OnceLock;

/// One ImageNet-1k class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageNetClass {
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
}
