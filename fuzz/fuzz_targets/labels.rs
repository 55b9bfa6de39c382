//! A label map or groups file (the first byte chooses which), read through the postprocessor as
//! the daemon does. `Ok` or an error naming the file, never a panic.
#![no_main]

use edgeclass::postprocess::{PostprocessConfig, Postprocessor};
use edgeclass_fuzz::scratch_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, text)) = data.split_first() else {
        return;
    };
    let file = scratch_file("labels.toml", text);
    let mut config = PostprocessConfig::default();
    if which & 1 == 0 {
        config.label_map = Some(file.clone());
    } else {
        config.groups = Some(file.clone());
    }
    if let Err(e) = Postprocessor::new(&config) {
        assert!(e.to_string().contains(&*file.to_string_lossy()), "{e}");
    }
});
