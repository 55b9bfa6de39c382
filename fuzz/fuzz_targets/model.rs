//! A model or head file (GGUF or safetensors), through the loaders the daemon uses
//! (`Network::load`, `Head::load`). `Ok` or an error naming the file, never a panic.
#![no_main]

use edgeclass::model::{Head, Network};
use edgeclass_fuzz::scratch_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = scratch_file("model.gguf", data);
    let _ = Network::load(&file);
    if let Err(e) = Head::load(&file) {
        assert!(e.to_string().contains(&*file.to_string_lossy()), "{e}");
    }
});
