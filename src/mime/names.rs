//! File names as the programs that act on them read them: the last path
//! component, without the trailing dots and spaces Windows ignores, and the
//! extension that decides what opening the file does.

/// Windows ignores trailing dots and spaces (`evil.exe. ` runs as `evil.exe`), and
/// a path is not part of the name.
pub fn clean_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.trim_end_matches(['.', ' ', '\t'])
        .trim_start()
        .to_string()
}

/// The last extension of a file name, lower case.
pub fn extension(name: &str) -> Option<String> {
    let (_, ext) = name.rsplit_once('.')?;
    (!ext.is_empty()).then(|| ext.to_lowercase())
}
