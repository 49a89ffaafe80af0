//! gzip, bzip2, xz, zstd and lzip streams (the first byte picks which).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailmoat::filetype::FileType;

#[path = "containers_common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let kind = [FileType::Gzip, FileType::Bzip2, FileType::Xz, FileType::Zstd, FileType::Lzip][usize::from(data.first().copied().unwrap_or(0)) % 5];
    common::exercise(kind, data.get(1..).unwrap_or_default());
});
