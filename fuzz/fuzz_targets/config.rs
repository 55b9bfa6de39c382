//! A config file's text: TOML syntax, every section's keys and the validation across them
//! (`Config::parse`, what `Config::load` runs on the file's text). `Ok` or an error, never a
//! panic.
#![no_main]

use std::path::Path;

use edgeclass::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = Config::parse(Path::new("fuzz.toml"), text);
});
