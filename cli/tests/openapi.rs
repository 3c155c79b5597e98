//! The OpenAPI document served by the real binary validates as OpenAPI 3.1, and a property-based
//! run of the whole API generated from it (`schemathesis`, signed in as an admin) finds no 5xx.
//!
//! `deploy/test.sh` installs `schemathesis` and `openapi-spec-validator` from PyPI; when either is
//! missing the matching check is skipped with a message saying so.

mod common;
mod edge_support;

use edge_support::Platform;
use std::process::Command;

fn have(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success())
}

#[tokio::test]
async fn the_served_document_validates_and_a_property_based_run_finds_no_server_errors() {
    // Google and GitHub sign-in configured, so their routes are exercised past the 404.
    let oauth = warren_testkit::oauth::TestOAuth::start().await;
    let mut env = edge_support::oauth_env(&oauth);
    env.extend([
        ("WARREN_APPROVAL", "open".to_owned()),
        ("WARREN_ADMIN_EMAILS", "admin@example.com".to_owned()),
        ("WARREN_TIER_FREE_MAX_AGENTS", "1000".to_owned()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let platform = Platform::start(&env).await;
    let admin = platform.sign_in("admin@example.com").await;
    let doc = platform.get("/api/v1/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    assert!(
        doc.body["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"))
    );
    let path = platform.dir.path().join("openapi.json");
    std::fs::write(&path, doc.body.to_string()).expect("write document");

    if have("python3", &["-c", "import openapi_spec_validator"]) {
        let validated = Command::new("python3")
            .args([
                "-c",
                "import json, sys; from openapi_spec_validator import validate; \
                 validate(json.load(open(sys.argv[1]))); print('valid')",
            ])
            .arg(&path)
            .output()
            .expect("run the validator");
        assert!(
            validated.status.success(),
            "the OpenAPI document does not validate:\n{}",
            String::from_utf8_lossy(&validated.stderr)
        );
    } else {
        eprintln!(
            "SKIPPED validation: python3 -m pip install openapi-spec-validator (deploy/test.sh does)"
        );
    }

    if !have("schemathesis", &["--version"]) {
        eprintln!(
            "SKIPPED the property-based run: schemathesis is not installed (deploy/test.sh installs it: pip install schemathesis)"
        );
        return;
    }
    let report = platform.dir.path().join("schemathesis");
    let run = tokio::process::Command::new("schemathesis")
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", platform.base))
        .args([
            "--header",
            &format!("Authorization: Bearer {}", admin.access),
        ])
        .args(["--checks", "not_a_server_error"])
        // Logging out would end the run's own session; every other operation is exercised.
        .args(["--exclude-path-regex", "/auth/logout"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "25", "--workers", "2", "--seed", "7"])
        .args(["--request-timeout", "10", "--no-color"])
        .arg("--report-dir")
        .arg(&report)
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(platform.dir.path())
        .output()
        .await
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "schemathesis found failures:\n{stdout}\n{}\nwarren log:\n{}",
        String::from_utf8_lossy(&run.stderr),
        platform
            .warren
            .log_text()
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("panick"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("{stdout}");
}
