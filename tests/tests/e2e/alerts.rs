//! The Prometheus alerting rules in docs/alerts: promtool checks their
//! syntax and runs their unit tests, and every alert must carry a severity,
//! a summary, a description and a runbook that exists.

use std::path::Path;
use std::process::Command;

use crate::support::{repo_root, tool};

const RULES: &str = "docs/alerts/valora.rules.yml";
const RULE_TESTS: &str = "docs/alerts/valora.rules.test.yml";

/// Runs promtool with `args` from the repository root and fails the test
/// with its output when it exits with an error.
fn run_promtool(promtool: &Path, args: &[&str]) {
    let output = Command::new(promtool)
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool {} failed with {}:\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

#[test]
fn alert_rules_pass_promtool_check() {
    let Some(promtool) = tool("promtool") else { return };
    run_promtool(&promtool, &["check", "rules", RULES]);
}

#[test]
fn alert_rules_pass_unit_tests() {
    let Some(promtool) = tool("promtool") else { return };
    run_promtool(&promtool, &["test", "rules", RULE_TESTS]);
}

/// Splits the rules file `text` into its alerts, each as its lines from
/// `- alert:` up to the next rule or group.
fn rule_blocks(text: &str) -> Vec<Vec<&str>> {
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    for line in text.lines() {
        let item = line.trim_start();
        if item.starts_with("- alert:") || item.starts_with("- record:") {
            blocks.push(vec![line]);
        } else if item.starts_with("- name:") {
            blocks.push(Vec::new());
        } else if let Some(block) = blocks.last_mut() {
            block.push(line);
        }
    }
    blocks.retain(|block| block.first().is_some_and(|line| line.trim_start().starts_with("- alert:")));
    blocks
}

/// Returns the value of the first `name: value` line of `block`.
fn field<'a>(block: &[&'a str], name: &str) -> Option<&'a str> {
    let prefix = format!("{name}:");
    block.iter().find_map(|line| line.trim_start().strip_prefix(prefix.as_str()).map(str::trim))
}

/// Converts a Markdown heading to its anchor as GitHub makes it: lower
/// case, spaces become hyphens, and punctuation other than `-` and `_` is
/// dropped.
fn heading_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Lists the anchors of the Markdown headings of `page`, skipping code
/// blocks.
fn heading_anchors(page: &str) -> Vec<String> {
    let mut in_code = false;
    let mut anchors = Vec::new();
    for line in page.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code {
            if let Some(heading) = line.strip_prefix('#') {
                anchors.push(heading_anchor(heading.trim_start_matches('#')));
            }
        }
    }
    anchors
}

#[test]
fn alert_rules_have_annotations_and_runbooks() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join(RULES)).expect("read the alerting rules");
    let blocks = rule_blocks(&text);
    assert!(blocks.len() >= 10, "expected at least 10 alerts in {RULES}, found {}", blocks.len());

    for block in &blocks {
        let alert = field(block, "- alert").expect("alert name");
        let severity = field(block, "severity");
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{alert}: severity must be warning or critical, found {severity:?}"
        );
        assert!(field(block, "summary").is_some_and(|s| !s.is_empty()), "{alert}: no summary");
        assert!(field(block, "description").is_some(), "{alert}: no description");

        let runbook = field(block, "runbook").unwrap_or_else(|| panic!("{alert}: no runbook"));
        let (file, anchor) = runbook.split_once('#').unwrap_or((runbook, ""));
        assert!(file.starts_with("docs/runbooks/"), "{alert}: runbook {runbook} is outside docs/runbooks/");
        let page = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("{alert}: runbook {file} cannot be read: {e}"));
        if !anchor.is_empty() {
            let anchors = heading_anchors(&page);
            assert!(
                anchors.iter().any(|a| a == anchor),
                "{alert}: {file} has no heading for #{anchor}; its anchors are {anchors:?}"
            );
        }
    }
}
