//! The shipped rules, tested the way an administrator tests theirs: every message in
//! `rules/tests/` with what must happen to it.

use std::path::Path;

use mailmoat::rules::RuleSet;
use mailmoat::rules::trial::{TrialInput, run};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectation {
    from: String,
    to: Vec<String>,
    expect: String,
    rules: Vec<String>,
    #[serde(default)]
    shadow: Vec<String>,
    recipients: Option<Vec<String>>,
    sender: Option<String>,
}

fn crlf(raw: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(raw)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

#[test]
fn shipped_rules_do_what_their_fixtures_say() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let rules = RuleSet::load_dir(&root).unwrap_or_else(|e| panic!("{e}"));
    let mut checked = 0;
    let mut fixtures: Vec<_> = std::fs::read_dir(root.join("tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    fixtures.sort();
    for eml in fixtures {
        let spec: Expectation =
            toml::from_str(&std::fs::read_to_string(eml.with_extension("toml")).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", eml.display()));
        let message = crlf(&std::fs::read(&eml).unwrap());
        let input = TrialInput {
            client_ip: "192.0.2.1".parse().unwrap(),
            client_name: None,
            helo: "client.example".into(),
            authenticated: false,
            trusted: false,
            sender: spec.from.clone(),
            recipients: spec.to.clone(),
            message: &message,
            limits: Default::default(),
        };
        let trial = run(&rules, &input);
        let name = eml.display();
        let report = trial.report(&input);
        assert_eq!(trial.outcome(), spec.expect, "{name}:\n{report}");
        let enforced: Vec<&str> = trial
            .matched()
            .iter()
            .filter(|m| !m.shadow)
            .map(|m| m.rule.as_str())
            .collect();
        let shadow: Vec<&str> = trial
            .matched()
            .iter()
            .filter(|m| m.shadow)
            .map(|m| m.rule.as_str())
            .collect();
        assert_eq!(enforced, spec.rules, "{name}:\n{report}");
        assert_eq!(shadow, spec.shadow, "{name}:\n{report}");
        if let Some(recipients) = &spec.recipients {
            assert_eq!(
                &trial.verdict.as_ref().unwrap().recipients,
                recipients,
                "{name}"
            );
        }
        if let Some(sender) = &spec.sender {
            assert_eq!(&trial.verdict.as_ref().unwrap().sender, sender, "{name}");
        }
        if let Some(delivered) = &trial.delivered {
            let text = String::from_utf8_lossy(delivered);
            if spec.rules.iter().any(|r| r.starts_with("strip")) {
                assert!(text.contains("mailmoat removed"), "{name}: {text}");
                assert!(
                    !text.contains("TVqQ") && !text.contains("UEsDB"),
                    "{name}: payload left:\n{text}"
                );
            } else {
                assert!(!text.contains("mailmoat removed"), "{name}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} fixtures");
}
