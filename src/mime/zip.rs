//! Names and types of what a zip archive holds, nested archives included, within
//! limits so that a zip bomb costs nothing.

use std::io::{Cursor, Read};

use super::Limits;
use super::sniff::sniff;

/// One file inside an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub sniffed: Option<&'static str>,
    /// The archive path it is in: `docs.zip` or `docs.zip/inner.zip`.
    pub archive: String,
}

/// What an archive holds, and what of it could not be looked into.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    /// Why some of it stayed unseen: encrypted entries, archives deeper than
    /// `zip_depth`, past `zip_bytes` or `zip_entries`, damaged archives.
    pub unseen: Vec<String>,
}

impl Listing {
    /// The reasons, as one line, when something stayed unseen.
    pub fn unscannable(&self) -> Option<String> {
        (!self.unseen.is_empty()).then(|| self.unseen.join("; "))
    }
}

/// Lists the entries of a zip archive and, up to the depth limit, of the archives
/// inside it; says what it could not look into.
pub fn entries(bytes: &[u8], limits: &Limits, label: &str) -> Listing {
    let mut listing = Listing::default();
    let mut budget = limits.zip_bytes;
    walk(bytes, limits, label, 1, &mut budget, &mut listing);
    listing
}

fn walk(
    bytes: &[u8],
    limits: &Limits,
    label: &str,
    depth: usize,
    budget: &mut usize,
    out: &mut Listing,
) {
    let mut archive = match zip::ZipArchive::new(Cursor::new(bytes)) {
        Ok(archive) => archive,
        Err(e) => {
            out.unseen
                .push(format!("{label}: not a readable archive ({e})"));
            return;
        }
    };
    if archive.len() > limits.zip_entries {
        out.unseen.push(format!(
            "{label}: {} entries, more than zip_entries = {}",
            archive.len(),
            limits.zip_entries
        ));
    }
    for index in 0..archive.len().min(limits.zip_entries) {
        let (name, encrypted) = match archive.by_index_raw(index) {
            Ok(file) => {
                let name = match file.name() {
                    Ok(name) => name.to_string(),
                    Err(_) => String::from_utf8_lossy(file.name_raw()).into_owned(),
                };
                (name, file.encrypted())
            }
            Err(e) => {
                out.unseen
                    .push(format!("{label}: entry {index} unreadable ({e})"));
                continue;
            }
        };
        if name.ends_with('/') {
            continue;
        }
        if encrypted {
            out.unseen.push(format!("{label}/{name}: encrypted"));
            out.entries.push(Entry {
                name,
                sniffed: None,
                archive: label.to_string(),
            });
            continue;
        }
        // The first bytes tell the type; a nested archive is read whole, within
        // the budget.
        let mut head = Vec::new();
        let nested = name.to_lowercase().ends_with(".zip");
        let open_nested = nested && depth < limits.zip_depth;
        let want = if open_nested { *budget } else { 16 };
        let mut complete = true;
        match archive.by_index(index) {
            Ok(file) => {
                let size = file.size();
                let _ = file.take(want as u64).read_to_end(&mut head);
                complete = (head.len() as u64) >= size;
            }
            Err(e) => out.unseen.push(format!("{label}/{name}: unreadable ({e})")),
        }
        let sniffed = sniff(&head);
        let is_zip = sniffed == Some("zip") || nested;
        if is_zip {
            if depth >= limits.zip_depth {
                out.unseen.push(format!(
                    "{label}/{name}: an archive deeper than zip_depth = {}",
                    limits.zip_depth
                ));
            } else if !complete {
                out.unseen.push(format!(
                    "{label}/{name}: past zip_bytes = {} decompressed",
                    limits.zip_bytes
                ));
            } else if head.len() > 16 || sniffed == Some("zip") {
                *budget = budget.saturating_sub(head.len());
                walk(
                    &head,
                    limits,
                    &format!("{label}/{name}"),
                    depth + 1,
                    budget,
                    out,
                );
            }
        }
        out.entries.push(Entry {
            name,
            sniffed,
            archive: label.to_string(),
        });
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io::Write;

    pub fn make_zip(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut buffer = Cursor::new(Vec::new());
        {
            let mut writer = zip::ZipWriter::new(&mut buffer);
            for (name, data) in files {
                writer
                    .start_file(*name, zip::write::SimpleFileOptions::default())
                    .unwrap();
                writer.write_all(data).unwrap();
            }
            writer.finish().unwrap();
        }
        buffer.into_inner()
    }

    #[test]
    fn lists_entries_and_nested_archives() {
        let inner = make_zip(&[("payload.bin", b"MZ\x90\x00rest")]);
        let outer = make_zip(&[("readme.txt", b"hello"), ("inner.zip", &inner)]);
        let found = entries(&outer, &Limits::default(), "outer.zip").entries;
        let names: Vec<(&str, Option<&str>, &str)> = found
            .iter()
            .map(|e| (e.name.as_str(), e.sniffed, e.archive.as_str()))
            .collect();
        assert!(names.contains(&("payload.bin", Some("exe"), "outer.zip/inner.zip")));
        assert!(names.contains(&("readme.txt", None, "outer.zip")));
        assert!(names.contains(&("inner.zip", Some("zip"), "outer.zip")));
    }

    #[test]
    fn depth_limit_stops_opening_archives() {
        let inner = make_zip(&[("payload.exe", b"MZ")]);
        let outer = make_zip(&[("inner.zip", &inner)]);
        let limits = Limits {
            zip_depth: 1,
            ..Limits::default()
        };
        let listing = entries(&outer, &limits, "outer.zip");
        assert_eq!(listing.entries.len(), 1);
        assert_eq!(listing.entries[0].name, "inner.zip");
        assert_eq!(
            listing.unscannable().as_deref(),
            Some("outer.zip/inner.zip: an archive deeper than zip_depth = 1")
        );
    }

    #[test]
    fn garbage_is_no_archive() {
        let listing = entries(b"PK\x03\x04 not really", &Limits::default(), "x.zip");
        assert!(listing.entries.is_empty());
        assert!(
            listing
                .unscannable()
                .unwrap()
                .starts_with("x.zip: not a readable archive")
        );
    }
}
