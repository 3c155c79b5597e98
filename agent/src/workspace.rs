//! [`Workspace`]: the one directory the tools and `/files` may touch. Every path is checked twice:
//! lexically (no absolute paths outside the root, no `..`) and after resolving symlinks (the
//! canonical path must stay under the canonical root).

use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a path was refused or not found.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// Absolute, `..`, empty or otherwise not a plain relative path.
    #[error("invalid path {0:?}: use a relative path inside the workspace")]
    Invalid(String),
    /// Resolves (through a symlink) outside the workspace.
    #[error("path {0:?} leads outside the workspace")]
    Escapes(String),
    /// Does not exist.
    #[error("no such file or directory: {0:?}")]
    NotFound(String),
    /// The filesystem failed.
    #[error("filesystem error on {path:?}")]
    Io {
        /// The path as given.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The sandbox's workspace root (canonical).
#[derive(Clone, Debug)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// Creates the directory if needed and canonicalizes it.
    pub fn open(path: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(path)?;
        Ok(Self {
            root: path.canonicalize()?,
        })
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `raw` as a clean relative path. Absolute paths are accepted only when `absolute_inside`
    /// and they name something under the root (models often answer with absolute paths).
    fn lexical(&self, raw: &str, absolute_inside: bool) -> Result<PathBuf, PathError> {
        let invalid = || PathError::Invalid(raw.to_owned());
        if raw.contains('\0') {
            return Err(invalid());
        }
        let mut path = Path::new(raw);
        if path.is_absolute() {
            if !absolute_inside {
                return Err(invalid());
            }
            path = path.strip_prefix(&self.root).map_err(|_| invalid())?;
        }
        let mut clean = PathBuf::new();
        for component in path.components() {
            match component {
                Component::Normal(part) => clean.push(part),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(invalid());
                }
            }
        }
        Ok(clean)
    }

    /// `canonical` if it is under the root.
    fn inside(&self, raw: &str, canonical: PathBuf) -> Result<PathBuf, PathError> {
        if canonical.starts_with(&self.root) {
            Ok(canonical)
        } else {
            Err(PathError::Escapes(raw.to_owned()))
        }
    }

    /// An existing file or directory, resolved; `raw` must be relative.
    pub fn existing(&self, raw: &str) -> Result<PathBuf, PathError> {
        self.resolve_existing(raw, false)
    }

    /// Like [`Workspace::existing`], also accepting absolute paths under the root (for tools).
    pub fn existing_for_tool(&self, raw: &str) -> Result<PathBuf, PathError> {
        self.resolve_existing(raw, true)
    }

    fn resolve_existing(&self, raw: &str, absolute_inside: bool) -> Result<PathBuf, PathError> {
        let relative = self.lexical(raw, absolute_inside)?;
        match self.root.join(&relative).canonicalize() {
            Ok(canonical) => self.inside(raw, canonical),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                Err(PathError::NotFound(raw.to_owned()))
            }
            Err(source) => Err(PathError::Io {
                path: raw.to_owned(),
                source,
            }),
        }
    }

    /// A path that may be created or overwritten: its deepest existing ancestor and, if it
    /// exists, the path itself must resolve inside the root. Missing parents are not created.
    pub fn writable(&self, raw: &str, absolute_inside: bool) -> Result<PathBuf, PathError> {
        let relative = self.lexical(raw, absolute_inside)?;
        if relative.as_os_str().is_empty() {
            return Err(PathError::Invalid(raw.to_owned()));
        }
        let target = self.root.join(&relative);
        if target.symlink_metadata().is_ok() {
            // Exists (maybe as a symlink, even a dangling one): where it points must be inside.
            let canonical = target
                .canonicalize()
                .map_err(|_| PathError::Escapes(raw.to_owned()))?;
            self.inside(raw, canonical)?;
            return Ok(target);
        }
        let mut ancestor = target.parent();
        while let Some(dir) = ancestor {
            if dir.symlink_metadata().is_ok() {
                let canonical = dir
                    .canonicalize()
                    .map_err(|_| PathError::Escapes(raw.to_owned()))?;
                self.inside(raw, canonical)?;
                return Ok(target);
            }
            ancestor = dir.parent();
        }
        Err(PathError::Escapes(raw.to_owned()))
    }

    /// `path` relative to the root, for events and listings (`.` for the root itself).
    pub fn display(&self, path: &Path) -> String {
        match path.strip_prefix(&self.root) {
            Ok(relative) if relative.as_os_str().is_empty() => ".".into(),
            Ok(relative) => relative.to_string_lossy().into_owned(),
            Err(_) => path.to_string_lossy().into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().expect("tempdir");
        let workspace = Workspace::open(&dir.path().join("ws")).expect("open");
        (dir, workspace)
    }

    #[test]
    fn relative_paths_resolve_inside_the_root() {
        let (_dir, ws) = workspace();
        std::fs::write(ws.root().join("a.txt"), "x").expect("write");
        let path = ws.existing("./a.txt").expect("inside");
        assert_eq!(ws.display(&path), "a.txt");
        assert_eq!(ws.display(&ws.existing(".").expect("root")), ".");
    }

    #[test]
    fn parent_components_and_absolute_paths_are_refused() {
        let (_dir, ws) = workspace();
        for raw in ["../x", "a/../../x", "/etc/passwd", "a/../b"] {
            assert!(
                matches!(ws.existing(raw), Err(PathError::Invalid(_))),
                "{raw}"
            );
            assert!(
                matches!(ws.writable(raw, true), Err(PathError::Invalid(_))),
                "{raw}"
            );
        }
    }

    #[test]
    fn tools_may_name_absolute_paths_under_the_root() {
        let (_dir, ws) = workspace();
        std::fs::write(ws.root().join("a.txt"), "x").expect("write");
        let absolute = ws.root().join("a.txt");
        let raw = absolute.to_str().expect("utf-8");
        assert!(ws.existing(raw).is_err());
        assert_eq!(ws.existing_for_tool(raw).expect("inside"), absolute);
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused_for_reading_and_writing() {
        let (dir, ws) = workspace();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        std::fs::write(outside.join("secret"), "s").expect("write");
        std::os::unix::fs::symlink(&outside, ws.root().join("link")).expect("symlink");
        std::os::unix::fs::symlink(outside.join("secret"), ws.root().join("file"))
            .expect("symlink");
        assert!(matches!(
            ws.existing("link/secret"),
            Err(PathError::Escapes(_))
        ));
        assert!(matches!(ws.existing("file"), Err(PathError::Escapes(_))));
        assert!(matches!(
            ws.writable("link/new", false),
            Err(PathError::Escapes(_))
        ));
        assert!(matches!(
            ws.writable("file", false),
            Err(PathError::Escapes(_))
        ));
        assert!(ws.writable("sub/dir/new.txt", false).is_ok());
    }
}
