//! One compressed file: gzip (flate2), bzip2 (libbz2-rs), xz and lzip
//! (lzma-rust2), zstd (ruzstd). Its one entry is named as `gunzip -N` and 7-Zip name it (the name a
//! gzip header stores) and as plain `gunzip` does (the file's own name without
//! `.gz`; `.tgz` gives `.tar`). Several members or frames are read as one file,
//! as the command-line tools do; anything after the last one that is not zero
//! padding is data some readers see and others do not.

use std::borrow::Cow;

use super::{Budget, Container, Entry};
use crate::filetype::FileType;

pub struct Compressed<'a> {
    kind: FileType,
    bytes: &'a [u8],
    entries: Vec<Entry>,
    ambiguities: Vec<String>,
}

impl<'a> Compressed<'a> {
    pub fn read(
        kind: FileType,
        bytes: &'a [u8],
        name: Option<&str>,
    ) -> Result<Compressed<'a>, String> {
        let mut entry = Entry::default();
        if kind == FileType::Gzip {
            let decoder = flate2::bufread::GzDecoder::new(bytes);
            if let Some(stored) = decoder.header().and_then(|h| h.filename()) {
                entry.also(String::from_utf8_lossy(stored).into_owned());
            }
        }
        if let Some(name) = name {
            entry.also(without_suffix(name, kind));
        }
        if entry.names.is_empty() {
            entry.also(format!("({} content)", kind.name()));
        }
        Ok(Compressed {
            kind,
            bytes,
            entries: vec![entry],
            ambiguities: Vec::new(),
        })
    }
}

impl<'a> Container<'a> for Compressed<'a> {
    fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn open(&mut self, _: usize, budget: &mut Budget) -> Result<Cow<'a, [u8]>, String> {
        let mut out = Vec::new();
        let mut rest: &[u8] = self.bytes;
        match self.kind {
            FileType::Gzip => {
                while rest.starts_with(b"\x1f\x8b") {
                    let mut decoder = flate2::bufread::GzDecoder::new(rest);
                    out.extend(budget.read_all(&mut decoder, None)?);
                    rest = decoder.into_inner();
                }
            }
            FileType::Bzip2 => {
                while rest.starts_with(b"BZh") {
                    let mut decoder = bzip2::bufread::BzDecoder::new(rest);
                    out.extend(budget.read_all(&mut decoder, None)?);
                    rest = decoder.into_inner();
                }
            }
            FileType::Xz => {
                let memory = (super::DECODER_MEMORY / 1024) as u32;
                let decoder = lzma_rust2::XzReader::new_mem_limit(rest, true, memory);
                out = budget.read_all(decoder, None)?;
                rest = &[];
            }
            FileType::Lzip => {
                // The dictionary size is coded in the sixth byte; refused before
                // the decoder allocates it.
                let coded = rest.get(5).copied().unwrap_or(0);
                let base = 1u64 << (coded & 0x1f);
                let dictionary = base - base / 16 * u64::from(coded >> 5);
                if dictionary > super::DECODER_MEMORY as u64 {
                    return Err(super::too_much_memory(format!(
                        "an LZMA dictionary of {dictionary} bytes"
                    )));
                }
                out = budget.read_all(lzma_rust2::LzipReader::new(rest), None)?;
                rest = &[];
            }
            FileType::Zstd => {
                while rest.len() >= 4 {
                    let magic = u32::from_le_bytes(rest[..4].try_into().expect("four bytes"));
                    if magic & 0xffff_fff0 == 0x184d_2a50 {
                        // A skippable frame: readers skip it.
                        let size = rest.get(4..8).map_or(0, |s| {
                            u32::from_le_bytes(s.try_into().expect("four bytes")) as usize
                        });
                        rest = rest.get(8 + size..).unwrap_or(&[]);
                        continue;
                    }
                    if magic != 0xfd2f_b528 {
                        break;
                    }
                    let mut source = rest;
                    let decoder = ruzstd::decoding::StreamingDecoder::new_with_max_window_size(
                        &mut source,
                        super::DECODER_MEMORY as u64,
                    )
                    .map_err(|e| format!("damaged ({e})"))?;
                    out.extend(budget.read_all(decoder, None)?);
                    rest = source;
                }
            }
            other => return Err(format!("{} is not a compressed file", other.name())),
        }
        if rest.iter().any(|&b| b != 0) {
            self.ambiguities.push(format!(
                "data after the end of the {} stream",
                self.kind.name()
            ));
        }
        Ok(Cow::Owned(out))
    }

    fn ambiguities(&self) -> Vec<String> {
        self.ambiguities.clone()
    }
}

/// The name `gunzip` gives what it decompresses: `report.pdf.gz` → `report.pdf`,
/// `site.tgz` → `site.tar`.
fn without_suffix(name: &str, kind: FileType) -> String {
    let lower = name.to_ascii_lowercase();
    let suffixes: &[(&str, &str)] = match kind {
        FileType::Gzip => &[(".tgz", ".tar"), (".taz", ".tar"), (".gz", ""), (".z", "")],
        FileType::Bzip2 => &[
            (".tbz2", ".tar"),
            (".tbz", ".tar"),
            (".bz2", ""),
            (".bz", ""),
        ],
        FileType::Xz => &[(".txz", ".tar"), (".xz", "")],
        FileType::Zstd => &[(".tzst", ".tar"), (".zst", "")],
        FileType::Lzip => &[(".tlz", ".tar"), (".lz", "")],
        _ => &[],
    };
    for (suffix, replacement) in suffixes {
        if lower.ends_with(suffix) {
            return format!("{}{replacement}", &name[..name.len() - suffix.len()]);
        }
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(name: Option<&str>, data: &[u8]) -> Vec<u8> {
        let mut builder = flate2::GzBuilder::new();
        if let Some(name) = name {
            builder = builder.filename(name);
        }
        let mut encoder = builder.write(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_gzip_file_is_named_both_ways_and_opened() {
        let bytes = gzip(Some("payload.exe"), b"MZ\x90\x00");
        let mut stream = Compressed::read(FileType::Gzip, &bytes, Some("notes.txt.gz")).unwrap();
        assert_eq!(stream.entries()[0].names, ["payload.exe", "notes.txt"]);
        let content = stream.open(0, &mut Budget::new(100)).unwrap();
        assert_eq!(&*content, b"MZ\x90\x00");
        assert!(stream.ambiguities().is_empty());
    }

    #[test]
    fn members_are_read_as_one_file_and_trailing_data_is_ambiguous() {
        let mut bytes = gzip(None, b"one ");
        bytes.extend(gzip(None, b"two"));
        let mut stream = Compressed::read(FileType::Gzip, &bytes, None).unwrap();
        assert_eq!(&*stream.open(0, &mut Budget::new(100)).unwrap(), b"one two");
        bytes.extend(b"PK\x03\x04 something else");
        let mut stream = Compressed::read(FileType::Gzip, &bytes, Some("a.tgz")).unwrap();
        assert_eq!(stream.entries()[0].names, ["a.tar"]);
        stream.open(0, &mut Budget::new(100)).unwrap();
        assert_eq!(
            stream.ambiguities(),
            ["data after the end of the gzip stream"]
        );
    }

    #[test]
    fn a_bomb_stops_at_the_budget() {
        let bytes = gzip(None, &vec![0u8; 10_000_000]);
        let mut stream = Compressed::read(FileType::Gzip, &bytes, None).unwrap();
        let why = stream.open(0, &mut Budget::new(1_000_000)).unwrap_err();
        assert!(why.contains("container_bytes"), "{why}");
    }
}
