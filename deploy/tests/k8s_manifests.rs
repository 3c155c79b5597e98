//! The Kubernetes manifests in `deploy/k8s/` are valid objects of the Kubernetes API (checked
//! strictly against its schema by `kubernetes-validate`, which `deploy/test.sh` installs from
//! PyPI), every role has its probes and resource requests, and the NATS node config they mount
//! is one nats-server accepts.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Validates every document of `file` strictly against the newest Kubernetes schema the
/// package carries, and returns them as JSON; `Err` names the first invalid one.
const CHECK: &str = r#"
import json, sys, yaml, kubernetes_validate
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
version = kubernetes_validate.latest_version()
for doc in docs:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except Exception as err:
        print(f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {err}", file=sys.stderr)
        sys.exit(1)
print(json.dumps(docs))
"#;

fn validate(file: &Path) -> Result<Vec<Value>, String> {
    let output = Command::new("python3")
        .args(["-c", CHECK])
        .arg(file)
        .output()
        .expect("python3");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&output.stdout).expect("the documents as JSON"))
}

fn manifests() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/k8s")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

fn all_documents() -> Vec<Value> {
    manifests()
        .iter()
        .flat_map(|file| {
            validate(file).unwrap_or_else(|err| panic!("{} is invalid: {err}", file.display()))
        })
        .collect()
}

#[test]
fn the_schema_check_refuses_a_misspelt_field() {
    // The check itself works: a field the API does not have is refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 2\n  selector: {matchLabels: {app: x}}\n  template:\n    metadata: {labels: {app: x}}\n    spec: {containers: [{name: x, image: x}]}\n",
    )
    .expect("write");
    let refused = validate(&file).expect_err("a misspelt field is refused");
    assert!(refused.contains("replica"), "{refused}");
}

#[test]
fn every_manifest_is_a_valid_kubernetes_object() {
    let documents = all_documents();
    let kinds: Vec<String> = documents
        .iter()
        .map(|doc| {
            format!(
                "{}/{}",
                doc["kind"].as_str().unwrap_or_default(),
                doc["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    for wanted in [
        "StatefulSet/warren-nats",
        "Deployment/warren-edge",
        "Deployment/warren-chat",
        "Deployment/warren-projector",
        "Deployment/warren-notifier",
        "Deployment/warren-deployer",
        "Deployment/warren-telegram",
        "Job/warren-migrate",
        "Service/warren-edge",
        "Service/warren-nats",
    ] {
        assert!(
            kinds.iter().any(|kind| kind == wanted),
            "no {wanted}: {kinds:?}"
        );
    }
}

#[test]
fn every_role_has_probes_and_resource_requests() {
    for doc in all_documents() {
        let kind = doc["kind"].as_str().unwrap_or_default();
        if !matches!(kind, "Deployment" | "StatefulSet" | "Job") {
            continue;
        }
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        let containers = doc["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers");
        for container in containers {
            let requests = &container["resources"]["requests"];
            assert!(
                requests["cpu"].is_string() && requests["memory"].is_string(),
                "{kind}/{name} requests no cpu and memory"
            );
            assert!(
                container["resources"]["limits"]["memory"].is_string(),
                "{kind}/{name} has no memory limit"
            );
            if kind == "Job" {
                continue;
            }
            for probe in ["readinessProbe", "livenessProbe"] {
                assert!(
                    container[probe]["httpGet"]["path"].is_string(),
                    "{kind}/{name} has no {probe}"
                );
            }
            if name != "warren-nats" {
                assert_eq!(
                    container["readinessProbe"]["httpGet"]["path"], "/readyz",
                    "{name}"
                );
                assert_eq!(
                    container["livenessProbe"]["httpGet"]["path"], "/healthz",
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn the_nats_statefulsets_config_is_accepted_by_nats_server() {
    let documents = all_documents();
    let config = documents
        .iter()
        .find(|doc| doc["kind"] == "ConfigMap" && doc["metadata"]["name"] == "warren-nats")
        .and_then(|doc| doc["data"]["nats.conf"].as_str())
        .expect("the warren-nats ConfigMap's nats.conf");
    let dir = tempfile::tempdir().expect("tempdir");
    // The Secret mounted at auth/: what `warren nats-auth` writes.
    warren_deploy::nats_auth::write_server_files(
        &dir.path().join("auth"),
        &[
            "warren-nats-0.warren-nats",
            "warren-nats-1.warren-nats",
            "warren-nats-2.warren-nats",
        ],
    )
    .expect("nats-auth");
    let path = dir.path().join("nats.conf");
    std::fs::write(&path, config).expect("write");
    let binary = warren_deploy::nats::nats_server_binary(None).expect("nats-server binary");
    let output = Command::new(&binary)
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .env("POD_NAME", "warren-nats-0")
        .output()
        .expect("nats-server -t");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
