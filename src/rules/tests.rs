use super::*;
use crate::mime::{Content, Limits};

fn rules(text: &str) -> RuleSet {
    RuleSet::from_text("test.toml", text).unwrap_or_else(|e| panic!("{e}"))
}

fn facts<'a>(sender: &'a str, recipients: &'a [String], content: Option<&'a Content>) -> Facts<'a> {
    Facts {
        client_ip: "192.0.2.10".parse().unwrap(),
        client_name: Some("mail.remote.test"),
        helo: "mail.remote.test",
        authenticated: false,
        trusted: false,
        sender,
        recipients,
        size: 100,
        content,
        auth: Default::default(),
        scan: None,
    }
}

fn rcpts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_first_final_action_decides_and_earlier_changes_add_up() {
    let set = rules(
        r#"
        [[rule]]
        name = "tag-all"
        when.any = true
        action = "tag"
        add_header = { "X-Seen" = "yes" }
        [[rule]]
        name = "copy-audit"
        when.any = true
        action = "copy_to"
        to = ["audit@example.test"]
        [[rule]]
        name = "allow-partner"
        when.sender_domain = "partner.test"
        action = "accept"
        [[rule]]
        name = "reject-all"
        when.any = true
        action = "reject"
        reply = "550 5.7.1 go away"
        "#,
    );
    let to = rcpts(&["bob@example.test"]);
    let partner = set.evaluate(&facts("x@partner.test", &to, None));
    assert_eq!(partner.decision, Final::Deliver);
    assert_eq!(partner.decided_by.as_deref(), Some("allow-partner"));
    assert_eq!(
        partner.recipients,
        rcpts(&["bob@example.test", "audit@example.test"])
    );
    assert_eq!(
        partner.header_edits,
        vec![HeaderEdit::Add("X-Seen".into(), "yes".into())]
    );
    let other = set.evaluate(&facts("x@other.test", &to, None));
    assert_eq!(
        other.decision,
        Final::Reject(Reply::new(550, "5.7.1", "go away"))
    );
    assert_eq!(
        other.summary(),
        "tag-all(tag),copy-audit(copy_to),reject-all(reject)"
    );
}

#[test]
fn shadow_rules_are_reported_and_change_nothing() {
    let set = rules(
        r#"
        [[rule]]
        name = "new-block"
        mode = "shadow"
        when.sender = "*@remote.test"
        action = "reject"
        "#,
    );
    let to = rcpts(&["bob@example.test"]);
    let verdict = set.evaluate(&facts("a@remote.test", &to, None));
    assert_eq!(verdict.decision, Final::Deliver);
    assert!(verdict.matched[0].shadow);
    let early = set
        .check_early(Stage::Mail, &facts("a@remote.test", &[], None))
        .unwrap();
    assert_eq!(early.len(), 1, "shadow match reported at MAIL");
}

#[test]
fn envelope_rules_refuse_early_unless_an_earlier_final_rule_needs_the_message() {
    let set = rules(
        r#"
        [[rule]]
        name = "block-sender"
        when.sender_domain = ["spam.test", "*.spam.test"]
        action = "reject"
        [[rule]]
        name = "no-ghost"
        when.recipient = "ghost@example.test"
        action = "tempfail"
        "#,
    );
    let refusal = set
        .check_early(Stage::Mail, &facts("x@mx.spam.test", &[], None))
        .unwrap_err();
    assert_eq!(refusal.decision.by.rule().unwrap(), "block-sender");
    assert_eq!(refusal.decision.reply.code, 550);
    let ghost = rcpts(&["Ghost@example.test"]);
    let refusal = set
        .check_early(Stage::Rcpt, &facts("x@ok.test", &ghost, None))
        .unwrap_err();
    assert_eq!(
        (
            refusal.decision.by.rule().unwrap(),
            refusal.decision.reply.code
        ),
        ("no-ghost", 451)
    );
    assert!(
        set.check_early(Stage::Mail, &facts("x@ok.test", &[], None))
            .is_ok()
    );

    let guarded = rules(
        r#"
        [[rule]]
        name = "allow-by-subject"
        when.subject = "urgent"
        action = "accept"
        [[rule]]
        name = "block-sender"
        when.sender_domain = "spam.test"
        action = "reject"
        "#,
    );
    assert!(
        guarded
            .check_early(Stage::Mail, &facts("x@spam.test", &[], None))
            .is_ok()
    );
}

#[test]
fn unless_negates_each_condition() {
    let set = rules(
        r#"
        [[rule]]
        name = "external-tag"
        unless.sender_domain = "example.test"
        unless.trusted = true
        action = "tag"
        subject_prefix = "[EXT]"
        "#,
    );
    let to = rcpts(&["bob@example.test"]);
    assert_eq!(
        set.evaluate(&facts("a@remote.test", &to, None))
            .matched
            .len(),
        1
    );
    assert!(
        set.evaluate(&facts("a@example.test", &to, None))
            .matched
            .is_empty()
    );
}

#[test]
fn redirect_replaces_only_the_matched_recipient_and_rewrite_maps_addresses() {
    let set = rules(
        r#"
        [[rule]]
        name = "retired"
        when.recipient = "old@example.test"
        action = "redirect"
        to = ["new@example.test"]
        [[rule]]
        name = "rename-domain"
        when.any = true
        action = "rewrite"
        sender = [{ from = "/^(.*)@legacy\\.test$/", to = "$1@example.test" }]
        "#,
    );
    let to = rcpts(&["old@example.test", "bob@example.test"]);
    let verdict = set.evaluate(&facts("carol@legacy.test", &to, None));
    assert_eq!(
        verdict.recipients,
        rcpts(&["new@example.test", "bob@example.test"])
    );
    assert_eq!(verdict.sender, "carol@example.test");
}

#[test]
fn content_conditions_see_headers_subject_body_and_attachments() {
    let set = rules(
        r#"
        [[rule]]
        name = "strip-exe"
        when.attachment_extension = ["exe", ".scr"]
        action = "strip_attachments"
        [[rule]]
        name = "tag-mailer"
        when.header."X-Mailer" = "/bulk ?mailer/i"
        when.body = "unsubscribe"
        action = "tag"
        add_header = { "X-Bulk" = "yes" }
        "#,
    );
    let raw = b"X-Mailer: Bulk Mailer 2\r\nSubject: hi\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nclick to UNSUBSCRIBE\r\n--B\r\nContent-Type: application/octet-stream; name=a.EXE\r\n\r\nxx\r\n--B--\r\n";
    let content = Content::analyze(raw, &Limits::default());
    let to = rcpts(&["bob@example.test"]);
    let verdict = set.evaluate(&facts("a@remote.test", &to, Some(&content)));
    assert_eq!(
        verdict.summary(),
        "strip-exe(strip_attachments),tag-mailer(tag)"
    );
    assert_eq!(verdict.removals.len(), 1);
    let out = String::from_utf8(verdict.apply(raw)).unwrap();
    assert!(out.starts_with("X-Bulk: yes\r\nX-Mailer"), "{out}");
    assert!(!out.contains("a.EXE\r\n\r\nxx"), "{out}");
}

#[test]
fn errors_name_file_line_and_what_to_write() {
    let cases = [
        (
            "[[rule]]\nname = \"a\"\naction = \"bounce\"\n",
            3,
            "unknown action 'bounce'",
        ),
        (
            "[[rule]]\nname = \"a\"\nwhen.subject = \"/(unclosed/\"\naction = \"reject\"\n",
            3,
            "not a valid regex",
        ),
        (
            "[[rule]]\nname = \"a\"\naction = \"reject\"\nreply = \"250 ok\"\n",
            4,
            "reply must be",
        ),
        (
            "[[rule]]\nname = \"a\"\nwhen.sender_domian = \"x\"\naction = \"reject\"\n",
            3,
            "unknown field",
        ),
        (
            "[[rule]]\nname = \"a\"\naction = \"strip_attachments\"\n",
            3,
            "needs when.attachment",
        ),
        (
            "[[rule]]\nname = \"a\"\naction = \"redirect\"\n",
            3,
            "needs to =",
        ),
        (
            "[[rule]]\nname = \"a\"\nwhen.attachment_magic = \"exe2\"\naction = \"reject\"\n",
            3,
            "not a known type",
        ),
        (
            "[[rule]]\nname = \"a\"\nwhen.any = true\naction = \"accept\"\n[[rule]]\nname = \"a\"\naction = \"accept\"\n",
            5,
            "names must be unique",
        ),
    ];
    let cases = cases.into_iter().chain([
        (
            "[[rule]]\nname = \"a\"\naction = \"reject\"\n",
            1,
            "write when.any = true",
        ),
        (
            "[[rule]]\nname = \"a\"\nwhen = {}\naction = \"reject\"\n",
            1,
            "would apply to every message",
        ),
        (
            "[[rule]]\nname = \"a\"\nwhen.any = true\nunless.any = true\naction = \"reject\"\n",
            1,
            "unless.any means nothing",
        ),
    ]);
    for (text, line, words) in cases {
        let err = RuleSet::from_text("r.toml", text)
            .err()
            .unwrap_or_else(|| panic!("{text} compiled"));
        assert_eq!(err.line, Some(line), "{err}");
        assert!(err.to_string().contains(words), "{err}");
        assert!(
            err.to_string().starts_with(&format!("r.toml:{line}: ")),
            "{err}"
        );
    }
}

#[test]
fn client_conditions_see_the_reverse_name_and_the_address() {
    let set = rules(
        r#"
        [[rule]]
        name = "partner"
        when.client_name = "*.remote.test"
        when.client_ip = ["192.0.2.0/24"]
        action = "tag"
        add_header = { "X-Partner" = "yes" }
        "#,
    );
    let to = rcpts(&["bob@example.test"]);
    assert_eq!(set.evaluate(&facts("a@x.test", &to, None)).matched.len(), 1);
    let mut unnamed = facts("a@x.test", &to, None);
    unnamed.client_name = None;
    assert!(set.evaluate(&unnamed).matched.is_empty());
}

#[test]
fn scanner_results_are_facts_for_the_rules() {
    let set = rules(
        r#"
[[rule]]
name = "eicar"
when.virus = "/^Eicar/"
action = "quarantine"

[[rule]]
name = "spammy"
when.min_spam_score = 5.0
when.spam_symbol = "BAYES_SPAM"
action = "tag"
subject_prefix = "[spam]"

[[rule]]
name = "soft"
when.spam_action = "soft reject"
action = "tempfail"
"#,
    );
    let content = Content::analyze(b"Subject: x\r\n\r\nbody\r\n", &Default::default());
    let recipients = rcpts(&["a@example.test"]);
    let score = |score: f64, action: &str, symbols: &[&str]| crate::scanners::rspamd::Score {
        score,
        required_score: 15.0,
        action: action.into(),
        symbols: symbols
            .iter()
            .map(|s| (s.to_string(), serde_json::Value::Null))
            .collect(),
        subject: None,
    };
    let judge = |scan: &crate::scanners::ScanFacts| {
        let mut f = facts("s@remote.test", &recipients, Some(&content));
        f.scan = Some(scan);
        set.judge_content(f, 100, Some(&content), None)
            .matched
            .iter()
            .map(|m| m.rule.clone())
            .collect::<Vec<_>>()
    };
    let virus = crate::scanners::ScanFacts {
        virus: Some("Eicar-Test-Signature".into()),
        ..Default::default()
    };
    assert_eq!(judge(&virus), ["eicar"]);
    let spam = crate::scanners::ScanFacts {
        spam: Some(score(7.5, "add header", &["BAYES_SPAM", "R_DKIM_NA"])),
        ..Default::default()
    };
    assert_eq!(judge(&spam), ["spammy"]);
    let low = crate::scanners::ScanFacts {
        spam: Some(score(4.9, "soft reject", &["BAYES_SPAM"])),
        ..Default::default()
    };
    assert_eq!(judge(&low), ["soft"]);
    assert!(judge(&crate::scanners::ScanFacts::default()).is_empty());
}
