//! Readers for the containers attackers send programs in: zip, RAR, 7z, gzip, bzip2,
//! xz, lzip, zstd, tar, CAB, ISO 9660, disk images (MBR/GPT, FAT, VHD, VHDX), OLE
//! compound files, TNEF, ar and cpio. One file per format, each behind
//! [`Container`]: list the entries with every name a reader could give them, open
//! one within a byte [`Budget`], and say why something could not be read or could
//! be read more than one way. The attachment walk in `mime/` opens them
//! recursively and judges every entry like an attachment.
//!
//! Every reader takes hostile input: sizes declared in headers are never trusted
//! for allocation, loops are bounded by the bytes at hand, and a panic in a reader
//! (caught by the walk) makes the container unscannable, not the message lost.
//! (In this project the *archive* is where refused mail is kept; these are
//! containers.)

pub mod ar;
pub mod cab;
pub mod compressed;
pub mod disk;
pub mod iso;
pub mod ole;
pub mod rar;
pub mod sevenz;
pub mod tar;
pub mod tnef;
pub mod zip;

use std::borrow::Cow;
use std::io::Read;

use crate::filetype::FileType;

/// Memory a decoder may take for its window or model (LZMA dictionaries, PPMd):
/// enough for `xz -9` and `7z -mx9` (64 MiB dictionaries). A header that asks for
/// more is refused, not believed.
pub const DECODER_MEMORY: usize = 96 * 1024 * 1024;

/// Why a decoder was not run: the memory its header asks for.
pub fn too_much_memory(asked: impl std::fmt::Display) -> String {
    format!(
        "needs {asked} of memory to decompress, more than the engine allows ({} MiB)",
        DECODER_MEMORY >> 20
    )
}

/// One file inside a container, as its headers declare it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// Every name some reader gives it (the directory's and the local header's, a
    /// Unicode and a legacy name, a long and a short name …), paths included.
    pub names: Vec<String>,
    /// The size its headers declare, if they do.
    pub size: Option<u64>,
}

impl Entry {
    pub fn named(name: impl Into<String>) -> Entry {
        Entry {
            names: vec![name.into()],
            size: None,
        }
    }

    /// Adds a name unless it is already there or empty.
    pub fn also(&mut self, name: impl Into<String>) {
        let name = name.into();
        if !name.is_empty() && !self.names.contains(&name) {
            self.names.push(name);
        }
    }
}

/// A container opened for reading.
pub trait Container<'a> {
    /// What it holds, in the order its readers list it.
    fn entries(&self) -> &[Entry];

    /// An entry's bytes, decompressed within `budget`; or why they cannot be had
    /// (encrypted, a method the engine does not read, damaged, past the budget).
    fn open(&mut self, index: usize, budget: &mut Budget) -> Result<Cow<'a, [u8]>, String>;

    /// What of the container as a whole could not be read (names encrypted, a
    /// damaged directory, a file system the engine does not read).
    fn unseen(&self) -> Vec<String> {
        Vec::new()
    }

    /// Where extractors would read it differently (a zip's directory against its
    /// local headers, data after the end …).
    fn ambiguities(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether it holds a VBA project (Office macros).
    fn holds_macros(&self) -> bool {
        false
    }
}

/// Opens a container of a readable kind; `name` is the file name it came under
/// (a gzip file's entry is named after it). Formats that must be decompressed
/// whole to be listed (solid 7z) charge `budget` now.
pub fn open<'a>(
    kind: FileType,
    bytes: &'a [u8],
    name: Option<&str>,
    budget: &mut Budget,
) -> Result<Box<dyn Container<'a> + 'a>, String> {
    Ok(match kind {
        FileType::Zip => Box::new(zip::Zip::read(bytes)?),
        FileType::Rar => Box::new(rar::Rar::read(bytes)?),
        FileType::SevenZip => Box::new(sevenz::SevenZip::read(bytes, budget)?),
        FileType::Gzip | FileType::Bzip2 | FileType::Xz | FileType::Zstd | FileType::Lzip => {
            Box::new(compressed::Compressed::read(kind, bytes, name)?)
        }
        FileType::Tar => Box::new(tar::Tar::read(bytes)?),
        FileType::Cab => Box::new(cab::Cab::read(bytes)?),
        FileType::Iso => Box::new(iso::Iso::read(bytes)?),
        FileType::Disk | FileType::Fat | FileType::Vhd | FileType::Vhdx => {
            Box::new(disk::Disk::read(kind, bytes, budget)?)
        }
        FileType::Ole | FileType::Msi => Box::new(ole::Ole::read(bytes, budget)?),
        FileType::Tnef => Box::new(tnef::Tnef::read(bytes)?),
        FileType::Ar => Box::new(ar::Ar::read(bytes)?),
        FileType::Cpio => Box::new(ar::Cpio::read(bytes)?),
        other => {
            return Err(format!(
                "{} is not a container the engine reads",
                other.name()
            ));
        }
    })
}

/// Bytes that may still be decompressed while judging one message
/// (`[rules] container_bytes`): what bounds the time and the memory a bomb costs.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    left: usize,
    limit: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget { left: limit, limit }
    }

    pub fn left(&self) -> usize {
        self.left
    }

    /// Why something was not read: the budget is spent.
    pub fn spent(&self) -> String {
        format!(
            "past container_bytes = {} decompressed for this message",
            self.limit
        )
    }

    /// Takes `n` bytes of the budget, or says it cannot.
    pub fn take(&mut self, n: usize) -> Result<(), String> {
        if n > self.left {
            self.left = 0;
            return Err(self.spent());
        }
        self.left -= n;
        Ok(())
    }

    /// Reads a decoder to its end within the budget. `declared`: the size the
    /// headers give, when they do, checked against what comes out.
    pub fn read_all(
        &mut self,
        reader: impl Read,
        declared: Option<u64>,
    ) -> Result<Vec<u8>, String> {
        if declared.is_some_and(|size| size > self.left as u64) {
            self.left = 0;
            return Err(self.spent());
        }
        let mut out = Vec::new();
        let cap = self.left as u64 + 1;
        reader.take(cap).read_to_end(&mut out).map_err(|e| {
            if e.to_string().contains("mem_limit") {
                too_much_memory("a dictionary")
            } else {
                format!("damaged ({e})")
            }
        })?;
        if out.len() > self.left {
            self.left = 0;
            return Err(self.spent());
        }
        self.left -= out.len();
        if let Some(size) = declared
            && size != out.len() as u64
        {
            return Err(format!(
                "damaged (declares {size} bytes, holds {})",
                out.len()
            ));
        }
        Ok(out)
    }
}

/// Little-endian and big-endian fields of a header, with bounds checked: a
/// field past the end is None, never a panic.
pub(crate) trait Fields {
    fn u8_at(&self, at: usize) -> Option<u8>;
    fn le16(&self, at: usize) -> Option<u16>;
    fn le32(&self, at: usize) -> Option<u32>;
    fn le64(&self, at: usize) -> Option<u64>;
    fn be32(&self, at: usize) -> Option<u32>;
    fn be64(&self, at: usize) -> Option<u64>;
    fn slice(&self, at: usize, len: usize) -> Option<&[u8]>;
}

impl Fields for [u8] {
    fn u8_at(&self, at: usize) -> Option<u8> {
        self.get(at).copied()
    }
    fn le16(&self, at: usize) -> Option<u16> {
        Some(u16::from_le_bytes(
            self.get(at..at.checked_add(2)?)?.try_into().ok()?,
        ))
    }
    fn le32(&self, at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    }
    fn le64(&self, at: usize) -> Option<u64> {
        Some(u64::from_le_bytes(
            self.get(at..at.checked_add(8)?)?.try_into().ok()?,
        ))
    }
    fn be32(&self, at: usize) -> Option<u32> {
        Some(u32::from_be_bytes(
            self.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    }
    fn be64(&self, at: usize) -> Option<u64> {
        Some(u64::from_be_bytes(
            self.get(at..at.checked_add(8)?)?.try_into().ok()?,
        ))
    }
    fn slice(&self, at: usize, len: usize) -> Option<&[u8]> {
        self.get(at..at.checked_add(len)?)
    }
}

/// UTF-16 (little-endian) text up to its first NUL.
pub(crate) fn utf16le(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// UTF-16 (big-endian) text up to its first NUL.
pub(crate) fn utf16be(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Text in an old DOS code page (CP437, what zip and FAT names are when not
/// flagged UTF-8): ASCII as it is, the rest as the code page's letters would not
/// change an extension, so they are kept as replacement characters.
pub(crate) fn legacy_text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| if b.is_ascii() { b as char } else { '\u{fffd}' })
        .collect()
}

/// The part of `bytes` from `start`, `len` long, or why not.
pub(crate) fn span<'a>(
    bytes: &'a [u8],
    start: u64,
    len: u64,
    what: &str,
) -> Result<&'a [u8], String> {
    let start = usize::try_from(start).map_err(|_| format!("damaged ({what} out of range)"))?;
    let len = usize::try_from(len).map_err(|_| format!("damaged ({what} out of range)"))?;
    bytes
        .get(
            start
                ..start
                    .checked_add(len)
                    .ok_or_else(|| format!("damaged ({what} out of range)"))?,
        )
        .ok_or_else(|| format!("damaged ({what} goes past the end)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the fuzz targets do with an input (`fuzz/fuzz_targets/container_*`).
    fn exercise(target: &str, data: &[u8]) {
        let pick = |kinds: &[FileType]| {
            kinds[usize::from(data.first().copied().unwrap_or(0)) % kinds.len()]
        };
        let (kind, data) = match target {
            "container_zip" => (FileType::Zip, data),
            "container_rar" => (FileType::Rar, data),
            "container_sevenz" => (FileType::SevenZip, data),
            "container_tar" => (FileType::Tar, data),
            "container_cab" => (FileType::Cab, data),
            "container_iso" => (FileType::Iso, data),
            "container_ole" => (FileType::Ole, data),
            "container_tnef" => (FileType::Tnef, data),
            "container_ar" => (
                pick(&[FileType::Ar, FileType::Cpio]),
                &data[1.min(data.len())..],
            ),
            "container_compressed" => (
                pick(&[
                    FileType::Gzip,
                    FileType::Bzip2,
                    FileType::Xz,
                    FileType::Zstd,
                    FileType::Lzip,
                ]),
                &data[1.min(data.len())..],
            ),
            "container_disk" => (
                pick(&[FileType::Fat, FileType::Disk, FileType::Vhd, FileType::Vhdx]),
                &data[1.min(data.len())..],
            ),
            other => panic!("no fuzz target {other}"),
        };
        let mut budget = Budget::new(8 << 20);
        if let Ok(mut container) = open(kind, data, Some("file.tar.gz"), &mut budget) {
            for index in 0..container.entries().len().min(256) {
                let _ = container.open(index, &mut budget);
            }
            let _ = (container.unseen(), container.ambiguities());
        }
    }

    /// Inputs the fuzzers found a panic with, kept as `fuzz/regressions/TARGET-what`.
    #[test]
    fn the_fuzzers_findings_read_without_a_panic() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
        let mut found = 0;
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if let Some((target, _)) = name.split_once('-')
                && target.starts_with("container_")
            {
                exercise(target, &std::fs::read(&path).unwrap());
                found += 1;
            }
        }
        assert!(found > 0);
    }

    #[test]
    fn the_budget_refuses_what_would_pass_it() {
        let mut budget = Budget::new(10);
        assert_eq!(budget.read_all(&b"12345"[..], Some(5)).unwrap(), b"12345");
        assert_eq!(budget.left(), 5);
        assert!(
            budget
                .read_all(&b"123456"[..], None)
                .unwrap_err()
                .contains("container_bytes = 10")
        );
        assert_eq!(budget.left(), 0);
        let mut budget = Budget::new(10);
        assert!(budget.read_all(&b"1"[..], Some(1 << 40)).is_err());
        let mut budget = Budget::new(10);
        assert!(
            budget
                .read_all(&b"123"[..], Some(4))
                .unwrap_err()
                .starts_with("damaged")
        );
    }
}
