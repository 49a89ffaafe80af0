//! Zip, read both ways. Extractors read a zip in one of two ways: from its central
//! directory at the end (7-Zip, unzip, Windows, Python's zipfile) or from its
//! local file headers in order from the start (streaming readers such as bsdtar's
//! and Java's). An attacker who makes the two disagree — a local header that names
//! another file than the directory, two zips glued together, bytes before the
//! first entry or between entries, a second end record — delivers one file to one
//! reader and another to the other. Every such disagreement is an ambiguity;
//! every name either reading gives is judged.
//!
//! The decompressors are the well-kept Rust ones: deflate (flate2 on
//! miniz_oxide), bzip2 (libbz2-rs), LZMA and xz (lzma-rust2), zstd (ruzstd).
//!
//! One file on purpose: the two readings and their comparison are the reader;
//! split apart, either reading looks complete on its own while the safety is in
//! comparing them. A fifth of the length is its tests.

use std::borrow::Cow;

use super::{Budget, Container, Entry, Fields, legacy_text};

const LOCAL: &[u8] = b"PK\x03\x04";
const CENTRAL: &[u8] = b"PK\x01\x02";
const END: &[u8] = b"PK\x05\x06";
const END64: &[u8] = b"PK\x06\x06";
const END64_LOCATOR: &[u8] = b"PK\x06\x07";
const DESCRIPTOR: &[u8] = b"PK\x07\x08";
/// An end record's comment is at most this long: the record is this near the end.
const END_WINDOW: usize = 22 + 65535;

/// A zip opened for reading.
pub struct Zip<'a> {
    bytes: &'a [u8],
    entries: Vec<Entry>,
    items: Vec<Stored>,
    ambiguities: Vec<String>,
    unseen: Vec<String>,
}

/// Where an entry's data is and how it is stored.
#[derive(Debug, Clone)]
struct Stored {
    data: std::ops::Range<usize>,
    method: u16,
    flags: u16,
    crc: u32,
    size: u64,
}

/// One central directory record.
#[derive(Debug, Clone)]
struct Central {
    flags: u16,
    method: u16,
    crc: u32,
    compressed: u64,
    size: u64,
    local: u64,
    name: Vec<u8>,
    unicode_name: Option<String>,
    zip64: bool,
}

/// A local file header.
#[derive(Debug, Clone)]
struct Local {
    flags: u16,
    method: u16,
    crc: u32,
    compressed: u64,
    size: u64,
    name: Vec<u8>,
    unicode_name: Option<String>,
    /// Where its data begins.
    data: usize,
}

impl<'a> Zip<'a> {
    pub fn read(bytes: &'a [u8]) -> Result<Zip<'a>, String> {
        let mut zip = Zip {
            bytes,
            entries: Vec::new(),
            items: Vec::new(),
            ambiguities: Vec::new(),
            unseen: Vec::new(),
        };
        let Some((end, others)) = zip.end_record() else {
            if bytes.starts_with(LOCAL) {
                // Streaming readers extract it; directory readers refuse it.
                zip.ambiguities
                    .push("a zip without a central directory".into());
                zip.local_only();
                return Ok(zip);
            }
            return Err("damaged (no end of central directory)".into());
        };
        let records = zip.directory(&end)?;
        zip.match_local_headers(&records, end.shift);
        let spans = zip.check_coverage(&records, &end);
        // Readers search for the end record from the end; another plausible one
        // outside every entry (a stored zip inside holds its own) is a second
        // archive, or a comment faking one: which one wins differs between readers.
        if others.iter().any(|other| {
            !spans
                .iter()
                .any(|(start, stop)| (*start..*stop).contains(&other.record))
        }) {
            zip.ambiguities
                .push("more than one end of central directory".into());
        }
        Ok(zip)
    }

    /// The end of central directory record (zip64's when there is one), the
    /// other plausible ones before it, and ambiguities about it.
    fn end_record(&mut self) -> Option<(End, Vec<End>)> {
        let bytes = self.bytes;
        let from = bytes.len().saturating_sub(END_WINDOW);
        let mut found: Vec<End> = memchr::memmem::rfind_iter(&bytes[from..], END)
            .filter_map(|at| End::parse(bytes, from + at))
            .collect();
        if found.is_empty() {
            return None;
        }
        let end = found.remove(0);
        if end.reaches_end != bytes.len() {
            self.ambiguities
                .push("data after the end of the archive".into());
        }
        if end.disk != 0 {
            self.unseen.push("a part of a multi-volume archive".into());
        }
        Some((end, found))
    }

    /// The central directory's records.
    fn directory(&mut self, end: &End) -> Result<Vec<Central>, String> {
        let bytes = self.bytes;
        let mut records = Vec::new();
        let mut pos = end.directory;
        let stop = end.directory + end.directory_size;
        while pos < stop {
            if bytes.get(pos..pos + 4) != Some(CENTRAL) {
                self.ambiguities
                    .push("the central directory holds something that is not an entry".into());
                break;
            }
            let field = |at: usize| bytes.le16(pos + at);
            let (Some(name_len), Some(extra_len), Some(comment_len)) =
                (field(28), field(30), field(32))
            else {
                return Err("damaged (a directory record goes past the end)".into());
            };
            let name_at = pos + 46;
            let extra_at = name_at + name_len as usize;
            let next = extra_at + extra_len as usize + comment_len as usize;
            let (Some(name), Some(extra)) = (
                bytes.slice(name_at, name_len as usize),
                bytes.slice(extra_at, extra_len as usize),
            ) else {
                return Err("damaged (a directory record goes past the end)".into());
            };
            let mut record = Central {
                flags: field(8).unwrap_or(0),
                method: field(10).unwrap_or(0),
                crc: bytes.le32(pos + 16).unwrap_or(0),
                compressed: u64::from(bytes.le32(pos + 20).unwrap_or(0)),
                size: u64::from(bytes.le32(pos + 24).unwrap_or(0)),
                local: u64::from(bytes.le32(pos + 42).unwrap_or(0)),
                name: name.to_vec(),
                unicode_name: unicode_path(extra, name),
                zip64: false,
            };
            record.zip64 = zip64_extra(
                extra,
                [
                    Some(&mut record.size),
                    Some(&mut record.compressed),
                    Some(&mut record.local),
                ],
            );
            records.push(record);
            pos = next;
            if records.len() > 1_000_000 {
                return Err("damaged (more than a million directory records)".into());
            }
        }
        if records.len() as u64 != end.entries {
            self.ambiguities.push(format!(
                "the end record counts {} entries, the directory holds {}",
                end.entries,
                records.len()
            ));
        }
        let mut names: Vec<&[u8]> = records.iter().map(|r| r.name.as_slice()).collect();
        names.sort_unstable();
        if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
            self.ambiguities.push(format!(
                "two entries named {}",
                String::from_utf8_lossy(twice[0])
            ));
        }
        Ok(records)
    }

    /// Each record's local header, compared with it: names, method, sizes.
    fn match_local_headers(&mut self, records: &[Central], shift: usize) {
        for (index, record) in records.iter().enumerate() {
            let at = record.local as usize + shift;
            let Some(local) = Local::parse(self.bytes, at) else {
                self.unseen.push(format!(
                    "entry {} ({}): no local header where the directory points",
                    index + 1,
                    String::from_utf8_lossy(&record.name)
                ));
                continue;
            };
            let mut entry = Entry::named(decode_name(&record.name, record.flags));
            entry.size = Some(record.size);
            entry.also(decode_name(&local.name, local.flags));
            for unicode in [&record.unicode_name, &local.unicode_name]
                .into_iter()
                .flatten()
            {
                entry.also(unicode.clone());
            }
            let label = entry.names[0].clone();
            let mut differ = |what: &str| {
                self.ambiguities.push(format!(
                    "{label}: the local header and the central directory give different {what}"
                ));
            };
            if local.name != record.name {
                differ("names");
            }
            if local.method != record.method {
                differ("methods");
            }
            if (local.flags ^ record.flags) & 1 != 0 {
                differ("encryption");
            }
            if local.flags & 8 == 0
                && (local.crc != record.crc
                    || local.compressed != record.compressed
                    || local.size != record.size)
            {
                differ("sizes");
            }
            let directory = record.name.ends_with(b"/") && record.size == 0;
            let data = local.data..local.data.saturating_add(record.compressed as usize);
            if data.end > self.bytes.len() {
                self.unseen
                    .push(format!("{label}: damaged (its data goes past the end)"));
                continue;
            }
            if directory {
                continue;
            }
            self.entries.push(entry);
            self.items.push(Stored {
                data,
                method: record.method,
                flags: record.flags | local.flags,
                crc: record.crc,
                size: record.size,
            });
        }
    }

    /// Read from the start, as a streaming reader does: local headers one after
    /// another, each followed by its data, then the directory. Bytes that belong
    /// to no entry — before the first, between two, a local header the directory
    /// does not list — are read by some readers and not others.
    /// Returns where the entries are.
    fn check_coverage(&mut self, records: &[Central], end: &End) -> Vec<(usize, usize)> {
        let bytes = self.bytes;
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for record in records {
            let at = record.local as usize + end.shift;
            let Some(local) = Local::parse(bytes, at) else {
                continue;
            };
            let mut stop = local.data.saturating_add(record.compressed as usize);
            if local.flags & 8 != 0 {
                stop += descriptor_len(bytes, stop, record.zip64);
            }
            spans.push((at, stop));
        }
        spans.sort_unstable();
        let mut pos = 0;
        for &(start, stop) in &spans {
            if start < pos {
                self.ambiguities.push("entries that overlap".into());
            } else if start > pos {
                self.gap(pos, start, pos == 0);
            }
            pos = pos.max(stop);
        }
        if end.directory < pos {
            self.ambiguities
                .push("entries that overlap the central directory".into());
        } else if end.directory > pos {
            self.gap(pos, end.directory, pos == 0);
        }
        let after_directory = end.directory + end.directory_size;
        if end.record > after_directory && !end.zip64 {
            self.ambiguities
                .push("bytes between the central directory and its end record".into());
        }
        spans
    }

    fn gap(&mut self, from: usize, to: usize, first: bool) {
        let hidden = memchr::memmem::find(&self.bytes[from..to], LOCAL).is_some();
        self.ambiguities.push(
            match (hidden, first) {
                (true, _) => "a local entry that the central directory does not list",
                (false, true) => "data before the first entry",
                (false, false) => "bytes between entries",
            }
            .into(),
        );
    }

    /// A zip with local headers only: what a streaming reader finds.
    fn local_only(&mut self) {
        let mut pos = 0;
        while let Some(local) = Local::parse(self.bytes, pos) {
            if local.flags & 8 != 0 {
                self.unseen
                    .push("an entry whose size only a central directory could tell".into());
                return;
            }
            let stop = local.data.saturating_add(local.compressed as usize);
            if stop > self.bytes.len() {
                self.unseen.push("damaged (data past the end)".into());
                return;
            }
            let mut entry = Entry::named(decode_name(&local.name, local.flags));
            entry.size = Some(local.size);
            if let Some(unicode) = &local.unicode_name {
                entry.also(unicode.clone());
            }
            if !(local.name.ends_with(b"/") && local.size == 0) {
                self.entries.push(entry);
                self.items.push(Stored {
                    data: local.data..stop,
                    method: local.method,
                    flags: local.flags,
                    crc: local.crc,
                    size: local.size,
                });
            }
            pos = stop;
        }
    }
}

impl<'a> Container<'a> for Zip<'a> {
    fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn open(&mut self, index: usize, budget: &mut Budget) -> Result<Cow<'a, [u8]>, String> {
        let item = self.items[index].clone();
        if item.flags & 1 != 0 || item.method == 99 {
            return Err("encrypted".into());
        }
        let data = &self.bytes[item.data.clone()];
        let declared = Some(item.size);
        let out: Cow<'a, [u8]> = match item.method {
            0 => {
                if data.len() as u64 != item.size {
                    return Err("damaged (a stored entry whose sizes differ)".into());
                }
                Cow::Borrowed(data)
            }
            8 => {
                let mut decoder = flate2::bufread::DeflateDecoder::new(data);
                let out = budget.read_all(&mut decoder, declared)?;
                if !decoder.get_ref().is_empty() {
                    // A streaming reader would look for the next entry here.
                    self.ambiguities.push(format!(
                        "{}: its compressed data ends before the size the directory gives",
                        self.entries[index].names[0]
                    ));
                }
                Cow::Owned(out)
            }
            12 => Cow::Owned(budget.read_all(bzip2::read::BzDecoder::new(data), declared)?),
            14 => Cow::Owned(read_lzma(data, item.size, budget)?),
            93 => {
                let decoder = ruzstd::decoding::StreamingDecoder::new(data)
                    .map_err(|e| format!("damaged ({e})"))?;
                Cow::Owned(budget.read_all(decoder, declared)?)
            }
            95 => Cow::Owned(budget.read_all(
                lzma_rust2::XzReader::new_mem_limit(
                    data,
                    true,
                    (super::DECODER_MEMORY / 1024) as u32,
                ),
                declared,
            )?),
            9 => return Err("compressed with Deflate64, which the engine does not read".into()),
            method => {
                return Err(format!(
                    "compressed with method {method}, which the engine does not read"
                ));
            }
        };
        if crc32fast::hash(&out) != item.crc {
            return Err("damaged (its checksum does not match)".into());
        }
        Ok(out)
    }

    fn unseen(&self) -> Vec<String> {
        self.unseen.clone()
    }

    fn ambiguities(&self) -> Vec<String> {
        self.ambiguities.clone()
    }

    fn holds_macros(&self) -> bool {
        self.entries.iter().any(|entry| {
            entry.names.iter().any(|name| {
                name.rsplit(['/', '\\'])
                    .next()
                    .is_some_and(|base| base.eq_ignore_ascii_case("vbaProject.bin"))
            })
        })
    }
}

/// The end of central directory, zip64's values in place when it has them.
#[derive(Debug, Clone)]
struct End {
    /// Where the (32-bit) end record is.
    record: usize,
    disk: u16,
    entries: u64,
    /// Where the directory really is, and its size.
    directory: usize,
    directory_size: usize,
    /// How far the directory is from where the record says it is: bytes before
    /// the archive (a self-extractor's program, a file glued in front).
    shift: usize,
    /// Where the record and its comment end.
    reaches_end: usize,
    zip64: bool,
}

impl End {
    fn parse(bytes: &[u8], pos: usize) -> Option<End> {
        let disk = bytes.le16(pos + 4)?;
        let mut entries = u64::from(bytes.le16(pos + 10)?);
        let mut size = u64::from(bytes.le32(pos + 12)?);
        let mut offset = u64::from(bytes.le32(pos + 16)?);
        let comment = bytes.le16(pos + 20)? as usize;
        let mut directory_end = pos;
        let mut zip64 = false;
        if (entries == 0xffff || size == 0xffff_ffff || offset == 0xffff_ffff)
            && pos >= 20
            && bytes.get(pos - 20..pos - 16) == Some(END64_LOCATOR)
        {
            // Where the zip64 record is really: just before its locator.
            let real = (pos - 20).checked_sub(56)?;
            if bytes.get(real..real + 4) == Some(END64) {
                entries = bytes.le64(real + 32)?;
                size = bytes.le64(real + 40)?;
                offset = bytes.le64(real + 48)?;
                directory_end = real;
                zip64 = true;
            }
        }
        let size = usize::try_from(size).ok()?;
        let directory = directory_end.checked_sub(size)?;
        let shift = directory.checked_sub(usize::try_from(offset).ok()?)?;
        if size > 0 && bytes.get(directory..directory + 4) != Some(CENTRAL) {
            return None;
        }
        Some(End {
            record: pos,
            disk,
            entries,
            directory,
            directory_size: size,
            shift,
            reaches_end: pos + 22 + comment,
            zip64,
        })
    }
}

impl Local {
    fn parse(bytes: &[u8], at: usize) -> Option<Local> {
        if bytes.get(at..at + 4) != Some(LOCAL) {
            return None;
        }
        let name_len = bytes.le16(at + 26)? as usize;
        let extra_len = bytes.le16(at + 28)? as usize;
        let name = bytes.slice(at + 30, name_len)?;
        let extra = bytes.slice(at + 30 + name_len, extra_len)?;
        let mut local = Local {
            flags: bytes.le16(at + 6)?,
            method: bytes.le16(at + 8)?,
            crc: bytes.le32(at + 14)?,
            compressed: u64::from(bytes.le32(at + 18)?),
            size: u64::from(bytes.le32(at + 22)?),
            name: name.to_vec(),
            unicode_name: unicode_path(extra, name),
            data: at + 30 + name_len + extra_len,
        };
        zip64_extra(
            extra,
            [Some(&mut local.size), Some(&mut local.compressed), None],
        );
        Some(local)
    }
}

/// The zip64 extended information field: the values that were saturated in the
/// header, in order. Returns whether there was one.
fn zip64_extra(extra: &[u8], mut fields: [Option<&mut u64>; 3]) -> bool {
    let Some(data) = extra_field(extra, 0x0001) else {
        return false;
    };
    let mut pos = 0;
    for field in fields.iter_mut().flatten() {
        if **field == 0xffff_ffff {
            if let Some(value) = data.le64(pos) {
                **field = value;
            }
            pos += 8;
        }
    }
    true
}

/// Info-ZIP's Unicode path field: a UTF-8 name that Unicode-aware readers show
/// instead of the header's.
fn unicode_path(extra: &[u8], _name: &[u8]) -> Option<String> {
    let data = extra_field(extra, 0x7075)?;
    let text = data.get(5..)?;
    Some(String::from_utf8_lossy(text).into_owned())
}

fn extra_field(extra: &[u8], id: u16) -> Option<&[u8]> {
    let mut pos = 0;
    while pos + 4 <= extra.len() {
        let kind = extra.le16(pos)?;
        let len = extra.le16(pos + 2)? as usize;
        let data = extra.get(pos + 4..pos + 4 + len)?;
        if kind == id {
            return Some(data);
        }
        pos += 4 + len;
    }
    None
}

/// A name as readers decode it: UTF-8 when flagged, else the DOS code page.
fn decode_name(name: &[u8], flags: u16) -> String {
    if flags & 0x800 != 0 {
        String::from_utf8_lossy(name).into_owned()
    } else {
        match std::str::from_utf8(name) {
            Ok(text) => text.to_string(),
            Err(_) => legacy_text(name),
        }
    }
}

/// The length of the data descriptor at `at`: an optional signature, the CRC and
/// two sizes (eight bytes each for zip64).
fn descriptor_len(bytes: &[u8], at: usize, zip64: bool) -> usize {
    let signature = if bytes.get(at..at + 4) == Some(DESCRIPTOR) {
        4
    } else {
        0
    };
    signature + 4 + if zip64 { 16 } else { 8 }
}

/// Zip's LZMA: a version, the properties' size, the properties (five bytes), then
/// the raw stream.
fn read_lzma(data: &[u8], size: u64, budget: &mut Budget) -> Result<Vec<u8>, String> {
    let props = data.get(4..9).ok_or("damaged (no LZMA properties)")?;
    let dict = u32::from_le_bytes(props[1..5].try_into().expect("four bytes"));
    if dict as usize > super::DECODER_MEMORY {
        return Err(super::too_much_memory(format!(
            "an LZMA dictionary of {dict} bytes"
        )));
    }
    let reader = lzma_rust2::LzmaReader::new_with_props(&data[9..], size, props[0], dict, None)
        .map_err(|e| format!("damaged ({e})"))?;
    budget.read_all(reader, Some(size))
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    pub fn make_zip(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut buffer = Cursor::new(Vec::new());
        {
            let mut writer = ::zip::ZipWriter::new(&mut buffer);
            for (name, data) in files {
                writer
                    .start_file(*name, ::zip::write::SimpleFileOptions::default())
                    .unwrap();
                writer.write_all(data).unwrap();
            }
            writer.finish().unwrap();
        }
        buffer.into_inner()
    }

    fn names(zip: &Zip<'_>) -> Vec<String> {
        zip.entries().iter().flat_map(|e| e.names.clone()).collect()
    }

    #[test]
    fn lists_and_opens_entries() {
        let bytes = make_zip(&[
            ("readme.txt", b"hello hello hello"),
            ("a/b.bin", b"MZ\x90\x00"),
        ]);
        let mut zip = Zip::read(&bytes).unwrap();
        assert_eq!(names(&zip), ["readme.txt", "a/b.bin"]);
        assert!(zip.ambiguities().is_empty(), "{:?}", zip.ambiguities());
        let mut budget = Budget::new(1000);
        assert_eq!(&*zip.open(0, &mut budget).unwrap(), b"hello hello hello");
        assert_eq!(&*zip.open(1, &mut budget).unwrap(), b"MZ\x90\x00");
        assert_eq!(
            crate::filetype::identify(&bytes),
            Some(crate::filetype::FileType::Zip)
        );
    }

    #[test]
    fn a_local_name_that_differs_from_the_directory_is_ambiguous_and_both_are_judged() {
        let mut bytes = make_zip(&[("invoice.txt", b"MZ")]);
        // The local header's name, as a streaming reader sees it.
        let at = memchr::memmem::find(&bytes, b"invoice.txt").unwrap();
        bytes[at + 8..at + 11].copy_from_slice(b"exe");
        let zip = Zip::read(&bytes).unwrap();
        assert_eq!(names(&zip), ["invoice.txt", "invoice.exe"]);
        assert!(
            zip.ambiguities()
                .iter()
                .any(|a| a.contains("different names")),
            "{:?}",
            zip.ambiguities()
        );
    }

    #[test]
    fn two_zips_glued_together_are_ambiguous() {
        let mut bytes = make_zip(&[("first.txt", b"one")]);
        bytes.extend(make_zip(&[("second.exe", b"MZ")]));
        let zip = Zip::read(&bytes).unwrap();
        let found = zip.ambiguities();
        assert!(
            found.iter().any(|a| a.contains("more than one end")),
            "{found:?}"
        );
    }

    #[test]
    fn data_before_the_first_entry_is_ambiguous() {
        let mut bytes = b"%PDF-1.4 a picture, perhaps\n".to_vec();
        bytes.extend(make_zip(&[("x.exe", b"MZ")]));
        assert_eq!(
            crate::filetype::hidden_archive(&bytes),
            Some(crate::filetype::FileType::Zip)
        );
        let zip = Zip::read(&bytes).unwrap();
        assert_eq!(names(&zip), ["x.exe"]);
        assert_eq!(zip.ambiguities(), ["data before the first entry"]);
    }

    #[test]
    fn an_entry_the_directory_does_not_list_is_ambiguous() {
        let hidden = make_zip(&[("hidden.exe", b"MZ")]);
        let local_end = memchr::memmem::find(&hidden, CENTRAL).unwrap();
        let shown = make_zip(&[("shown.txt", b"text")]);
        // The hidden entry's local header first, then an archive whose directory
        // points past it.
        let mut bytes = hidden[..local_end].to_vec();
        let mut rest = shown.clone();
        let end = memchr::memmem::rfind(&rest, END).unwrap();
        let offset = u32::from_le_bytes(rest[end + 16..end + 20].try_into().unwrap());
        rest[end + 16..end + 20].copy_from_slice(&(offset + local_end as u32).to_le_bytes());
        let central = memchr::memmem::find(&rest, CENTRAL).unwrap();
        let local = u32::from_le_bytes(rest[central + 42..central + 46].try_into().unwrap());
        rest[central + 42..central + 46].copy_from_slice(&(local + local_end as u32).to_le_bytes());
        bytes.extend(rest);
        let zip = Zip::read(&bytes).unwrap();
        assert!(
            zip.ambiguities()
                .iter()
                .any(|a| a.contains("does not list")),
            "{:?}",
            zip.ambiguities()
        );
    }

    #[test]
    fn an_entry_whose_checksum_is_wrong_is_damaged() {
        let mut bytes = make_zip(&[("a.txt", b"hello")]);
        let at = memchr::memmem::find(&bytes, CENTRAL).unwrap();
        bytes[at + 16] ^= 1;
        let local = 0;
        bytes[local + 14] ^= 1;
        let mut zip = Zip::read(&bytes).unwrap();
        assert!(
            zip.open(0, &mut Budget::new(100))
                .unwrap_err()
                .contains("checksum")
        );
    }

    #[test]
    fn garbage_is_no_zip() {
        assert!(Zip::read(b"PK\x05\x06 not really").is_err());
        assert!(Zip::read(b"nothing at all").is_err());
    }
}
