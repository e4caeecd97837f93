//! The mapping parser on any text, and a parsed mapping applied to any
//! header: an error in words, never a panic.
#![no_main]

use hpn_common::Mapping;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The mapping, then a header line after a blank line.
    let (mapping, header) = text.split_once("\n\n").unwrap_or((text, "user_id,name"));
    let Ok(mapping) = Mapping::parse(mapping, Path::new("fuzz.toml")) else {
        return;
    };
    let header: Vec<String> = header
        .lines()
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::to_string)
        .collect();
    if let Err(refused) = mapping.layout_for(Path::new("fuzz.csv"), &header) {
        let _ = refused.explain(&mapping);
    }
});
