//! File tools, confined to the workspace: `read_file`, `write_file`, `edit_file`, `list_files`.

use std::path::Path;

use serde_json::Value;

use super::ToolOutcome;
use crate::workspace::Workspace;

/// Entries `list_files` returns at most.
const MAX_ENTRIES: usize = 1000;

fn string_field<'a>(input: &'a Value, name: &str) -> Result<&'a str, ToolOutcome> {
    input[name]
        .as_str()
        .ok_or_else(|| ToolOutcome::failed(format!("missing string field {name:?}")))
}

/// `read_file {path}`: the file's text (lossy UTF-8), bounded.
pub async fn read_file(workspace: &Workspace, input: &Value, cap: usize) -> ToolOutcome {
    let raw = match string_field(input, "path") {
        Ok(raw) => raw,
        Err(failed) => return failed,
    };
    let path = match workspace.existing_for_tool(raw) {
        Ok(path) => path,
        Err(err) => return ToolOutcome::failed(err),
    };
    if path.is_dir() {
        return ToolOutcome::failed(format!("{raw:?} is a directory; use list_files"));
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) => ToolOutcome::ok(String::from_utf8_lossy(&bytes), cap),
        Err(err) => ToolOutcome::failed(format!("reading {raw:?}: {err}")),
    }
}

/// Writes `content` to `path` through a temporary file in the same directory, so a reader
/// never sees half a file. Returns the size written.
pub(crate) async fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<u64> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.warren-tmp"));
    tokio::fs::write(&temporary, content).await?;
    if let Err(err) = tokio::fs::rename(&temporary, path).await {
        let _ = tokio::fs::remove_file(&temporary).await;
        return Err(err);
    }
    Ok(content.len() as u64)
}

/// `write_file {path, content}`.
pub async fn write_file(workspace: &Workspace, input: &Value) -> ToolOutcome {
    let (raw, content) = match (string_field(input, "path"), string_field(input, "content")) {
        (Ok(raw), Ok(content)) => (raw, content),
        (Err(failed), _) | (_, Err(failed)) => return failed,
    };
    let path = match workspace.writable(raw, true) {
        Ok(path) => path,
        Err(err) => return ToolOutcome::failed(err),
    };
    match write_atomically(&path, content.as_bytes()).await {
        Ok(size) => {
            let shown = workspace.display(&path);
            ToolOutcome {
                ok: true,
                output: format!("wrote {size} bytes to {shown}"),
                truncated: false,
                files: vec![(shown, size)],
            }
        }
        Err(err) => ToolOutcome::failed(format!("writing {raw:?}: {err}")),
    }
}

/// `edit_file {path, old_string, new_string, replace_all?}`: exact replacement; `old_string`
/// must occur once unless `replace_all`.
pub async fn edit_file(workspace: &Workspace, input: &Value) -> ToolOutcome {
    let fields = (
        string_field(input, "path"),
        string_field(input, "old_string"),
        string_field(input, "new_string"),
    );
    let (raw, old, new) = match fields {
        (Ok(raw), Ok(old), Ok(new)) => (raw, old, new),
        (Err(failed), _, _) | (_, Err(failed), _) | (_, _, Err(failed)) => return failed,
    };
    if old.is_empty() {
        return ToolOutcome::failed("old_string must not be empty");
    }
    let replace_all = input["replace_all"].as_bool().unwrap_or(false);
    let path = match workspace.existing_for_tool(raw) {
        Ok(path) => path,
        Err(err) => return ToolOutcome::failed(err),
    };
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(err) => return ToolOutcome::failed(format!("reading {raw:?}: {err}")),
    };
    let count = text.matches(old).count();
    let edited = match (count, replace_all) {
        (0, _) => return ToolOutcome::failed(format!("old_string not found in {raw:?}")),
        (1, _) | (_, true) => text.replace(old, new),
        (n, false) => {
            return ToolOutcome::failed(format!(
                "old_string occurs {n} times in {raw:?}; add context or set replace_all"
            ));
        }
    };
    match write_atomically(&path, edited.as_bytes()).await {
        Ok(size) => {
            let shown = workspace.display(&path);
            ToolOutcome {
                ok: true,
                output: format!("replaced {count} occurrence(s) in {shown}"),
                truncated: false,
                files: vec![(shown, size)],
            }
        }
        Err(err) => ToolOutcome::failed(format!("writing {raw:?}: {err}")),
    }
}

/// `list_files {path?, recursive?}`: one entry per line, directories with a trailing `/`,
/// files with their size; symlinks are listed, not followed.
pub async fn list_files(workspace: &Workspace, input: &Value, cap: usize) -> ToolOutcome {
    let raw = input["path"].as_str().unwrap_or(".");
    let recursive = input["recursive"].as_bool().unwrap_or(false);
    let root = match workspace.existing_for_tool(raw) {
        Ok(path) => path,
        Err(err) => return ToolOutcome::failed(err),
    };
    if !root.is_dir() {
        return ToolOutcome::failed(format!("{raw:?} is not a directory"));
    }
    let mut lines = Vec::new();
    let mut pending = vec![root];
    while let Some(dir) = pending.pop() {
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(err) => return ToolOutcome::failed(format!("listing {raw:?}: {err}")),
        };
        let mut found = Vec::new();
        while let Ok(Some(entry)) = entries.next_entry().await {
            found.push(entry);
        }
        found.sort_by_key(|entry| entry.file_name());
        for entry in found {
            if lines.len() >= MAX_ENTRIES {
                lines.push(format!("[stopped after {MAX_ENTRIES} entries]"));
                return ToolOutcome::ok(lines.join("\n"), cap);
            }
            let path = entry.path();
            let shown = workspace.display(&path);
            match entry.file_type().await {
                Ok(kind) if kind.is_dir() => {
                    lines.push(format!("{shown}/"));
                    if recursive {
                        pending.push(path);
                    }
                }
                Ok(kind) if kind.is_symlink() => lines.push(format!("{shown} (symlink)")),
                _ => {
                    let size = entry.metadata().await.map(|m| m.len()).unwrap_or(0);
                    lines.push(format!("{shown} ({size} bytes)"));
                }
            }
        }
    }
    if lines.is_empty() {
        return ToolOutcome::ok("(empty)", cap);
    }
    ToolOutcome::ok(lines.join("\n"), cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn write_edit_read_and_list_stay_in_the_workspace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ws = Workspace::open(dir.path()).expect("open");
        let written =
            write_file(&ws, &json!({"path": "src/a.txt", "content": "one two two"})).await;
        assert!(written.ok, "{}", written.output);
        assert_eq!(written.files, [("src/a.txt".to_owned(), 11)]);

        let ambiguous = edit_file(
            &ws,
            &json!({"path": "src/a.txt", "old_string": "two", "new_string": "2"}),
        )
        .await;
        assert!(!ambiguous.ok && ambiguous.output.contains("2 times"));
        let edited = edit_file(
            &ws,
            &json!({"path": "src/a.txt", "old_string": "one", "new_string": "1"}),
        )
        .await;
        assert!(edited.ok, "{}", edited.output);

        let read = read_file(&ws, &json!({"path": "src/a.txt"}), 1000).await;
        assert_eq!(read.output, "1 two two");
        let listed = list_files(&ws, &json!({"recursive": true}), 1000).await;
        assert_eq!(listed.output, "src/\nsrc/a.txt (9 bytes)");

        let escaped = write_file(&ws, &json!({"path": "../x", "content": ""})).await;
        assert!(!escaped.ok && escaped.output.contains("invalid path"));
        assert!(!dir.path().join("../x").exists());
    }
}
