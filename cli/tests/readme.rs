//! The README stays true: every `WARREN_*` variable the code reads is documented there.

use std::collections::BTreeSet;
use std::path::Path;

fn variables_in(dir: &Path, found: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            variables_in(&path, found);
        } else if path
            .extension()
            .is_some_and(|ext| ext == "rs" || ext == "sh" || ext == "yaml")
        {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let bytes = text.as_bytes();
            let mut i = 0;
            while let Some(at) = text[i..].find("WARREN_") {
                let start = i + at;
                let mut end = start + "WARREN_".len();
                while end < bytes.len()
                    && (bytes[end].is_ascii_uppercase()
                        || bytes[end].is_ascii_digit()
                        || bytes[end] == b'_')
                {
                    end += 1;
                }
                let name = &text[start..end];
                // A bare prefix (`WARREN_AGENT_*` in prose) is not a variable.
                if !name.ends_with('_') {
                    found.insert(name.to_owned());
                }
                i = end;
            }
        }
    }
}

#[test]
fn every_config_variable_is_documented_in_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let mut found = BTreeSet::new();
    for dir in [
        "cli/src",
        "edge/src",
        "workers/src",
        "commands/src",
        "projections/src",
        "deploy",
        "agent/src",
        "testkit/src",
    ] {
        variables_in(&root.join(dir), &mut found);
    }
    assert!(
        found.contains("WARREN_NATS_URL"),
        "the scan found the config: {found:?}"
    );
    let missing: Vec<&String> = found
        .iter()
        .filter(|name| !readme.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md does not document: {missing:?}"
    );
}
