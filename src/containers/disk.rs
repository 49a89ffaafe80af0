//! Disk images, which Windows mounts with a double click: a virtual disk (VHD
//! fixed or dynamic, VHDX) holds a disk; a disk (MBR or GPT) holds partitions;
//! a partition holds a file system, of which FAT is read here (with its long and
//! short names both). Each layer is one container whose entries the walk
//! identifies again, so a FAT image inside a VHD inside a zip is read through.
//! NTFS, exFAT and differencing disks are known and not read: unseen.

use std::borrow::Cow;
use std::collections::HashSet;

use super::{Budget, Container, Entry, Fields};
use crate::filetype::FileType;

const SECTOR: usize = 512;
/// Directories nested deeper than this are not followed.
const MAX_DEPTH: usize = 32;

pub struct Disk<'a> {
    entries: Vec<Entry>,
    contents: Vec<Data<'a>>,
    unseen: Vec<String>,
    fat: Option<Fat<'a>>,
}

enum Data<'a> {
    Slice(&'a [u8]),
    Owned(Option<Vec<u8>>),
    /// A FAT file: its first cluster and size.
    FatFile(u32, u32),
    Unread(String),
}

impl<'a> Disk<'a> {
    pub fn read(kind: FileType, bytes: &'a [u8], budget: &mut Budget) -> Result<Disk<'a>, String> {
        let mut disk = Disk {
            entries: Vec::new(),
            contents: Vec::new(),
            unseen: Vec::new(),
            fat: None,
        };
        match kind {
            FileType::Fat => {
                let fat = Fat::read(bytes)?;
                let mut files = Vec::new();
                let mut visited = HashSet::new();
                fat.walk(
                    fat.root(),
                    "",
                    0,
                    &mut files,
                    &mut visited,
                    &mut disk.unseen,
                );
                for (entry, cluster, size) in files {
                    disk.entries.push(entry);
                    disk.contents.push(Data::FatFile(cluster, size));
                }
                disk.fat = Some(fat);
            }
            FileType::Disk => disk.partitions(bytes)?,
            FileType::Vhd => disk.vhd(bytes, budget)?,
            FileType::Vhdx => {
                return Err("a VHDX virtual disk, which the engine does not read".into());
            }
            other => return Err(format!("{} is not a disk image", other.name())),
        }
        Ok(disk)
    }

    fn push(&mut self, name: String, content: Data<'a>) {
        self.entries.push(Entry::named(name));
        self.contents.push(content);
    }

    /// The partitions of an MBR (with its logical partitions) or GPT disk.
    fn partitions(&mut self, bytes: &'a [u8]) -> Result<(), String> {
        let mut found: Vec<(u64, u64)> = Vec::new();
        if bytes.get(512..520) == Some(b"EFI PART") {
            let table = bytes.le64(512 + 72).unwrap_or(0);
            let count = bytes.le32(512 + 80).unwrap_or(0).min(1024) as u64;
            let size = bytes.le32(512 + 84).unwrap_or(128) as u64;
            for i in 0..count {
                let at = table
                    .saturating_mul(SECTOR as u64)
                    .saturating_add(i.saturating_mul(size))
                    .min(usize::MAX as u64) as usize;
                let Some(entry) = bytes.get(at..at.saturating_add(128)) else {
                    break;
                };
                if entry[..16].iter().all(|&b| b == 0) {
                    continue;
                }
                let first = entry.le64(32).unwrap_or(0);
                let last = entry.le64(40).unwrap_or(0);
                found.push((first, last.saturating_sub(first) + 1));
            }
        } else {
            let mut extended: Option<u64> = None;
            for slot in 0..4 {
                let at = 446 + slot * 16;
                let kind = bytes.u8_at(at + 4).unwrap_or(0);
                let start = u64::from(bytes.le32(at + 8).unwrap_or(0));
                let sectors = u64::from(bytes.le32(at + 12).unwrap_or(0));
                match kind {
                    0 => {}
                    0x05 | 0x0f | 0x85 => extended = Some(start),
                    0xee => return Err("damaged (a protective MBR without a GPT)".into()),
                    _ => found.push((start, sectors)),
                }
            }
            // Logical partitions: a chain of extended boot records.
            if let Some(base) = extended {
                let mut next = base;
                for _ in 0..128 {
                    let at = next.saturating_mul(SECTOR as u64).min(usize::MAX as u64) as usize;
                    let Some(record) = bytes.get(at..at.saturating_add(SECTOR)) else {
                        break;
                    };
                    if record[510..512] != [0x55, 0xaa] {
                        break;
                    }
                    let start = u64::from(record.le32(446 + 8).unwrap_or(0));
                    let sectors = u64::from(record.le32(446 + 12).unwrap_or(0));
                    if record[446 + 4] != 0 {
                        found.push((next + start, sectors));
                    }
                    let link = u64::from(record.le32(462 + 8).unwrap_or(0));
                    if record[462 + 4] == 0 || link == 0 {
                        break;
                    }
                    next = base + link;
                }
            }
        }
        for (n, (start, sectors)) in found.into_iter().enumerate() {
            let from = start.saturating_mul(SECTOR as u64);
            let len = sectors.saturating_mul(SECTOR as u64);
            let name = format!("partition {}", n + 1);
            match super::span(bytes, from, len, "a partition") {
                Ok(slice) => self.push(name, Data::Slice(slice)),
                Err(why) => {
                    // A partition cut short still holds what it holds.
                    match bytes.get(from as usize..) {
                        Some(rest) if !rest.is_empty() => {
                            self.unseen.push(format!("{name}: {why}"));
                            self.push(name, Data::Slice(rest));
                        }
                        _ => self.push(name, Data::Unread(why)),
                    }
                }
            }
        }
        Ok(())
    }

    /// A VHD: fixed (the disk, then a footer) or dynamic (blocks through a table).
    fn vhd(&mut self, bytes: &'a [u8], budget: &mut Budget) -> Result<(), String> {
        let footer_at = bytes.len().checked_sub(512).ok_or("damaged (too short)")?;
        let footer = if bytes.get(footer_at..footer_at + 8) == Some(b"conectix") {
            &bytes[footer_at..]
        } else {
            bytes.get(..512).ok_or("damaged (too short)")?
        };
        let kind = footer.be32(60).unwrap_or(0);
        let size = footer.be64(48).unwrap_or(0);
        match kind {
            2 => {
                let end = if footer_at > 0 && &bytes[footer_at..footer_at + 8] == b"conectix" {
                    footer_at
                } else {
                    bytes.len()
                };
                self.push("disk".into(), Data::Slice(&bytes[..end]));
            }
            3 => {
                let header_at = footer.be64(16).unwrap_or(0) as usize;
                let header = bytes
                    .get(header_at..header_at.saturating_add(1024))
                    .filter(|h| h.starts_with(b"cxsparse"))
                    .ok_or("damaged (no dynamic disk header)")?;
                let table = header.be64(16).unwrap_or(0) as usize;
                let entries = header.be32(28).unwrap_or(0) as usize;
                let block = header.be32(32).unwrap_or(0) as usize;
                if block == 0 || !block.is_multiple_of(SECTOR) {
                    return Err("damaged (a block size that is not whole sectors)".into());
                }
                let size = usize::try_from(size).map_err(|_| budget.spent())?;
                if let Err(why) = budget.take(size) {
                    self.push(
                        "disk".into(),
                        Data::Unread(format!("a virtual disk of {size} bytes: {why}")),
                    );
                    return Ok(());
                }
                let mut disk = vec![0u8; size];
                let bitmap = (block / SECTOR).div_ceil(8).div_ceil(SECTOR) * SECTOR;
                for i in 0..entries.min(size.div_ceil(block)) {
                    let sector = bytes.be32(table.saturating_add(i * 4)).unwrap_or(u32::MAX);
                    if sector == u32::MAX {
                        continue;
                    }
                    let from = (sector as usize)
                        .saturating_mul(SECTOR)
                        .saturating_add(bitmap);
                    let to = (i * block + block).min(size);
                    let want = to - i * block;
                    let data = bytes
                        .get(from..from.saturating_add(want))
                        .ok_or("damaged (a block past the end)")?;
                    disk[i * block..to].copy_from_slice(data);
                }
                self.push("disk".into(), Data::Owned(Some(disk)));
            }
            4 => return Err("a differencing disk, whose data is in another file".into()),
            other => return Err(format!("damaged (a VHD of type {other})")),
        }
        Ok(())
    }
}

impl<'a> Container<'a> for Disk<'a> {
    fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn open(&mut self, index: usize, budget: &mut Budget) -> Result<Cow<'a, [u8]>, String> {
        match &mut self.contents[index] {
            Data::Slice(slice) => Ok(Cow::Borrowed(*slice)),
            Data::Owned(bytes) => bytes
                .take()
                .map(Cow::Owned)
                .ok_or_else(|| "opened twice".into()),
            Data::FatFile(cluster, size) => {
                let fat = self.fat.as_ref().expect("FAT files come from a FAT");
                fat.file(*cluster, *size, budget).map(Cow::Owned)
            }
            Data::Unread(why) => Err(why.clone()),
        }
    }

    fn unseen(&self) -> Vec<String> {
        self.unseen.clone()
    }
}

/// A FAT12, FAT16 or FAT32 file system.
struct Fat<'a> {
    bytes: &'a [u8],
    bits: u8,
    bytes_per_sector: usize,
    sectors_per_cluster: usize,
    fat_start: usize,
    root_start: usize,
    root_entries: usize,
    root_cluster: u32,
    data_start: usize,
    clusters: u32,
}

/// Where a directory's entries are.
enum Dir {
    Fixed(usize, usize),
    Chain(u32),
}

impl<'a> Fat<'a> {
    fn read(bytes: &'a [u8]) -> Result<Fat<'a>, String> {
        let bps = bytes.le16(11).unwrap_or(0) as usize;
        let spc = bytes.u8_at(13).unwrap_or(0) as usize;
        let reserved = bytes.le16(14).unwrap_or(0) as usize;
        let fats = bytes.u8_at(16).unwrap_or(0) as usize;
        let root_entries = bytes.le16(17).unwrap_or(0) as usize;
        let total = match bytes.le16(19).unwrap_or(0) {
            0 => bytes.le32(32).unwrap_or(0) as usize,
            n => n as usize,
        };
        let fat_size = match bytes.le16(22).unwrap_or(0) {
            0 => bytes.le32(36).unwrap_or(0) as usize,
            n => n as usize,
        };
        if bps == 0 || spc == 0 || fat_size == 0 {
            return Err("damaged (a boot sector that does not add up)".into());
        }
        let root_sectors = (root_entries * 32).div_ceil(bps);
        let first_data = reserved + fats * fat_size + root_sectors;
        let clusters = (total.saturating_sub(first_data) / spc) as u32;
        let bits = if clusters < 4085 {
            12
        } else if clusters < 65525 {
            16
        } else {
            32
        };
        Ok(Fat {
            bytes,
            bits,
            bytes_per_sector: bps,
            sectors_per_cluster: spc,
            fat_start: reserved * bps,
            root_start: (reserved + fats * fat_size) * bps,
            root_entries,
            root_cluster: bytes.le32(44).unwrap_or(2),
            data_start: first_data * bps,
            clusters,
        })
    }

    fn root(&self) -> Dir {
        if self.bits == 32 {
            Dir::Chain(self.root_cluster)
        } else {
            Dir::Fixed(self.root_start, self.root_entries * 32)
        }
    }

    fn next(&self, cluster: u32) -> Option<u32> {
        let c = cluster as usize;
        let (value, end) = match self.bits {
            12 => {
                let raw = self.bytes.le16(self.fat_start + c + c / 2)?;
                let value = if c % 2 == 1 { raw >> 4 } else { raw & 0xfff };
                (u32::from(value), 0xff7)
            }
            16 => (u32::from(self.bytes.le16(self.fat_start + c * 2)?), 0xfff7),
            _ => (
                self.bytes.le32(self.fat_start + c * 4)? & 0x0fff_ffff,
                0x0fff_fff7,
            ),
        };
        (value >= 2 && value < end && value < self.clusters + 2).then_some(value)
    }

    fn cluster(&self, cluster: u32) -> Option<&'a [u8]> {
        let size = self.bytes_per_sector * self.sectors_per_cluster;
        let at = self.data_start + (cluster.checked_sub(2)? as usize) * size;
        self.bytes.get(at..at + size)
    }

    /// The clusters of a chain, a loop cut where it closes.
    fn chain(&self, first: u32) -> Vec<u32> {
        let mut seen = HashSet::new();
        let mut chain = Vec::new();
        let mut current = Some(first).filter(|&c| c >= 2 && c < self.clusters + 2);
        while let Some(c) = current {
            if !seen.insert(c) {
                break;
            }
            chain.push(c);
            current = self.next(c);
        }
        chain
    }

    fn dir_bytes(&self, dir: &Dir) -> Vec<u8> {
        match dir {
            Dir::Fixed(at, len) => self.bytes.get(*at..at + len).unwrap_or(&[]).to_vec(),
            Dir::Chain(first) => self
                .chain(*first)
                .into_iter()
                .filter_map(|c| self.cluster(c))
                .flatten()
                .copied()
                .collect(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        dir: Dir,
        path: &str,
        depth: usize,
        files: &mut Vec<(Entry, u32, u32)>,
        visited: &mut HashSet<u32>,
        unseen: &mut Vec<String>,
    ) {
        if depth > MAX_DEPTH {
            unseen.push(format!("{path}: directories nested too deep"));
            return;
        }
        let data = self.dir_bytes(&dir);
        let mut long: Vec<(u8, Vec<u16>)> = Vec::new();
        let mut long_sum = 0u8;
        for record in data.chunks_exact(32) {
            match record[0] {
                0x00 => break,
                0xe5 => {
                    long.clear();
                    continue;
                }
                _ => {}
            }
            let attributes = record[11];
            if attributes == 0x0f {
                let order = record[0] & 0x1f;
                long_sum = record[13];
                let mut units = Vec::with_capacity(13);
                for range in [1..11, 14..26, 28..32] {
                    units.extend(
                        record[range]
                            .chunks_exact(2)
                            .map(|c| u16::from_le_bytes([c[0], c[1]])),
                    );
                }
                long.push((order, units));
                continue;
            }
            if attributes & 0x08 != 0 {
                long.clear();
                continue;
            }
            let short = short_name(&record[..11]);
            let mut names = Vec::new();
            if !long.is_empty() && long_sum == checksum(&record[..11]) {
                long.sort_by_key(|(order, _)| *order);
                let units: Vec<u16> = long
                    .iter()
                    .flat_map(|(_, u)| u.iter().copied())
                    .take_while(|&u| u != 0 && u != 0xffff)
                    .collect();
                names.push(String::from_utf16_lossy(&units));
            }
            long.clear();
            names.push(short.clone());
            if short == "." || short == ".." {
                continue;
            }
            let cluster = (u32::from(record.le16(20).unwrap_or(0)) << 16)
                | u32::from(record.le16(26).unwrap_or(0));
            let full = |name: &str| {
                if path.is_empty() {
                    name.to_string()
                } else {
                    format!("{path}/{name}")
                }
            };
            if attributes & 0x10 != 0 {
                if visited.insert(cluster) {
                    self.walk(
                        Dir::Chain(cluster),
                        &full(&names[0]),
                        depth + 1,
                        files,
                        visited,
                        unseen,
                    );
                }
                continue;
            }
            let mut entry = Entry::default();
            for name in &names {
                entry.also(full(name));
            }
            let size = record.le32(28).unwrap_or(0);
            entry.size = Some(u64::from(size));
            files.push((entry, cluster, size));
            if files.len() > 100_000 {
                unseen.push("more than 100000 files".into());
                return;
            }
        }
    }

    fn file(&self, first: u32, size: u32, budget: &mut Budget) -> Result<Vec<u8>, String> {
        budget.take(size as usize)?;
        let mut out = Vec::with_capacity(size.min(1 << 20) as usize);
        for c in self.chain(first) {
            if out.len() >= size as usize {
                break;
            }
            out.extend_from_slice(self.cluster(c).ok_or("damaged (a cluster past the end)")?);
        }
        if out.len() < size as usize {
            return Err("damaged (a file longer than its clusters)".into());
        }
        out.truncate(size as usize);
        Ok(out)
    }
}

/// `NAME    EXT` as `NAME.EXT`.
fn short_name(raw: &[u8]) -> String {
    let mut base = raw[..8].to_vec();
    if base[0] == 0x05 {
        base[0] = 0xe5;
    }
    let base = super::legacy_text(&base).trim_end().to_string();
    let ext = super::legacy_text(&raw[8..11]).trim_end().to_string();
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

/// The checksum a long name carries of its short name.
fn checksum(short: &[u8]) -> u8 {
    short.iter().fold(0u8, |sum, &b| {
        ((sum & 1) << 7).wrapping_add(sum >> 1).wrapping_add(b)
    })
}
