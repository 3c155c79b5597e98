//! The agent image, built here: no registry is needed (docs/adr/0025-sandboxes.md).
//!
//! `warren image build` (and `deploy/dev.sh` when the image is missing) makes
//! `warren-agent:<version>` in two parts:
//! 1. a Debian root filesystem from `debootstrap --variant=minbase` with [`PACKAGES`], made once
//!    per recipe under the cache directory (about 40 s; needs root and a Debian mirror), with
//!    apt's caches, documentation and locales removed;
//! 2. that tree plus the `warren-agent` binary, the `agent` user (uid 10001) and its `/data`,
//!    imported as one layer with `USER`, `WORKDIR`, `ENV` and `CMD` set.
//!
//! The image carries a label with the hash of the recipe and the binary: a build whose hash
//! matches the existing image's does nothing, so a build is cheap when nothing changed; the
//! image a new build replaces is removed unless a container still uses it.

use super::super::provisioner::ProvisionError;
use super::{AGENT_UID, DATA_DIR, failed, not_found};
use bollard::Docker;
use bollard::query_parameters::CreateImageOptions;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The Debian packages in the image, beyond `minbase`.
pub const PACKAGES: &str = "bash,coreutils,python3,git,curl,ca-certificates";
/// The Debian release.
pub const SUITE: &str = "bookworm";
/// The label holding the content hash.
pub const LABEL_CONTENT: &str = "org.warren.content";
/// Bumped whenever the recipe below changes in a way the hash would not see.
const RECIPE_VERSION: &str = "1";

/// `warren-agent:<version of this build>`.
pub fn default_tag() -> String {
    format!("warren-agent:{}", env!("CARGO_PKG_VERSION"))
}

/// What to build.
#[derive(Clone, Debug)]
pub struct ImageRecipe {
    /// `repo:tag`.
    pub tag: String,
    /// The `warren-agent` binary to put in.
    pub agent_bin: PathBuf,
    /// Where root filesystems are kept between builds.
    pub cache_dir: PathBuf,
    /// The Debian mirror.
    pub mirror: String,
}

/// What a build came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    /// The tag.
    pub tag: String,
    /// The content hash.
    pub content: String,
    /// Whether the existing image already had this content (nothing was built).
    pub unchanged: bool,
}

fn recipe_hash() -> String {
    let recipe = format!("{RECIPE_VERSION}\n{SUITE}\n{PACKAGES}\n");
    hex::encode(&Sha256::digest(recipe.as_bytes())[..8])
}

fn content_hash(agent_bin: &Path) -> Result<String, ProvisionError> {
    let mut hash = Sha256::new();
    hash.update(recipe_hash().as_bytes());
    let mut file = std::fs::File::open(agent_bin)
        .map_err(|err| ProvisionError(format!("reading {}: {err}", agent_bin.display())))?;
    std::io::copy(&mut file, &mut hash)
        .map_err(|err| ProvisionError(format!("reading {}: {err}", agent_bin.display())))?;
    Ok(hex::encode(&hash.finalize()[..16]))
}

/// The content hash of the image at `tag`, if it exists and has one.
pub async fn image_content(docker: &Docker, tag: &str) -> Result<Option<String>, ProvisionError> {
    match docker.inspect_image(tag).await {
        Ok(image) => Ok(image
            .config
            .and_then(|config| config.labels)
            .and_then(|labels| labels.get(LABEL_CONTENT).cloned())),
        Err(err) if not_found(&err) => Ok(None),
        Err(err) => Err(failed("inspecting the agent image")(err)),
    }
}

/// Builds the image unless it already holds this content.
pub async fn build(docker: &Docker, recipe: &ImageRecipe) -> Result<Built, ProvisionError> {
    let content = content_hash(&recipe.agent_bin)?;
    if image_content(docker, &recipe.tag).await?.as_deref() == Some(content.as_str()) {
        return Ok(Built {
            tag: recipe.tag.clone(),
            content,
            unchanged: true,
        });
    }
    let replaced = docker
        .inspect_image(&recipe.tag)
        .await
        .ok()
        .and_then(|image| image.id);
    let root = root_filesystem(recipe).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(16);
    let agent_bin = recipe.agent_bin.clone();
    let packer = tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter(tx.clone());
        if let Err(err) = pack(&root, &agent_bin, writer) {
            let _ = tx.blocking_send(Err(err));
        }
    });
    let body = tokio_stream_of(rx);
    let (repo, tag) = recipe
        .tag
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .unwrap_or((recipe.tag.as_str(), "latest"));
    let changes = vec![
        format!("USER {AGENT_UID}:{AGENT_UID}"),
        format!("WORKDIR {DATA_DIR}/workspace"),
        format!("ENV HOME={DATA_DIR}"),
        "ENV PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
        "CMD [\"warren-agent\"]".to_owned(),
        format!("LABEL {LABEL_CONTENT}={content}"),
    ];
    let mut progress = docker.create_image(
        Some(CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(repo.to_owned()),
            tag: Some(tag.to_owned()),
            changes,
            ..Default::default()
        }),
        Some(bollard::body_try_stream(body)),
        None,
    );
    while let Some(step) = progress.next().await {
        let step = step.map_err(failed("importing the agent image"))?;
        if let Some(error) = step.error_detail.and_then(|detail| detail.message) {
            return Err(ProvisionError(format!(
                "importing the agent image: {error}"
            )));
        }
    }
    packer
        .await
        .map_err(|err| ProvisionError(format!("packing the image: {err}")))?;
    // The image this tag named before is left untagged: remove it unless a container uses it.
    if let Some(old) = replaced {
        let _ = docker
            .remove_image(
                &old,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
    }
    Ok(Built {
        tag: recipe.tag.clone(),
        content,
        unchanged: false,
    })
}

fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A blocking writer that sends what it is given down a channel in chunks.
struct ChannelWriter(tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::other("the image import stopped reading"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes the image's one layer: the root filesystem (but `/dev`'s contents, which the engine
/// provides), the passwd and group files with the `agent` user, `/data`, and the binary.
fn pack(root: &Path, agent_bin: &Path, writer: impl Write) -> std::io::Result<()> {
    let buffered = std::io::BufWriter::with_capacity(1 << 20, writer);
    let mut archive = tar::Builder::new(buffered);
    archive.follow_symlinks(false);
    let skip = |path: &Path| {
        let relative = path.strip_prefix(root).unwrap_or(path);
        relative.starts_with("dev") && relative != Path::new("dev")
            || relative == Path::new("etc/passwd")
            || relative == Path::new("etc/group")
    };
    for entry in walk(root)? {
        if skip(&entry) {
            continue;
        }
        let name = entry.strip_prefix(root).unwrap_or(&entry);
        if name.as_os_str().is_empty() {
            continue;
        }
        archive.append_path_with_name(&entry, name)?;
    }
    for (file, line) in [
        (
            "etc/passwd",
            format!("agent:x:{AGENT_UID}:{AGENT_UID}:agent:{DATA_DIR}:/bin/bash\n"),
        ),
        ("etc/group", format!("agent:x:{AGENT_UID}:\n")),
    ] {
        let mut text = std::fs::read(root.join(file))?;
        text.extend_from_slice(line.as_bytes());
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(text.len() as u64);
        archive.append_data(&mut header, file, text.as_slice())?;
    }
    for dir in ["data", "data/workspace", "data/state"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(if dir == "data" { 0o755 } else { 0o700 });
        header.set_uid(AGENT_UID);
        header.set_gid(AGENT_UID);
        header.set_size(0);
        archive.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
    }
    let mut binary = std::fs::File::open(agent_bin)?;
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o755);
    header.set_size(binary.metadata()?.len());
    archive.append_data(&mut header, "usr/local/bin/warren-agent", &mut binary)?;
    archive.into_inner()?.flush()
}

/// Every path under `root`, parents before children, without following symlinks.
fn walk(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        paths.push(path.clone());
        if meta.is_dir() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(&path)?
                .map(|entry| entry.map(|entry| entry.path()))
                .collect::<Result<_, _>>()?;
            children.sort();
            pending.extend(children.into_iter().rev());
        }
    }
    Ok(paths)
}

/// The cached root filesystem of the current recipe, made with `debootstrap` if missing.
async fn root_filesystem(recipe: &ImageRecipe) -> Result<PathBuf, ProvisionError> {
    let dir = recipe.cache_dir.join(format!("rootfs-{}", recipe_hash()));
    let root = dir.join("root");
    let done = dir.join("complete");
    if done.is_file() {
        return Ok(root);
    }
    std::fs::create_dir_all(&recipe.cache_dir)
        .map_err(|err| ProvisionError(format!("creating {}: {err}", recipe.cache_dir.display())))?;
    // Another build may be under way: one debootstrap at a time per cache.
    let lock_path = recipe.cache_dir.join("rootfs.lock");
    let lock = tokio::task::spawn_blocking(move || -> Result<std::fs::File, String> {
        let file = std::fs::File::create(&lock_path)
            .map_err(|err| format!("creating {}: {err}", lock_path.display()))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|err| format!("locking {}: {err}", lock_path.display()))?;
        Ok(file)
    })
    .await
    .map_err(|err| ProvisionError(err.to_string()))?
    .map_err(ProvisionError)?;
    if done.is_file() {
        return Ok(root);
    }
    let work = dir.join("root.partial");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&dir)
        .map_err(|err| ProvisionError(format!("creating {}: {err}", dir.display())))?;
    tracing::info!(
        suite = SUITE,
        packages = PACKAGES,
        "building the agent root filesystem with debootstrap (about a minute)"
    );
    let output = tokio::process::Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={PACKAGES}"), SUITE])
        .arg(&work)
        .arg(&recipe.mirror)
        .output()
        .await
        .map_err(|err| {
            ProvisionError(format!(
                "running debootstrap failed ({err}): install it (apt-get install debootstrap) and build as root, or set WARREN_AGENT_IMAGE to an image with warren-agent on its PATH"
            ))
        })?;
    if !output.status.success() {
        let tail: String = String::from_utf8_lossy(&output.stderr)
            .lines()
            .chain(String::from_utf8_lossy(&output.stdout).lines())
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join(" | ");
        return Err(ProvisionError(format!("debootstrap failed: {tail}")));
    }
    for trimmed in [
        "var/cache/apt",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "usr/share/info",
    ] {
        let path = work.join(trimmed);
        let _ = std::fs::remove_dir_all(&path);
        let _ = std::fs::create_dir_all(&path);
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&work, &root)
        .map_err(|err| ProvisionError(format!("moving the root filesystem: {err}")))?;
    std::fs::write(&done, b"")
        .map_err(|err| ProvisionError(format!("writing {}: {err}", done.display())))?;
    drop(lock);
    Ok(root)
}
