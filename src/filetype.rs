//! What a file is, told by its bytes — whatever its name, its declared type or its
//! disposition say. One identification serves the MIME walk (each attachment), the
//! container readers (each entry) and the rule conditions (`attachment_magic`).
//!
//! A signature is looked for where the format puts it: most at the start, a tar
//! header at 257, an ISO 9660 volume descriptor at 32 KiB, a VHD footer and a zip's
//! end of central directory at the end — so a file that begins with something else
//! and is a zip all the same (a self-extractor, an image with an archive appended)
//! is still known for the archive that extractors find in it.

/// The kinds of file the engine tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    // Programs: what runs when opened.
    /// A Windows program or library (`MZ`).
    Exe,
    Elf,
    MachO,
    /// A compiled Java class.
    Java,
    /// An Android program.
    Dex,
    /// A Windows Installer package (an OLE file with the installer's class).
    Msi,
    /// A Windows shortcut, which runs what it points to with arguments.
    Lnk,
    /// Compiled HTML help, which runs scripts.
    Chm,
    /// A script with an interpreter line (`#!`).
    Script,
    // Documents and pictures.
    Pdf,
    Rtf,
    Png,
    Gif,
    Jpeg,
    /// An OLE compound file: Office 97-2003 documents, Outlook items.
    Ole,
    // Containers the engine opens.
    Zip,
    Rar,
    SevenZip,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
    Tar,
    Cab,
    Iso,
    /// A disk image with a partition table (MBR or GPT).
    Disk,
    /// A FAT file system (a floppy or USB stick image).
    Fat,
    Vhd,
    Vhdx,
    /// Outlook's `winmail.dat`.
    Tnef,
    /// A Unix `ar` archive (`.deb` packages, static libraries).
    Ar,
    Cpio,
    /// An Internet message (RFC 5322): an attached `.eml`.
    Message,
    // Containers the engine knows but does not read: unscannable.
    Udf,
    Ntfs,
    ExFat,
    Dmg,
    Wim,
    Xar,
    Rpm,
    Arj,
    Lzh,
    Ace,
    /// Unix `compress` (`.Z`).
    Compress,
    Lzip,
    /// A OneNote notebook, which carries files that open with a click.
    OneNote,
}

use FileType::*;

/// Every kind with its rule name, for `attachment_magic` and the log.
pub const ALL: &[(FileType, &str)] = &[
    (Exe, "exe"),
    (Elf, "elf"),
    (MachO, "macho"),
    (Java, "java"),
    (Dex, "dex"),
    (Msi, "msi"),
    (Lnk, "lnk"),
    (Chm, "chm"),
    (Script, "script"),
    (Pdf, "pdf"),
    (Rtf, "rtf"),
    (Png, "png"),
    (Gif, "gif"),
    (Jpeg, "jpeg"),
    (Ole, "ole"),
    (Zip, "zip"),
    (Rar, "rar"),
    (SevenZip, "7z"),
    (Gzip, "gzip"),
    (Bzip2, "bzip2"),
    (Xz, "xz"),
    (Zstd, "zstd"),
    (Tar, "tar"),
    (Cab, "cab"),
    (Iso, "iso"),
    (Disk, "disk"),
    (Fat, "fat"),
    (Vhd, "vhd"),
    (Vhdx, "vhdx"),
    (Tnef, "tnef"),
    (Ar, "ar"),
    (Cpio, "cpio"),
    (Message, "message"),
    (Udf, "udf"),
    (Ntfs, "ntfs"),
    (ExFat, "exfat"),
    (Dmg, "dmg"),
    (Wim, "wim"),
    (Xar, "xar"),
    (Rpm, "rpm"),
    (Arj, "arj"),
    (Lzh, "lzh"),
    (Ace, "ace"),
    (Compress, "compress"),
    (Lzip, "lzip"),
    (OneNote, "onenote"),
];

impl FileType {
    /// The name rules and logs use (`exe`, `zip`, `7z` …).
    pub fn name(self) -> &'static str {
        ALL.iter()
            .find(|(kind, _)| *kind == self)
            .map(|(_, name)| *name)
            .expect("every kind is named in ALL")
    }

    /// A program: it runs when the recipient opens it.
    pub fn is_program(self) -> bool {
        matches!(self, Exe | Elf | MachO | Java | Dex | Msi | Lnk | Chm)
    }

    /// A container the engine opens and judges entry by entry.
    pub fn is_readable_container(self) -> bool {
        matches!(
            self,
            Zip | Rar
                | SevenZip
                | Gzip
                | Bzip2
                | Xz
                | Zstd
                | Lzip
                | Tar
                | Cab
                | Iso
                | Disk
                | Fat
                | Vhd
                | Vhdx
                | Ole
                | Msi
                | Tnef
                | Ar
                | Cpio
        )
    }

    /// A container the engine knows and cannot open: what it holds stays unseen.
    pub fn is_unread_container(self) -> bool {
        matches!(
            self,
            Udf | Ntfs | ExFat | Dmg | Wim | Xar | Rpm | Arj | Lzh | Ace | Compress | OneNote
        )
    }
}

/// The names [`identify`] can give, for validating rule files.
pub fn known_types() -> impl Iterator<Item = &'static str> {
    ALL.iter().map(|(_, name)| *name)
}

/// What the bytes are, as far as the engine can tell.
pub fn identify(bytes: &[u8]) -> Option<FileType> {
    head(bytes)
        .or_else(|| at_offsets(bytes))
        .or_else(|| at_end(bytes))
        .or_else(|| looks_like_message(bytes).then_some(Message))
}

/// An archive inside a file of another kind, which extractors find and open
/// (7-Zip and bsdtar look for archives at any offset; a picture with a RAR
/// behind it is a RAR to them): a zip whose directory ends the file, a RAR or 7z
/// signature past the start.
pub fn hidden_archive(bytes: &[u8]) -> Option<FileType> {
    if zip_end(bytes, true) {
        return Some(Zip);
    }
    let after_start = bytes.get(1..).unwrap_or_default();
    if memchr::memmem::find(after_start, b"Rar!\x1a\x07").is_some() {
        return Some(Rar);
    }
    if memchr::memmem::find(after_start, b"7z\xbc\xaf\x27\x1c").is_some() {
        return Some(SevenZip);
    }
    None
}

/// The rule name of what the bytes are.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    identify(bytes).map(FileType::name)
}

/// Signatures at the very start, longest first where one is a prefix of another.
const STARTS: &[(&[u8], FileType)] = &[
    (
        b"\x4c\x00\x00\x00\x01\x14\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46",
        Lnk,
    ),
    (
        b"\xe4\x52\x5c\x7b\x8c\xd8\xa7\x4d\xae\xb1\x53\x78\xd0\x29\x96\xd3",
        OneNote,
    ),
    (b"Rar!\x1a\x07", Rar),
    (b"7z\xbc\xaf\x27\x1c", SevenZip),
    (b"\xfd7zXZ\x00", Xz),
    (b"MSCF\x00\x00\x00\x00", Cab),
    (b"!<arch>\n", Ar),
    (b"vhdxfile", Vhdx),
    (b"conectix", Vhd),
    (b"MSWIM\x00\x00\x00", Wim),
    (b"070701", Cpio),
    (b"070702", Cpio),
    (b"070707", Cpio),
    (b"\x78\x9f\x3e\x22", Tnef),
    (b"\xed\xab\xee\xdb", Rpm),
    (b"\x28\xb5\x2f\xfd", Zstd),
    (b"PK\x03\x04", Zip),
    (b"PK\x05\x06", Zip),
    (b"PK\x07\x08", Zip),
    (b"\x7fELF", Elf),
    (b"\xfe\xed\xfa\xce", MachO),
    (b"\xfe\xed\xfa\xcf", MachO),
    (b"\xce\xfa\xed\xfe", MachO),
    (b"\xcf\xfa\xed\xfe", MachO),
    (b"dex\n0", Dex),
    (b"ITSF", Chm),
    (b"xar!", Xar),
    (b"LZIP", Lzip),
    (b"%PDF-", Pdf),
    (b"{\\rtf", Rtf),
    (b"\x89PNG", Png),
    (b"GIF8", Gif),
    (b"\xff\xd8\xff", Jpeg),
    (b"\x1f\x8b\x08", Gzip),
    (b"\x1f\x9d", Compress),
    (b"#!", Script),
    (b"MZ", Exe),
];

fn head(bytes: &[u8]) -> Option<FileType> {
    if bytes.starts_with(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1") {
        return Some(if is_installer(bytes) { Msi } else { Ole });
    }
    if bytes.starts_with(b"\xca\xfe\xba\xbe") {
        // Shared by Java classes and Mach-O universal binaries: a universal
        // binary counts its architectures there, a class gives its version (45+).
        let second = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
        return Some(if second < 45 { MachO } else { Java });
    }
    if bytes.starts_with(b"BZh")
        && bytes.get(3).is_some_and(|b| (b'1'..=b'9').contains(b))
        && (bytes.get(4..10) == Some(b"\x31\x41\x59\x26\x53\x59")
            || bytes.get(4..10) == Some(b"\x17\x72\x45\x38\x50\x90"))
    {
        return Some(Bzip2);
    }
    if bytes.len() >= 512 && bytes.get(510..512) == Some(b"\x55\xaa") {
        if bytes.get(3..11) == Some(b"NTFS    ") {
            return Some(Ntfs);
        }
        if bytes.get(3..11) == Some(b"EXFAT   ") {
            return Some(ExFat);
        }
        if is_fat_boot_sector(bytes) {
            return Some(Fat);
        }
    }
    STARTS
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
        .map(|(_, kind)| *kind)
}

/// Signatures a little way in.
fn at_offsets(bytes: &[u8]) -> Option<FileType> {
    if bytes.get(257..262) == Some(b"ustar") || is_v7_tar(bytes) {
        return Some(Tar);
    }
    if bytes.get(7..14) == Some(b"**ACE**") {
        return Some(Ace);
    }
    if bytes.len() > 21
        && bytes.get(2..4) == Some(b"-l")
        && matches!(bytes[4], b'h' | b'z')
        && bytes[6] == b'-'
    {
        return Some(Lzh);
    }
    if bytes.starts_with(b"\x60\xea") && bytes.len() > 10 {
        return Some(Arj);
    }
    if bytes.get(512..520) == Some(b"EFI PART") {
        return Some(Disk);
    }
    // Volume descriptors from sector 16: ISO 9660 ("CD001") and UDF's
    // recognition sequence ("BEA01", "NSR02"/"NSR03").
    let mut iso = false;
    let mut udf = false;
    for sector in 16..32 {
        let Some(id) = bytes.get(sector * 2048 + 1..sector * 2048 + 6) else {
            break;
        };
        match id {
            b"CD001" => iso = true,
            b"NSR02" | b"NSR03" => udf = true,
            b"BEA01" | b"TEA01" => {}
            _ => break,
        }
    }
    if iso {
        return Some(Iso);
    }
    if udf {
        return Some(Udf);
    }
    if is_partition_table(bytes) {
        return Some(Disk);
    }
    None
}

/// Signatures at the end: a fixed VHD's footer, a DMG's trailer, a zip's end of
/// central directory (a zip with something before it is a zip to extractors).
fn at_end(bytes: &[u8]) -> Option<FileType> {
    let tail = bytes.len().checked_sub(512)?;
    if bytes.get(tail..tail + 8) == Some(b"conectix") {
        return Some(Vhd);
    }
    if bytes.get(tail..tail + 4) == Some(b"koly") {
        return Some(Dmg);
    }
    zip_end(bytes, false).then_some(Zip)
}

/// Whether the bytes end as a zip does: a zip's end record in the last 64 KiB
/// whose directory (of `size` bytes just before it) begins with a directory
/// record; with `exact`, the record's comment also reaches the last byte. (The
/// zip reader reads the whole record; this is only its signature.)
fn zip_end(bytes: &[u8], exact: bool) -> bool {
    let from = bytes.len().saturating_sub(22 + 65535);
    memchr::memmem::rfind_iter(&bytes[from..], b"PK\x05\x06").any(|at| {
        let pos = from + at;
        let field = |at: usize| {
            bytes
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("four bytes")))
        };
        let comment = bytes
            .get(pos + 20..pos + 22)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
        let (Some(size), Some(comment)) = (field(pos + 12), comment) else {
            return false;
        };
        let Some(start) = pos.checked_sub(size as usize) else {
            return false;
        };
        size > 0
            && bytes.get(start..start + 4) == Some(b"PK\x01\x02")
            && (!exact || pos + 22 + comment == bytes.len())
    })
}

/// The class Windows Installer gives the root storage of its packages (and
/// patches and transforms).
fn is_installer(bytes: &[u8]) -> bool {
    const MSI: [&[u8; 16]; 3] = [
        // {000C1084-0000-0000-C000-000000000046}: a package.
        b"\x84\x10\x0c\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46",
        // {000C1086-…}: a patch.
        b"\x86\x10\x0c\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46",
        // {000C1082-…}: a transform.
        b"\x82\x10\x0c\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46",
    ];
    // The header names the first directory sector; the root entry opens it, its
    // class at offset 0x50.
    let Some(shift) = bytes.get(0x1e..0x20) else {
        return false;
    };
    let sector_size = 1usize << u16::from_le_bytes([shift[0], shift[1]]).min(16);
    let Some(first) = bytes.get(0x30..0x34) else {
        return false;
    };
    let first = u32::from_le_bytes(first.try_into().expect("four bytes")) as usize;
    let root = (first + 1).saturating_mul(sector_size);
    bytes
        .get(root + 0x50..root + 0x60)
        .is_some_and(|class| MSI.iter().any(|msi| class == &msi[..]))
}

/// A FAT boot sector: a BIOS parameter block that makes sense.
pub fn is_fat_boot_sector(bytes: &[u8]) -> bool {
    let Some(bpb) = bytes.get(0..64) else {
        return false;
    };
    let bytes_per_sector = u16::from_le_bytes([bpb[11], bpb[12]]);
    let sectors_per_cluster = bpb[13];
    let reserved = u16::from_le_bytes([bpb[14], bpb[15]]);
    let fats = bpb[16];
    let jump = bpb[0] == 0xeb || bpb[0] == 0xe9;
    let named = bytes.get(54..59) == Some(b"FAT12")
        || bytes.get(54..59) == Some(b"FAT16")
        || bytes.get(54..57) == Some(b"FAT")
        || bytes.get(82..87) == Some(b"FAT32");
    jump && named
        && matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        && sectors_per_cluster.is_power_of_two()
        && reserved > 0
        && (1..=4).contains(&fats)
}

/// An MBR partition table: the boot signature, and entries that are empty or
/// well formed (status 0 or 0x80, a type, a start and a length).
fn is_partition_table(bytes: &[u8]) -> bool {
    if bytes.len() < 1024 || bytes.get(510..512) != Some(b"\x55\xaa") {
        return false;
    }
    let mut used = 0;
    for entry in bytes[446..510].chunks(16) {
        let status = entry[0];
        let kind = entry[4];
        let start = u32::from_le_bytes(entry[8..12].try_into().expect("four bytes"));
        let sectors = u32::from_le_bytes(entry[12..16].try_into().expect("four bytes"));
        if kind == 0 {
            continue;
        }
        if !matches!(status, 0x00 | 0x80) || start == 0 || sectors == 0 {
            return false;
        }
        used += 1;
    }
    used > 0
}

/// A tar header from before POSIX: no magic, but its checksum holds.
fn is_v7_tar(bytes: &[u8]) -> bool {
    let Some(header) = bytes.get(0..512) else {
        return false;
    };
    if header[0] == 0 {
        return false;
    }
    let Some(stored) = parse_octal(&header[148..156]) else {
        return false;
    };
    let sum: u64 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(b)
            }
        })
        .sum();
    sum == stored
        && header[100..108]
            .iter()
            .all(|&b| b == 0 || b == b' ' || b.is_ascii_digit())
}

/// An octal number as tar writes it: digits, padded with spaces or NULs.
pub fn parse_octal(field: &[u8]) -> Option<u64> {
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if text.is_empty() || !text.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&text).ok()?, 8).ok()
}

/// A message as mail programs open an attached `.eml`: it begins with header
/// fields (after an mbox `From ` line, perhaps), among them ones every message has.
pub fn looks_like_message(bytes: &[u8]) -> bool {
    const KNOWN: &[&str] = &[
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "received",
        "return-path",
        "reply-to",
        "sender",
        "delivered-to",
    ];
    let mut text = &bytes[..bytes.len().min(8192)];
    if text.starts_with(b"From ") {
        let Some(end) = memchr::memchr(b'\n', text) else {
            return false;
        };
        text = &text[end + 1..];
    }
    let mut known = 0;
    let mut lines = 0;
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        lines += 1;
        if matches!(line[0], b' ' | b'\t') {
            if lines == 1 {
                return false;
            }
            continue;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return false;
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
            return false;
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        if KNOWN.contains(&name.as_str()) {
            known += 1;
        }
    }
    known >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_at_the_start() {
        assert_eq!(identify(b"MZ\x90\x00"), Some(Exe));
        assert_eq!(identify(b"PK\x03\x04rest"), Some(Zip));
        assert_eq!(identify(b"%PDF-1.7"), Some(Pdf));
        assert_eq!(identify(b"Rar!\x1a\x07\x01\x00"), Some(Rar));
        assert_eq!(identify(b"\xca\xfe\xba\xbe\x00\x00\x00\x02"), Some(MachO));
        assert_eq!(identify(b"\xca\xfe\xba\xbe\x00\x00\x00\x34"), Some(Java));
        assert_eq!(identify(b"BZh91AY&SY"), Some(Bzip2));
        assert_eq!(identify(b"Hello"), None);
        assert!(known_types().any(|t| t == "exe"));
        for (kind, name) in ALL {
            assert_eq!(kind.name(), *name);
        }
    }

    #[test]
    fn a_message_is_known_by_its_header_fields() {
        assert_eq!(
            identify(b"From: a@b.test\r\nSubject: hi\r\n\r\nbody\r\n"),
            Some(Message)
        );
        assert_eq!(
            identify(b"From someone Mon Jan  1 00:00:00 2026\nReceived: x\nTo: y\n\nbody"),
            Some(Message)
        );
        assert_eq!(identify(b"Dear: friend\r\nhow are you\r\n"), None);
        assert_eq!(identify(b"Subject: alone\r\n\r\n"), None);
    }

    #[test]
    fn a_tar_without_magic_is_known_by_its_checksum() {
        let mut header = [0u8; 512];
        header[..5].copy_from_slice(b"a.txt");
        header[100..108].copy_from_slice(b"0000644\0");
        header[124..136].copy_from_slice(b"00000000005\0");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        assert_eq!(identify(&header), Some(Tar));
    }
}
