//! The tests' copies of the shipped rules and configuration
//! (`tests/fixtures/shipped/`) are what is committed in `rules/` and `packaging/`:
//! the tests check what ships, yet an administrator's edits to the working tree
//! never make `cargo test` fail.

use std::path::Path;
use std::process::Command;

use crate::support::shipped;

/// The shipped files the tests copy: everything under `rules/` but its README,
/// and the example configuration with its recipients file.
fn committed_files(repo: &Path) -> Option<Vec<String>> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["ls-tree", "-r", "--name-only", "HEAD", "--"])
        .args([
            "rules",
            "packaging/mailmoat.toml",
            "packaging/recipients.txt",
            "packaging/prometheus-alerts.yml",
            "packaging/grafana-dashboard.json",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|path| *path != "rules/README.md")
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn copies_match_what_is_shipped() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(files) = committed_files(repo) else {
        eprintln!("not a git checkout: the shipped copies are not compared");
        return;
    };
    assert!(files.len() >= 10, "{files:?}");
    let refresh = "refresh the copies with: git archive HEAD rules packaging/mailmoat.toml \
                   packaging/recipients.txt packaging/prometheus-alerts.yml \
                   packaging/grafana-dashboard.json | tar -x -C tests/fixtures/shipped";
    for path in &files {
        let committed = Command::new("git")
            .arg("-C")
            .arg(repo)
            .arg("show")
            .arg(format!("HEAD:{path}"))
            .output()
            .unwrap()
            .stdout;
        let copy = std::fs::read(shipped(path)).unwrap_or_else(|e| {
            panic!("{path}: no copy in tests/fixtures/shipped ({e}); {refresh}")
        });
        assert!(
            copy == committed,
            "{path}: the copy differs from what is committed; {refresh}"
        );
    }
    let mut copies = Vec::new();
    let root = shipped("");
    let mut folders = vec![root.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else {
                let relative = path.strip_prefix(&root).unwrap();
                copies.push(relative.to_string_lossy().to_string());
            }
        }
    }
    for copy in copies {
        assert!(
            files.contains(&copy),
            "tests/fixtures/shipped/{copy} is no longer shipped: remove it"
        );
    }
}
