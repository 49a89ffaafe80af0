//! tar (v7, ustar, GNU, pax). Each entry is named as every reader could name it:
//! the header's name (with the ustar prefix), a GNU long name, a pax `path`. The
//! data are slices of the archive, nothing is copied. After the end-of-archive
//! blocks, `tar -i` reads on: another header there is an ambiguity.

use std::borrow::Cow;

use super::{Budget, Container, Entry};
use crate::filetype::parse_octal;

const BLOCK: usize = 512;

pub struct Tar<'a> {
    bytes: &'a [u8],
    entries: Vec<Entry>,
    data: Vec<std::ops::Range<usize>>,
    unseen: Vec<String>,
    ambiguities: Vec<String>,
}

impl<'a> Tar<'a> {
    pub fn read(bytes: &'a [u8]) -> Result<Tar<'a>, String> {
        let mut tar = Tar {
            bytes,
            entries: Vec::new(),
            data: Vec::new(),
            unseen: Vec::new(),
            ambiguities: Vec::new(),
        };
        let mut pos = 0;
        // Names and sizes that the next header's entry takes (GNU 'L', pax 'x').
        let mut long_name: Option<String> = None;
        let mut pax_path: Option<String> = None;
        let mut pax_size: Option<u64> = None;
        let mut global_size: Option<u64> = None;
        loop {
            let Some(header) = bytes.get(pos..pos + BLOCK) else {
                if pos < bytes.len() {
                    tar.unseen.push("damaged (a header cut short)".into());
                }
                break;
            };
            if header.iter().all(|&b| b == 0) {
                tar.after_end(pos + BLOCK);
                break;
            }
            if !checksum_holds(header) {
                tar.unseen
                    .push("damaged (a header whose checksum does not hold)".into());
                break;
            }
            let kind = header[156];
            let Some(mut size) = parse_size(&header[124..136]) else {
                tar.unseen
                    .push("damaged (a size that is not a number)".into());
                break;
            };
            if matches!(kind, b'0' | 0 | b'7') {
                size = pax_size.or(global_size).unwrap_or(size);
            }
            let data_start = pos + BLOCK;
            let Some(data_end) = usize::try_from(size)
                .ok()
                .and_then(|n| data_start.checked_add(n))
                .filter(|&end| end <= bytes.len())
            else {
                tar.unseen.push("damaged (data past the end)".into());
                break;
            };
            let data = &bytes[data_start..data_end];
            match kind {
                b'L' => long_name = Some(text(data)),
                b'x' => {
                    let (path, size) = pax(data);
                    pax_path = path;
                    pax_size = size;
                }
                b'g' => global_size = pax(data).1,
                b'0' | 0 | b'7' | b'S' => {
                    let mut entry = Entry::named(header_name(header));
                    if let Some(name) = long_name.take() {
                        entry.also(name);
                    }
                    if let Some(path) = pax_path.take() {
                        entry.also(path);
                    }
                    pax_size = None;
                    entry.size = Some(size);
                    if kind == b'S' {
                        tar.unseen
                            .push(format!("{}: a sparse file", entry.names[0]));
                    } else {
                        tar.entries.push(entry);
                        tar.data.push(data_start..data_end);
                    }
                }
                _ => {
                    // Directories, links, devices: nothing to open.
                    long_name = None;
                    pax_path = None;
                    pax_size = None;
                }
            }
            pos = data_start + size.div_ceil(BLOCK as u64) as usize * BLOCK;
        }
        if tar.entries.is_empty() && !tar.unseen.is_empty() {
            return Err(tar.unseen.remove(0));
        }
        Ok(tar)
    }

    /// After the end-of-archive block: zeros, or more archive for `tar -i`.
    fn after_end(&mut self, from: usize) {
        let rest = &self.bytes[from.min(self.bytes.len())..];
        let another = rest.chunks(BLOCK).any(|block| {
            block.len() == BLOCK && block.iter().any(|&b| b != 0) && checksum_holds(block)
        });
        if another {
            self.ambiguities
                .push("another entry after the end of the archive".into());
        }
    }
}

impl<'a> Container<'a> for Tar<'a> {
    fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn open(&mut self, index: usize, _: &mut Budget) -> Result<Cow<'a, [u8]>, String> {
        Ok(Cow::Borrowed(&self.bytes[self.data[index].clone()]))
    }

    fn unseen(&self) -> Vec<String> {
        self.unseen.clone()
    }

    fn ambiguities(&self) -> Vec<String> {
        self.ambiguities.clone()
    }
}

fn checksum_holds(header: &[u8]) -> bool {
    let Some(stored) = parse_octal(&header[148..156]) else {
        return false;
    };
    let unsigned: u64 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    // Some old writers summed signed bytes.
    let signed: i64 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(b as i8)
            }
        })
        .sum();
    stored == unsigned || stored as i64 == signed
}

/// Octal, or GNU's base-256 for large sizes.
fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut value = 0u64;
        for &b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    if field.iter().all(|&b| b == 0 || b == b' ') {
        return Some(0);
    }
    parse_octal(field)
}

/// The header's own name: ustar's prefix joined to it.
fn header_name(header: &[u8]) -> String {
    let name = text(&header[0..100]);
    if &header[257..262] == b"ustar" && header[345] != 0 {
        format!("{}/{name}", text(&header[345..500]))
    } else {
        name
    }
}

fn text(bytes: &[u8]) -> String {
    let end = memchr::memchr(0, bytes).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A pax extended header's `path` and `size` (records: `LEN key=value\n`).
fn pax(data: &[u8]) -> (Option<String>, Option<u64>) {
    let mut path = None;
    let mut size = None;
    let mut pos = 0;
    while pos < data.len() {
        let Some(space) = memchr::memchr(b' ', &data[pos..]) else {
            break;
        };
        let Some(len) = std::str::from_utf8(&data[pos..pos + space])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
        else {
            break;
        };
        let Some(record) = data.get(pos + space + 1..pos + len) else {
            break;
        };
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(value) = record.strip_prefix(b"path=") {
            path = Some(String::from_utf8_lossy(value).into_owned());
        } else if let Some(value) = record.strip_prefix(b"size=") {
            size = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        }
        if len == 0 {
            break;
        }
        pos += len;
    }
    (path, size)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A ustar archive of regular files.
    pub fn make_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in files {
            out.extend(header(name, b'0', data.len()));
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        }
        out.extend([0u8; BLOCK * 2]);
        out
    }

    pub fn header(name: &str, kind: u8, size: usize) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    #[test]
    fn entries_with_every_name() {
        let mut bytes = Vec::new();
        let long = "folder/a-long-name-that-a-pax-header-gives.exe";
        let record = format!("{} path={long}\n", long.len() + 9);
        bytes.extend(header("PaxHeader", b'x', record.len()));
        bytes.extend(record.as_bytes());
        bytes.resize(bytes.len().div_ceil(BLOCK) * BLOCK, 0);
        bytes.extend(make_tar(&[("short.txt", b"MZ"), ("b.txt", b"text")]));
        let mut tar = Tar::read(&bytes).unwrap();
        assert_eq!(tar.entries()[0].names, ["short.txt", long]);
        assert_eq!(&*tar.open(0, &mut Budget::new(0)).unwrap(), b"MZ");
        assert_eq!(&*tar.open(1, &mut Budget::new(0)).unwrap(), b"text");
        assert!(tar.ambiguities().is_empty());
    }

    #[test]
    fn an_entry_after_the_end_is_ambiguous() {
        let mut bytes = make_tar(&[("a.txt", b"a")]);
        bytes.extend(make_tar(&[("hidden.exe", b"MZ")]));
        let tar = Tar::read(&bytes).unwrap();
        assert_eq!(tar.entries().len(), 1);
        assert_eq!(
            tar.ambiguities(),
            ["another entry after the end of the archive"]
        );
    }
}
