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

/// Lists the entries of a zip archive and, up to the depth limit, of the archives
/// inside it. Damaged or encrypted archives give what their directory shows.
pub fn entries(bytes: &[u8], limits: &Limits, label: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut budget = limits.zip_bytes;
    walk(bytes, limits, label, 1, &mut budget, &mut out);
    out
}

fn walk(
    bytes: &[u8],
    limits: &Limits,
    label: &str,
    depth: usize,
    budget: &mut usize,
    out: &mut Vec<Entry>,
) {
    let Ok(mut archive) = zip::ZipArchive::new(Cursor::new(bytes)) else {
        return;
    };
    for index in 0..archive.len().min(limits.zip_entries) {
        let name = match archive.by_index_raw(index) {
            Ok(file) => match file.name() {
                Ok(name) => name.to_string(),
                Err(_) => String::from_utf8_lossy(file.name_raw()).into_owned(),
            },
            Err(_) => continue,
        };
        if name.ends_with('/') {
            continue;
        }
        // The first bytes tell the type; a nested archive is read whole, within
        // the budget.
        let mut head = Vec::new();
        let nested = name.to_lowercase().ends_with(".zip");
        if let Ok(file) = archive.by_index(index) {
            let want = if nested && depth < limits.zip_depth {
                *budget
            } else {
                16
            };
            let _ = file.take(want as u64).read_to_end(&mut head);
        }
        let sniffed = sniff(&head);
        let is_zip = sniffed == Some("zip") || nested;
        if is_zip && depth < limits.zip_depth && head.len() > 16 {
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
        out.push(Entry {
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
        let found = entries(&outer, &Limits::default(), "outer.zip");
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
        let found = entries(&outer, &limits, "outer.zip");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "inner.zip");
    }

    #[test]
    fn garbage_is_no_archive() {
        assert!(entries(b"PK\x03\x04 not really", &Limits::default(), "x.zip").is_empty());
    }
}
