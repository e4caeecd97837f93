//! The CSV reader with row validation on any file: every row comes out as a
//! record or as a rejection with its line and reason, never a panic or a
//! hang, and the reader always ends.
#![no_main]

use hpn_common::csv_source::CsvSource;
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    // In $TMPDIR (scripts/fuzz points it at memory).
    let mut file = tempfile::Builder::new()
        .suffix(".csv")
        .tempfile()
        .expect("a temporary file");
    file.write_all(data).expect("write the input");
    let Ok(source) = CsvSource::open(file.path()) else {
        return;
    };
    let mut rows = 0u64;
    for row in source {
        rows += 1;
        assert!(
            rows <= data.len() as u64 + 1,
            "more rows than bytes: the reader does not end"
        );
        if let Err(rejected) = row {
            assert!(rejected.line >= 1, "a rejection names its line");
        }
    }
});
