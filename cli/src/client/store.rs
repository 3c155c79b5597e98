//! What the client keeps between runs, in its directory (`WARREN_CLIENT_DIR`): the sign-in
//! (`credentials.json`, owner-only: it holds a refresh token) and the last session
//! (`session.json`), which `warren chat` resumes when no session is named.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A signed-in session with one platform.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Credentials {
    /// The platform they are for.
    pub url: String,
    /// Who signed in.
    pub email: String,
    /// The current access token.
    pub access_token: String,
    /// The current refresh token (single use: rotated at each refresh).
    pub refresh_token: String,
    /// When the access token expires (Unix seconds).
    pub expires_at: i64,
}

/// The session `warren chat` used last.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LastSession {
    /// The platform.
    pub url: String,
    /// The session (conversation).
    pub session_id: String,
    /// Its agent.
    pub agent_id: String,
}

/// The client's directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir` (created on first write).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn credentials_path(&self) -> PathBuf {
        self.dir.join("credentials.json")
    }

    fn session_path(&self) -> PathBuf {
        self.dir.join("session.json")
    }

    /// The saved sign-in, if any.
    pub fn credentials(&self) -> anyhow::Result<Option<Credentials>> {
        read(&self.credentials_path())
    }

    /// Saves the sign-in, readable by its owner only.
    pub fn save_credentials(&self, credentials: &Credentials) -> anyhow::Result<()> {
        self.write(&self.credentials_path(), credentials)
    }

    /// The last session, if any.
    pub fn last_session(&self) -> anyhow::Result<Option<LastSession>> {
        read(&self.session_path())
    }

    /// Remembers the session for the next `warren chat`.
    pub fn save_last_session(&self, session: &LastSession) -> anyhow::Result<()> {
        self.write(&self.session_path(), session)
    }

    /// Writes `value` as JSON to `path` through a temporary file created with mode 0600, so the
    /// secret is never readable by others, not even for a moment.
    fn write<T: Serialize>(&self, path: &Path, value: &T) -> anyhow::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let temporary = path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&temporary);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("writing {}", temporary.display()))?;
        file.write_all(&serde_json::to_vec_pretty(value)?)?;
        file.sync_all()?;
        // A file that existed before with wider rights is replaced, not reused.
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))
    }
}

fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_written_owner_only_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().join("warren"));
        assert!(store.credentials().expect("read").is_none());
        let credentials = Credentials {
            url: "http://x".into(),
            email: "a@b.c".into(),
            access_token: "a".into(),
            refresh_token: "r".into(),
            expires_at: 1,
        };
        store.save_credentials(&credentials).expect("save");
        store.save_credentials(&credentials).expect("save again");
        let mode = std::fs::metadata(dir.path().join("warren/credentials.json"))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let read = store.credentials().expect("read").expect("saved");
        assert_eq!(read.refresh_token, "r");
    }
}
