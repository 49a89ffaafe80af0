//! ar and cpio archives (the first byte picks which).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailmoat::filetype::FileType;

#[path = "containers_common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let kind = [FileType::Ar, FileType::Cpio][usize::from(data.first().is_some_and(|b| b & 1 == 1))];
    common::exercise(kind, data.get(1..).unwrap_or_default());
});
