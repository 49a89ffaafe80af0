//! ISO 9660 disc images, with every hierarchy a reader may show: the primary
//! volume's (`NAME.EXE;1`), Joliet's (Windows, UTF-16 names) and Rock Ridge's
//! (Linux, `NM` entries). A file that two hierarchies list is one entry with all
//! their names. An image that also carries UDF — what Windows mounts when it is
//! there — is unseen: the engine does not read UDF, and its names may be others.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::{Budget, Container, Entry, Fields};

const SECTOR: usize = 2048;
/// Directories nested deeper than this are not followed.
const MAX_DEPTH: usize = 32;

pub struct Iso<'a> {
    bytes: &'a [u8],
    entries: Vec<Entry>,
    extents: Vec<(usize, usize)>,
    unseen: Vec<String>,
}

impl<'a> Iso<'a> {
    pub fn read(bytes: &'a [u8]) -> Result<Iso<'a>, String> {
        let mut roots: Vec<(&[u8], bool)> = Vec::new();
        let mut udf = false;
        for sector in 16..64 {
            let Some(descriptor) = bytes.get(sector * SECTOR..(sector + 1) * SECTOR) else {
                break;
            };
            match &descriptor[1..6] {
                b"CD001" => match descriptor[0] {
                    1 => roots.push((&descriptor[156..190], false)),
                    2 => {
                        let escape = &descriptor[88..91];
                        let joliet = matches!(escape, b"%/@" | b"%/C" | b"%/E");
                        roots.push((&descriptor[156..190], joliet));
                    }
                    255 => {}
                    _ => {}
                },
                b"NSR02" | b"NSR03" => udf = true,
                b"BEA01" | b"TEA01" | b"BOOT2" | b"CDW02" => {}
                _ => break,
            }
        }
        if roots.is_empty() {
            return Err("damaged (no volume descriptor)".into());
        }
        let mut iso = Iso {
            bytes,
            entries: Vec::new(),
            extents: Vec::new(),
            unseen: Vec::new(),
        };
        if udf {
            iso.unseen
                .push("a UDF file system, which Windows reads and the engine does not".into());
        }
        // Files by extent: the hierarchies share them.
        let mut files: BTreeMap<(usize, usize), Entry> = BTreeMap::new();
        let mut visited = std::collections::HashSet::new();
        for (root, joliet) in roots {
            let mut walk = Hierarchy {
                bytes,
                joliet,
                files: &mut files,
                visited: &mut visited,
                unseen: &mut iso.unseen,
                count: 0,
            };
            if let Some(record) = DirEntry::parse(root) {
                walk.directory(&record, "", 0);
            }
        }
        for ((start, len), entry) in files {
            iso.entries.push(entry);
            iso.extents.push((start, len));
        }
        Ok(iso)
    }
}

impl<'a> Container<'a> for Iso<'a> {
    fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn open(&mut self, index: usize, _: &mut Budget) -> Result<Cow<'a, [u8]>, String> {
        let (start, len) = self.extents[index];
        self.bytes
            .get(start..start + len)
            .map(Cow::Borrowed)
            .ok_or_else(|| "damaged (a file past the end of the image)".into())
    }

    fn unseen(&self) -> Vec<String> {
        self.unseen.clone()
    }
}

/// A directory record.
struct DirEntry<'r> {
    extent: usize,
    size: usize,
    flags: u8,
    name: &'r [u8],
    system_use: &'r [u8],
}

impl<'r> DirEntry<'r> {
    fn parse(raw: &'r [u8]) -> Option<DirEntry<'r>> {
        let len = *raw.first()? as usize;
        let name_len = *raw.get(32)? as usize;
        let name = raw.get(33..33 + name_len)?;
        let padding = usize::from(name_len.is_multiple_of(2));
        let system_use = raw.get(33 + name_len + padding..len).unwrap_or(&[]);
        Some(DirEntry {
            extent: raw.le32(2)? as usize,
            size: raw.le32(10)? as usize,
            flags: *raw.get(25)?,
            name,
            system_use,
        })
    }
}

struct Hierarchy<'w, 'a> {
    bytes: &'a [u8],
    joliet: bool,
    files: &'w mut BTreeMap<(usize, usize), Entry>,
    visited: &'w mut std::collections::HashSet<(usize, bool)>,
    unseen: &'w mut Vec<String>,
    count: usize,
}

impl Hierarchy<'_, '_> {
    fn directory(&mut self, record: &DirEntry<'_>, path: &str, depth: usize) {
        if depth > MAX_DEPTH || !self.visited.insert((record.extent, self.joliet)) {
            return;
        }
        let start = record.extent.saturating_mul(SECTOR);
        let Some(data) = self.bytes.get(start..start.saturating_add(record.size)) else {
            self.unseen
                .push(format!("damaged (the directory {path}/ past the end)"));
            return;
        };
        let mut pos = 0;
        while pos < data.len() {
            let len = data[pos] as usize;
            if len == 0 {
                // Records do not cross sectors: the rest of this one is padding.
                pos = (pos / SECTOR + 1) * SECTOR;
                continue;
            }
            let Some(child) = data.get(pos..pos + len).and_then(DirEntry::parse) else {
                self.unseen.push(format!("damaged (a record in {path}/)"));
                return;
            };
            pos += len;
            if child.name == b"\0" || child.name == b"\x01" {
                continue; // . and ..
            }
            self.count += 1;
            if self.count > 100_000 {
                self.unseen.push("more than 100000 records".into());
                return;
            }
            let mut names = vec![self.name_of(child.name)];
            if let Some(long) = rock_ridge_name(child.system_use) {
                names.push(long);
            }
            if child.flags & 0x02 != 0 {
                let sub = format!("{path}/{}", names.last().expect("one name at least"));
                self.directory(&child, &sub, depth + 1);
                continue;
            }
            if child.flags & 0x80 != 0 {
                self.unseen
                    .push(format!("{path}/{}: a file in several extents", names[0]));
                continue;
            }
            let key = (child.extent.saturating_mul(SECTOR), child.size);
            let entry = self.files.entry(key).or_default();
            entry.size = Some(child.size as u64);
            for name in names {
                entry.also(
                    format!("{}/{name}", path.trim_start_matches('/'))
                        .trim_start_matches('/')
                        .to_string(),
                );
            }
        }
    }

    fn name_of(&self, raw: &[u8]) -> String {
        let name = if self.joliet {
            super::utf16be(raw)
        } else {
            String::from_utf8_lossy(raw).into_owned()
        };
        // `NAME.EXE;1`: the version is not part of the name.
        match name.rsplit_once(';') {
            Some((base, version)) if version.chars().all(|c| c.is_ascii_digit()) => {
                base.to_string()
            }
            _ => name,
        }
    }
}

/// Rock Ridge's alternate name (`NM` entries of the system use area, joined).
fn rock_ridge_name(system_use: &[u8]) -> Option<String> {
    let mut name = Vec::new();
    let mut pos = 0;
    while pos + 4 <= system_use.len() {
        let signature = &system_use[pos..pos + 2];
        let len = system_use[pos + 2] as usize;
        if len < 4 {
            break;
        }
        let Some(entry) = system_use.get(pos..pos + len) else {
            break;
        };
        if signature == b"NM" && entry.len() > 5 {
            name.extend_from_slice(&entry[5..]);
        }
        pos += len;
    }
    (!name.is_empty()).then(|| String::from_utf8_lossy(&name).into_owned())
}
