//! The Unix archives: `ar` (Debian packages hold their programs in a tar inside
//! one; GNU and BSD long names both read) and `cpio` (newc and odc, as RPM
//! payloads and initramfs images are). Both store files as they are: entries are
//! slices of the archive.

use std::borrow::Cow;

use super::{Budget, Container, Entry};

/// Entries as (names, data) slices.
struct Slices<'a> {
    entries: Vec<Entry>,
    data: Vec<&'a [u8]>,
    unseen: Vec<String>,
}

impl<'a> Slices<'a> {
    fn new() -> Self {
        Slices {
            entries: Vec::new(),
            data: Vec::new(),
            unseen: Vec::new(),
        }
    }

    fn push(&mut self, entry: Entry, data: &'a [u8]) {
        self.entries.push(entry);
        self.data.push(data);
    }
}

pub struct Ar<'a>(Slices<'a>);

impl<'a> Ar<'a> {
    pub fn read(bytes: &'a [u8]) -> Result<Ar<'a>, String> {
        let mut out = Slices::new();
        let mut long_names: &[u8] = &[];
        let mut pos = 8;
        while pos + 60 <= bytes.len() {
            let header = &bytes[pos..pos + 60];
            if &header[58..60] != b"`\n" {
                out.unseen
                    .push("damaged (a member header without its end)".into());
                break;
            }
            let field = |range: std::ops::Range<usize>| {
                String::from_utf8_lossy(&header[range]).trim().to_string()
            };
            let Ok(size) = field(48..58).parse::<usize>() else {
                out.unseen
                    .push("damaged (a size that is not a number)".into());
                break;
            };
            let start = pos + 60;
            let Some(mut data) = bytes.get(start..start + size) else {
                out.unseen.push("damaged (a member past the end)".into());
                break;
            };
            let raw_name = field(0..16);
            pos = start + size + size % 2;
            let name = if raw_name == "//" {
                long_names = data;
                continue;
            } else if raw_name == "/" || raw_name == "/SYM64/" {
                continue; // symbol tables
            } else if let Some(offset) = raw_name
                .strip_prefix('/')
                .and_then(|n| n.parse::<usize>().ok())
            {
                // GNU: an offset into the long-name table.
                let rest = long_names.get(offset..).unwrap_or(&[]);
                let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
                String::from_utf8_lossy(&rest[..end])
                    .trim_end_matches('/')
                    .to_string()
            } else if let Some(len) = raw_name
                .strip_prefix("#1/")
                .and_then(|n| n.parse::<usize>().ok())
            {
                // BSD: the name begins the data.
                let Some(name) = data.get(..len) else {
                    out.unseen.push("damaged (a name past its member)".into());
                    break;
                };
                data = &data[len..];
                String::from_utf8_lossy(name)
                    .trim_end_matches('\0')
                    .to_string()
            } else {
                raw_name.trim_end_matches('/').to_string()
            };
            let mut entry = Entry::named(name);
            entry.size = Some(data.len() as u64);
            out.push(entry, data);
        }
        Ok(Ar(out))
    }
}

pub struct Cpio<'a>(Slices<'a>);

impl<'a> Cpio<'a> {
    pub fn read(bytes: &'a [u8]) -> Result<Cpio<'a>, String> {
        let mut out = Slices::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let Some(magic) = bytes.get(pos..pos + 6) else {
                break;
            };
            // newc: hexadecimal fields, names and data aligned to four bytes.
            // odc: octal fields, nothing aligned.
            let (header, name_size, file_size, mode, align) = match magic {
                b"070701" | b"070702" => {
                    let hex = |i: usize| {
                        bytes
                            .get(pos + 6 + i * 8..pos + 14 + i * 8)
                            .and_then(|f| std::str::from_utf8(f).ok())
                            .and_then(|f| u64::from_str_radix(f, 16).ok())
                    };
                    (110, hex(11), hex(6), hex(1), 4)
                }
                b"070707" => {
                    let octal = |at: usize, len: usize| {
                        bytes
                            .get(pos + at..pos + at + len)
                            .and_then(|f| std::str::from_utf8(f).ok())
                            .and_then(|f| u64::from_str_radix(f, 8).ok())
                    };
                    (76, octal(59, 6), octal(65, 11), octal(18, 6), 1)
                }
                _ => {
                    out.unseen
                        .push("damaged (a header without its magic)".into());
                    break;
                }
            };
            let (Some(name_size), Some(file_size), Some(mode)) = (name_size, file_size, mode)
            else {
                out.unseen
                    .push("damaged (a header field that is not a number)".into());
                break;
            };
            let name_at = pos + header;
            let Some(name) = bytes.get(name_at..name_at + name_size as usize) else {
                out.unseen.push("damaged (a name past the end)".into());
                break;
            };
            let name = String::from_utf8_lossy(name)
                .trim_end_matches('\0')
                .to_string();
            let data_at = (name_at + name_size as usize).next_multiple_of(align);
            let Some(data) = bytes.get(data_at..data_at + file_size as usize) else {
                out.unseen.push("damaged (data past the end)".into());
                break;
            };
            pos = (data_at + file_size as usize).next_multiple_of(align);
            if name == "TRAILER!!!" {
                break;
            }
            // Regular files only (mode 0100000).
            if mode & 0o170000 == 0o100000 {
                let mut entry = Entry::named(name);
                entry.size = Some(file_size);
                out.push(entry, data);
            }
        }
        Ok(Cpio(out))
    }
}

macro_rules! slices_container {
    ($kind:ident) => {
        impl<'a> Container<'a> for $kind<'a> {
            fn entries(&self) -> &[Entry] {
                &self.0.entries
            }

            fn open(&mut self, index: usize, _: &mut Budget) -> Result<Cow<'a, [u8]>, String> {
                Ok(Cow::Borrowed(self.0.data[index]))
            }

            fn unseen(&self) -> Vec<String> {
                self.0.unseen.clone()
            }
        }
    };
}

slices_container!(Ar);
slices_container!(Cpio);
