//! Microsoft Cabinet. The headers are read here; MSZIP is deflate (flate2) with
//! each block's history carried into the next, LZX is lzxd (the decoder the `cab`
//! crate uses). A folder is decompressed once, in order, and its files are cut
//! from it: reading file by file from the folder's start, as the `cab` crate
//! does, costs time in the square of the number of files. Quantum is not read.

use std::borrow::Cow;

use super::{Budget, Container, Entry, Fields};

pub struct Cab<'a> {
    bytes: &'a [u8],
    entries: Vec<Entry>,
    files: Vec<File>,
    folders: Vec<Folder>,
    /// Bytes reserved in each data block's header.
    data_reserve: usize,
    /// Each folder decompressed, once asked for.
    decompressed: Vec<Option<Result<Vec<u8>, String>>>,
    unseen: Vec<String>,
    ambiguities: Vec<String>,
}

#[derive(Debug, Clone)]
struct Folder {
    data: usize,
    blocks: u16,
    compression: u16,
}

#[derive(Debug, Clone)]
struct File {
    size: u32,
    offset: u32,
    folder: u16,
}

impl<'a> Cab<'a> {
    pub fn read(bytes: &'a [u8]) -> Result<Cab<'a>, String> {
        let damaged = |what: &str| format!("damaged ({what})");
        let total = bytes.le32(8).ok_or_else(|| damaged("a header cut short"))? as usize;
        let files_at = bytes
            .le32(16)
            .ok_or_else(|| damaged("a header cut short"))? as usize;
        let folder_count = bytes.le16(26).unwrap_or(0);
        let file_count = bytes.le16(28).unwrap_or(0);
        let flags = bytes.le16(30).unwrap_or(0);
        let mut cab = Cab {
            bytes,
            entries: Vec::new(),
            files: Vec::new(),
            folders: Vec::new(),
            data_reserve: 0,
            decompressed: Vec::new(),
            unseen: Vec::new(),
            ambiguities: Vec::new(),
        };
        if total < bytes.len() && bytes[total..].iter().any(|&b| b != 0) {
            cab.ambiguities
                .push("data after the end of the cabinet".into());
        }
        let mut pos = 36;
        let (mut folder_reserve, mut data_reserve) = (0usize, 0usize);
        if flags & 4 != 0 {
            let header_reserve = bytes.le16(36).unwrap_or(0) as usize;
            folder_reserve = bytes.u8_at(38).unwrap_or(0) as usize;
            data_reserve = bytes.u8_at(39).unwrap_or(0) as usize;
            pos = 40 + header_reserve;
        }
        if flags & 3 != 0 {
            cab.unseen
                .push("a part of a set of cabinets (files continue in another)".into());
            for _ in 0..if flags & 3 == 3 { 4 } else { 2 } {
                pos += memchr::memchr(0, bytes.get(pos..).unwrap_or(&[])).map_or(0, |n| n + 1);
            }
        }
        for _ in 0..folder_count {
            let data = bytes
                .le32(pos)
                .ok_or_else(|| damaged("folders past the end"))? as usize;
            cab.folders.push(Folder {
                data,
                blocks: bytes.le16(pos + 4).unwrap_or(0),
                compression: bytes.le16(pos + 6).unwrap_or(0),
            });
            pos += 8 + folder_reserve;
        }
        cab.decompressed = vec![None; cab.folders.len()];
        let mut pos = files_at;
        for _ in 0..file_count {
            let size = bytes
                .le32(pos)
                .ok_or_else(|| damaged("files past the end"))?;
            let offset = bytes.le32(pos + 4).unwrap_or(0);
            let folder = bytes.le16(pos + 8).unwrap_or(0);
            let attributes = bytes.le16(pos + 14).unwrap_or(0);
            let name_at = pos + 16;
            let name_len = memchr::memchr(0, bytes.get(name_at..).unwrap_or(&[]))
                .ok_or_else(|| damaged("a name past the end"))?;
            let raw = &bytes[name_at..name_at + name_len];
            let name = if attributes & 0x80 != 0 {
                String::from_utf8_lossy(raw).into_owned()
            } else {
                super::legacy_text(raw)
            };
            cab.entries.push(Entry {
                names: vec![name.replace('\\', "/")],
                size: Some(u64::from(size)),
            });
            cab.files.push(File {
                size,
                offset,
                folder,
            });
            pos = name_at + name_len + 1;
        }
        let mut names: Vec<&String> = cab.entries.iter().map(|e| &e.names[0]).collect();
        names.sort_unstable();
        if let Some(twice) = names.windows(2).find(|w| w[0].eq_ignore_ascii_case(w[1])) {
            cab.ambiguities
                .push(format!("two files named {}", twice[0]));
        }
        cab.data_reserve = data_reserve;
        Ok(cab)
    }

    /// A folder's bytes, decompressed block after block.
    fn folder(&self, index: usize, budget: &mut Budget) -> Result<Vec<u8>, String> {
        let folder = &self.folders[index];
        let kind = folder.compression & 0x0f;
        let mut out: Vec<u8> = Vec::new();
        let mut pos = folder.data;
        let mut deflate = flate2::Decompress::new(false);
        let mut lzx = if kind == 3 {
            Some(lzxd::Lzxd::new(window(folder.compression)?))
        } else {
            None
        };
        for _ in 0..folder.blocks {
            let compressed = self
                .bytes
                .le16(pos + 4)
                .ok_or("damaged (a block past the end)")? as usize;
            let size = self
                .bytes
                .le16(pos + 6)
                .ok_or("damaged (a block past the end)")? as usize;
            let start = pos + 8 + self.data_reserve;
            let data = self
                .bytes
                .get(start..start + compressed)
                .ok_or("damaged (a block past the end)")?;
            budget.take(size)?;
            match kind {
                0 => out.extend_from_slice(data),
                1 => mszip_block(&mut deflate, data, size, &mut out)?,
                3 => {
                    let decoder = lzx.as_mut().expect("made above for LZX");
                    let chunk = decoder
                        .decompress_next(data, size)
                        .map_err(|e| format!("damaged ({e})"))?;
                    out.extend_from_slice(chunk);
                }
                2 => return Err("compressed with Quantum, which the engine does not read".into()),
                other => {
                    return Err(format!(
                        "compressed with method {other}, which the engine does not read"
                    ));
                }
            }
            pos = start + compressed;
        }
        Ok(out)
    }
}

impl<'a> Container<'a> for Cab<'a> {
    fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn open(&mut self, index: usize, budget: &mut Budget) -> Result<Cow<'a, [u8]>, String> {
        let file = self.files[index].clone();
        let folder = file.folder as usize;
        if folder >= self.folders.len() {
            return Err("continued from or into another cabinet".into());
        }
        if self.decompressed[folder].is_none() {
            let result = self.folder(folder, budget);
            self.decompressed[folder] = Some(result);
        }
        let bytes = match self.decompressed[folder].as_ref().expect("filled above") {
            Ok(bytes) => bytes,
            Err(why) => return Err(why.clone()),
        };
        let start = file.offset as usize;
        bytes
            .get(start..start + file.size as usize)
            .map(|slice| Cow::Owned(slice.to_vec()))
            .ok_or_else(|| "damaged (a file past the end of its folder)".into())
    }

    fn unseen(&self) -> Vec<String> {
        self.unseen.clone()
    }

    fn ambiguities(&self) -> Vec<String> {
        self.ambiguities.clone()
    }
}

/// An MSZIP block: `CK`, then a deflate stream that may refer back into the
/// blocks before it. The history goes in first as a stored block.
fn mszip_block(
    deflate: &mut flate2::Decompress,
    data: &[u8],
    size: usize,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let data = data
        .strip_prefix(b"CK")
        .ok_or("damaged (an MSZIP block without its signature)")?;
    deflate.reset(false);
    let history = &out[out.len().saturating_sub(32768)..];
    if !history.is_empty() {
        let len = history.len() as u16;
        let mut stored = vec![0u8];
        stored.extend(len.to_le_bytes());
        stored.extend((!len).to_le_bytes());
        stored.extend_from_slice(history);
        let mut sink = Vec::with_capacity(history.len());
        deflate
            .decompress_vec(&stored, &mut sink, flate2::FlushDecompress::Sync)
            .map_err(|e| format!("damaged ({e})"))?;
    }
    let mut block = Vec::with_capacity(size);
    deflate
        .decompress_vec(data, &mut block, flate2::FlushDecompress::Finish)
        .map_err(|e| format!("damaged ({e})"))?;
    if block.len() != size {
        return Err("damaged (a block of another size than declared)".into());
    }
    out.extend(block);
    Ok(())
}

fn window(compression: u16) -> Result<lzxd::WindowSize, String> {
    use lzxd::WindowSize::*;
    Ok(match (compression >> 8) & 0x1f {
        15 => KB32,
        16 => KB64,
        17 => KB128,
        18 => KB256,
        19 => KB512,
        20 => MB1,
        21 => MB2,
        other => return Err(format!("damaged (an LZX window of 2^{other})")),
    })
}
