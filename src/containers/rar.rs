//! RAR 4 and 5, from their headers. No memory-safe reader of RAR's compression
//! exists in Rust (unrar is C++), so the engine reads what the headers declare —
//! every entry's names (RAR 4's legacy and Unicode names both), sizes, method —
//! and the content of entries that are stored uncompressed. A compressed entry is
//! unseen, and so is an archive whose headers are encrypted: `[mime] unscannable`
//! decides.

use std::borrow::Cow;

use super::{Budget, Container, Entry, Fields};

const RAR4: &[u8] = b"Rar!\x1a\x07\x00";
const RAR5: &[u8] = b"Rar!\x1a\x07\x01\x00";

pub struct Rar<'a> {
    bytes: &'a [u8],
    entries: Vec<Entry>,
    items: Vec<Member>,
    unseen: Vec<String>,
    ambiguities: Vec<String>,
}

#[derive(Debug, Clone)]
struct Member {
    data: std::ops::Range<usize>,
    /// Stored: the data is the file.
    stored: bool,
    encrypted: bool,
    /// Split across volumes: part of it is elsewhere.
    split: bool,
    size: u64,
}

impl<'a> Rar<'a> {
    pub fn read(bytes: &'a [u8]) -> Result<Rar<'a>, String> {
        let mut rar = Rar {
            bytes,
            entries: Vec::new(),
            items: Vec::new(),
            unseen: Vec::new(),
            ambiguities: Vec::new(),
        };
        if bytes.starts_with(RAR5) {
            rar.read5()?;
        } else if bytes.starts_with(RAR4) {
            rar.read4()?;
        } else {
            return Err("damaged (not a RAR signature)".into());
        }
        Ok(rar)
    }

    fn push(&mut self, entry: Entry, item: Member) {
        self.entries.push(entry);
        self.items.push(item);
    }

    /// RAR 4: blocks of (CRC, type, flags, size), the file header's data after it.
    fn read4(&mut self) -> Result<(), String> {
        let bytes = self.bytes;
        let mut pos = RAR4.len();
        loop {
            let Some(kind) = bytes.u8_at(pos + 2) else {
                self.unseen
                    .push("damaged (it ends without an end block)".into());
                return Ok(());
            };
            let flags = bytes.le16(pos + 3).unwrap_or(0);
            let size = bytes.le16(pos + 5).unwrap_or(0) as usize;
            if size < 7 {
                self.unseen
                    .push("damaged (a block header too short)".into());
                return Ok(());
            }
            let mut data_size = 0u64;
            if flags & 0x8000 != 0 || kind == 0x74 || kind == 0x7a {
                data_size = u64::from(bytes.le32(pos + 7).unwrap_or(0));
            }
            match kind {
                0x73 => {
                    if flags & 0x0080 != 0 {
                        self.unseen
                            .push("encrypted (its headers, names included)".into());
                        return Ok(());
                    }
                    if flags & 0x0001 != 0 {
                        self.unseen.push("a part of a multi-volume archive".into());
                    }
                }
                0x74 | 0x7a => {
                    let header = bytes
                        .get(pos..pos + size)
                        .ok_or("damaged (a file header goes past the end)")?;
                    if flags & 0x0100 != 0 {
                        data_size |= u64::from(header.le32(32).unwrap_or(0)) << 32;
                    }
                    let data_start = pos + size;
                    let data_end = usize::try_from(data_size)
                        .ok()
                        .and_then(|n| data_start.checked_add(n))
                        .ok_or("damaged (a size out of range)")?;
                    self.file4(kind, flags, header, data_start..data_end.min(bytes.len()));
                    if data_end > bytes.len() {
                        self.unseen.push("damaged (data past the end)".into());
                        return Ok(());
                    }
                    pos = data_end;
                    continue;
                }
                0x7b => {
                    let end = pos + size;
                    if bytes[end.min(bytes.len())..].iter().any(|&b| b != 0) {
                        self.ambiguities
                            .push("data after the end of the archive".into());
                    }
                    return Ok(());
                }
                _ => {}
            }
            let next = (pos + size)
                .checked_add(usize::try_from(data_size).unwrap_or(usize::MAX))
                .ok_or("damaged (a size out of range)")?;
            if next > bytes.len() {
                self.unseen.push("damaged (a block past the end)".into());
                return Ok(());
            }
            pos = next;
        }
    }

    fn file4(&mut self, kind: u8, flags: u16, header: &[u8], data: std::ops::Range<usize>) {
        let name_size = header.le16(26).unwrap_or(0) as usize;
        let name_at = if flags & 0x0100 != 0 { 40 } else { 32 };
        let Some(raw_name) = header.slice(name_at, name_size) else {
            self.unseen.push("damaged (a name past its header)".into());
            return;
        };
        let method = header.u8_at(25).unwrap_or(0);
        let mut size = u64::from(header.le32(11).unwrap_or(0));
        if flags & 0x0100 != 0 {
            size |= u64::from(header.le32(36).unwrap_or(0)) << 32;
        }
        let (legacy, unicode) = match memchr::memchr(0, raw_name) {
            Some(nul) if flags & 0x0200 != 0 => (
                &raw_name[..nul],
                Some(decode_unicode(&raw_name[..nul], &raw_name[nul + 1..])),
            ),
            _ => (raw_name, None),
        };
        if kind == 0x7a {
            // A service block: comments and such say nothing, but an NTFS stream
            // is a file that Windows keeps beside another.
            if legacy != b"STM" {
                return;
            }
        }
        let mut entry = Entry::named(String::from_utf8_lossy(legacy).replace('\\', "/"));
        if let Some(unicode) = unicode {
            entry.also(unicode.replace('\\', "/"));
        }
        if flags & 0x00e0 == 0x00e0 {
            return; // a directory
        }
        entry.size = Some(size);
        self.push(
            entry,
            Member {
                data,
                stored: method == 0x30,
                encrypted: flags & 0x0004 != 0,
                split: flags & 0x0003 != 0,
                size,
            },
        );
    }

    /// RAR 5: headers of variable-length integers, each with its CRC.
    fn read5(&mut self) -> Result<(), String> {
        let bytes = self.bytes;
        let mut pos = RAR5.len();
        loop {
            let mut cursor = Cursor {
                bytes,
                pos: pos + 4,
            };
            let Some(header_size) = cursor.vint() else {
                self.unseen
                    .push("damaged (it ends without an end header)".into());
                return Ok(());
            };
            let header_start = cursor.pos;
            let header_end = usize::try_from(header_size)
                .ok()
                .and_then(|n| header_start.checked_add(n))
                .filter(|&end| end <= bytes.len())
                .ok_or("damaged (a header past the end)")?;
            // The header's fields, and nothing past them.
            let mut cursor = Cursor {
                bytes: &bytes[..header_end],
                pos: header_start,
            };
            let kind = cursor.vint().unwrap_or(0);
            let flags = cursor.vint().unwrap_or(0);
            let extra_size = if flags & 1 != 0 {
                cursor.vint().unwrap_or(0)
            } else {
                0
            };
            let data_size = if flags & 2 != 0 {
                cursor.vint().unwrap_or(0)
            } else {
                0
            };
            let data_start = header_end;
            let data_end = usize::try_from(data_size)
                .ok()
                .and_then(|n| data_start.checked_add(n))
                .ok_or("damaged (a size out of range)")?;
            match kind {
                1 => {
                    let archive_flags = cursor.vint().unwrap_or(0);
                    if archive_flags & 1 != 0 {
                        self.unseen.push("a part of a multi-volume archive".into());
                    }
                }
                2 | 3 => {
                    let extra_start = header_end.saturating_sub(extra_size as usize);
                    let extra = &bytes[extra_start.max(cursor.pos).min(header_end)..header_end];
                    self.file5(
                        kind,
                        flags,
                        &mut cursor,
                        extra,
                        data_start..data_end.min(bytes.len()),
                    );
                }
                4 => {
                    self.unseen
                        .push("encrypted (its headers, names included)".into());
                    return Ok(());
                }
                5 => {
                    if bytes[data_end.min(bytes.len())..].iter().any(|&b| b != 0) {
                        self.ambiguities
                            .push("data after the end of the archive".into());
                    }
                    return Ok(());
                }
                _ => {}
            }
            if data_end > bytes.len() {
                self.unseen.push("damaged (data past the end)".into());
                return Ok(());
            }
            pos = data_end;
        }
    }

    fn file5(
        &mut self,
        kind: u64,
        header_flags: u64,
        cursor: &mut Cursor<'_>,
        extra: &[u8],
        data: std::ops::Range<usize>,
    ) {
        let file_flags = cursor.vint().unwrap_or(0);
        let size = cursor.vint().unwrap_or(0);
        let _attributes = cursor.vint();
        if file_flags & 2 != 0 {
            cursor.pos += 4;
        }
        if file_flags & 4 != 0 {
            cursor.pos += 4;
        }
        let compression = cursor.vint().unwrap_or(0);
        let _host = cursor.vint();
        let name_len = cursor.vint().unwrap_or(0) as usize;
        let Some(name) = cursor.bytes.slice(cursor.pos, name_len) else {
            self.unseen.push("damaged (a name past its header)".into());
            return;
        };
        let name = String::from_utf8_lossy(name).replace('\\', "/");
        if kind == 3 && name != "STM" {
            return; // comments, quick-open data, access lists
        }
        if file_flags & 1 != 0 {
            return; // a directory
        }
        let mut entry = Entry::named(name);
        entry.size = Some(size);
        self.push(
            entry,
            Member {
                data,
                stored: (compression >> 7) & 7 == 0,
                encrypted: extra_records(extra).contains(&1),
                // Split before (0x08) or after (0x10).
                split: header_flags & 0x18 != 0,
                size,
            },
        );
    }
}

impl<'a> Container<'a> for Rar<'a> {
    fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn open(&mut self, index: usize, budget: &mut Budget) -> Result<Cow<'a, [u8]>, String> {
        let item = &self.items[index];
        if item.encrypted {
            return Err("encrypted".into());
        }
        if item.split {
            return Err("split across volumes".into());
        }
        if !item.stored {
            return Err("compressed with RAR's own method, which the engine does not read".into());
        }
        let data = &self.bytes[item.data.clone()];
        if data.len() as u64 != item.size {
            return Err("damaged (a stored entry whose sizes differ)".into());
        }
        let _ = budget;
        Ok(Cow::Borrowed(data))
    }

    fn unseen(&self) -> Vec<String> {
        self.unseen.clone()
    }

    fn ambiguities(&self) -> Vec<String> {
        self.ambiguities.clone()
    }
}

/// The types of the records in a RAR 5 extra area (1: encryption).
fn extra_records(extra: &[u8]) -> Vec<u64> {
    let mut kinds = Vec::new();
    let mut cursor = Cursor {
        bytes: extra,
        pos: 0,
    };
    while cursor.pos < extra.len() {
        let Some(size) = cursor.vint() else { break };
        let start = cursor.pos;
        let Some(kind) = cursor.vint() else { break };
        kinds.push(kind);
        cursor.pos = start.saturating_add(size as usize);
    }
    kinds
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    /// RAR 5's variable-length integer: seven bits a byte, low first.
    fn vint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = *self.bytes.get(self.pos)?;
            self.pos += 1;
            if shift < 64 {
                value |= u64::from(byte & 0x7f) << shift;
            }
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
}

/// RAR 4's Unicode name: the legacy name, then a compact encoding of the
/// Unicode one that refers back to it (unrar's `EncodeFileName::Decode`).
fn decode_unicode(legacy: &[u8], encoded: &[u8]) -> String {
    let mut out: Vec<u16> = Vec::new();
    let Some((&high, mut rest)) = encoded.split_first() else {
        return String::new();
    };
    let high = u16::from(high) << 8;
    let mut flags = 0u8;
    let mut flag_bits = 0;
    let next = |rest: &mut &[u8]| -> Option<u8> {
        let (&b, tail) = rest.split_first()?;
        *rest = tail;
        Some(b)
    };
    while !rest.is_empty() && out.len() < 1024 {
        if flag_bits == 0 {
            let Some(f) = next(&mut rest) else { break };
            flags = f;
            flag_bits = 8;
        }
        match flags >> 6 {
            0 => match next(&mut rest) {
                Some(b) => out.push(u16::from(b)),
                None => break,
            },
            1 => match next(&mut rest) {
                Some(b) => out.push(u16::from(b) | high),
                None => break,
            },
            2 => match (next(&mut rest), next(&mut rest)) {
                (Some(lo), Some(hi)) => out.push(u16::from(lo) | (u16::from(hi) << 8)),
                _ => break,
            },
            _ => {
                let Some(length) = next(&mut rest) else { break };
                if length & 0x80 != 0 {
                    let Some(correction) = next(&mut rest) else {
                        break;
                    };
                    for _ in 0..(length & 0x7f) + 2 {
                        let Some(&b) = legacy.get(out.len()) else {
                            break;
                        };
                        out.push(u16::from(b.wrapping_add(correction)) | high);
                    }
                } else {
                    for _ in 0..length + 2 {
                        let Some(&b) = legacy.get(out.len()) else {
                            break;
                        };
                        out.push(u16::from(b));
                    }
                }
            }
        }
        flags <<= 2;
        flag_bits -= 2;
    }
    String::from_utf16_lossy(&out)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A RAR 4 archive of stored files, as WinRAR writes them; `unicode` gives a
    /// file a Unicode name beside its legacy one.
    pub fn rar4(files: &[(&str, Option<&str>, &[u8], bool)]) -> Vec<u8> {
        let mut out = RAR4.to_vec();
        out.extend(block4(0x73, 0, &[0; 6]));
        for (name, unicode, data, stored) in files {
            let mut name_bytes = name.as_bytes().to_vec();
            let mut flags = 0x8000u16;
            if let Some(unicode) = unicode {
                flags |= 0x0200;
                name_bytes.push(0);
                // The plain encoding (0): one byte per character.
                name_bytes.push(0);
                for chunk in unicode.as_bytes().chunks(4) {
                    name_bytes.push(0);
                    name_bytes.extend_from_slice(chunk);
                }
            }
            let mut fields = Vec::new();
            fields.extend((data.len() as u32).to_le_bytes());
            fields.extend((data.len() as u32).to_le_bytes());
            fields.push(2);
            fields.extend(crc32fast::hash(data).to_le_bytes());
            fields.extend(0u32.to_le_bytes());
            fields.push(20);
            fields.push(if *stored { 0x30 } else { 0x33 });
            fields.extend((name_bytes.len() as u16).to_le_bytes());
            fields.extend(0x20u32.to_le_bytes());
            fields.extend(&name_bytes);
            out.extend(block4(0x74, flags, &fields));
            out.extend_from_slice(data);
        }
        out.extend(block4(0x7b, 0x4000, &[]));
        out
    }

    fn block4(kind: u8, flags: u16, fields: &[u8]) -> Vec<u8> {
        let size = (7 + fields.len()) as u16;
        let mut header = vec![kind];
        header.extend(flags.to_le_bytes());
        header.extend(size.to_le_bytes());
        header.extend(fields);
        let crc = (crc32fast::hash(&header) & 0xffff) as u16;
        let mut out = crc.to_le_bytes().to_vec();
        out.extend(header);
        out
    }

    #[test]
    fn stored_entries_are_read_and_compressed_ones_are_unseen() {
        let bytes = rar4(&[
            ("readme.txt", None, b"hello", true),
            ("tool.bin", None, b"\x01\x02", false),
        ]);
        let mut rar = Rar::read(&bytes).unwrap();
        assert_eq!(rar.entries().len(), 2);
        let mut budget = Budget::new(100);
        assert_eq!(&*rar.open(0, &mut budget).unwrap(), b"hello");
        assert!(rar.open(1, &mut budget).unwrap_err().contains("compressed"));
        assert!(rar.ambiguities().is_empty());
    }

    #[test]
    fn both_names_of_a_rar4_entry_are_given() {
        let bytes = rar4(&[("invoice.txt", Some("invoice.exe"), b"x", true)]);
        let rar = Rar::read(&bytes).unwrap();
        assert_eq!(rar.entries()[0].names, ["invoice.txt", "invoice.exe"]);
    }

    #[test]
    fn variable_integers() {
        let mut cursor = Cursor {
            bytes: &[0x81, 0x01, 0x05],
            pos: 0,
        };
        assert_eq!(cursor.vint(), Some(129));
        assert_eq!(cursor.vint(), Some(5));
        assert_eq!(cursor.vint(), None);
    }
}
