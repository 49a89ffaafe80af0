//! tar archives (v7, ustar, GNU, pax).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailmoat::filetype::FileType;

#[path = "containers_common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::exercise(FileType::Tar, data);
});
