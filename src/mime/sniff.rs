//! The type a file's first bytes show, whatever its name and declared type say.

/// Known signatures, longest first where one is a prefix of another.
const SIGNATURES: &[(&[u8], &str)] = &[
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"), // .doc, .xls, .msi
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!\x1a\x07", "rar"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"PK\x07\x08", "zip"),
    (b"\x7fELF", "elf"),
    (b"%PDF-", "pdf"),
    (b"MSCF", "cab"),
    (b"{\\rtf", "rtf"),
    (b"\xca\xfe\xba\xbe", "java"),
    (b"\x89PNG", "png"),
    (b"GIF8", "gif"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x1f\x8b", "gzip"),
    (b"#!", "script"),
    (b"MZ", "exe"),
];

/// The names [`sniff`] can give, for validating rule files.
pub fn known_types() -> impl Iterator<Item = &'static str> {
    let mut names: Vec<&str> = SIGNATURES.iter().map(|(_, name)| *name).collect();
    names.dedup();
    names.into_iter()
}

pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    SIGNATURES
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        assert_eq!(sniff(b"MZ\x90\x00"), Some("exe"));
        assert_eq!(sniff(b"PK\x03\x04rest"), Some("zip"));
        assert_eq!(sniff(b"%PDF-1.7"), Some("pdf"));
        assert_eq!(sniff(b"Hello"), None);
        assert!(known_types().any(|t| t == "exe"));
    }
}
