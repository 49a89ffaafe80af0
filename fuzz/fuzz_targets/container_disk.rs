//! Disk images: FAT, MBR/GPT partitions, VHD (the first byte picks which).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailmoat::filetype::FileType;

#[path = "containers_common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let kind = [FileType::Fat, FileType::Disk, FileType::Vhd, FileType::Vhdx][usize::from(data.first().copied().unwrap_or(0)) % 4];
    common::exercise(kind, data.get(1..).unwrap_or_default());
});
