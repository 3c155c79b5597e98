//! The approval flow over HTTP against the real binary: admin bootstrap, admins notified by
//! email, approve / reject / revoke / role changes taking effect on the user's next request, and
//! `open` mode.

mod common;
mod edge_support;

use edge_support::Platform;
use serde_json::json;
use std::time::Duration;
use warren_testkit::wait_for;

const KEY: &str = "sk-approval-test-key-000000";

#[tokio::test]
async fn guests_wait_for_an_admin_whose_decisions_apply_on_the_next_request() {
    let platform =
        Platform::start(&[("WARREN_ADMIN_EMAILS", "Boss@Example.com, other@example.com")]).await;
    let boss = platform.sign_in("boss@example.com").await;
    let me = platform.get("/api/v1/users/me", Some(&boss.access)).await;
    assert_eq!(
        me.body["role"], "admin",
        "configured admins are admins from the first sign-in"
    );
    assert_eq!(me.body["status"], "approved");

    let guest = platform.sign_in("guest@example.com").await;
    let guest_me = platform.get("/api/v1/users/me", Some(&guest.access)).await;
    assert_eq!(guest_me.body["status"], "pending");
    assert_eq!(guest_me.body["role"], "guest");
    let guest_id = guest_me.body["id"].as_str().expect("id").to_owned();

    // Both configured admins hear about it (the notifier worker, by email).
    for admin in ["boss@example.com", "other@example.com"] {
        let notice = wait_for(Duration::from_secs(20), || async {
            platform
                .smtp
                .mails_to(admin)
                .into_iter()
                .find(|mail| mail.text().contains(&guest_id))
        })
        .await;
        assert!(
            notice.text().contains("guest@example.com"),
            "{}",
            notice.text()
        );
        assert!(
            notice
                .header("Subject")
                .expect("subject")
                .contains("waiting for approval")
        );
    }

    let key = json!({ "provider": "anthropic", "api_key": KEY });
    let refused = platform
        .post(
            "/api/v1/users/me/api-keys",
            Some(&guest.access),
            key.clone(),
        )
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body["error"]["code"], "not_approved");
    let not_admin = platform
        .get("/api/v1/admin/users", Some(&guest.access))
        .await;
    assert_eq!(not_admin.status, 403);
    assert_eq!(not_admin.body["error"]["code"], "forbidden");

    let pending = platform
        .get("/api/v1/admin/users?status=pending", Some(&boss.access))
        .await;
    assert_eq!(pending.status, 200);
    let ids: Vec<&str> = pending
        .body
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|u| u["id"].as_str())
        .collect();
    assert_eq!(ids, [guest_id.as_str()]);
    let bad_filter = platform
        .get("/api/v1/admin/users?status=bogus", Some(&boss.access))
        .await;
    assert_eq!(bad_filter.status, 422);

    let approved = platform
        .call(
            "POST",
            &format!("/api/v1/admin/users/{guest_id}/approve"),
            Some(&boss.access),
            None,
        )
        .await;
    assert_eq!(approved.status, 200, "{approved:?}");
    assert_eq!(approved.body["status"], "approved");
    assert_eq!(approved.body["role"], "user");
    let allowed = platform
        .post(
            "/api/v1/users/me/api-keys",
            Some(&guest.access),
            key.clone(),
        )
        .await;
    assert_eq!(
        allowed.status, 201,
        "approval applies to the next request: {allowed:?}"
    );
    let twice = platform
        .call(
            "POST",
            &format!("/api/v1/admin/users/{guest_id}/approve"),
            Some(&boss.access),
            None,
        )
        .await;
    assert_eq!(twice.status, 409);

    let revoked = platform
        .post(
            &format!("/api/v1/admin/users/{guest_id}/revoke"),
            Some(&boss.access),
            json!({ "reason": "abuse" }),
        )
        .await;
    assert_eq!(revoked.status, 200, "{revoked:?}");
    assert_eq!(revoked.body["status"], "revoked");
    assert_eq!(revoked.body["status_reason"], "abuse");
    let after = platform
        .post(
            "/api/v1/users/me/api-keys",
            Some(&guest.access),
            key.clone(),
        )
        .await;
    assert_eq!(after.status, 403, "revocation applies to the next request");
    assert_eq!(after.body["error"]["code"], "not_approved");
    let status = platform.get("/api/v1/users/me", Some(&guest.access)).await;
    assert_eq!(
        status.body["status"], "revoked",
        "a revoked user still sees their status"
    );

    let applicant = platform.sign_in("applicant@example.com").await;
    let applicant_id = platform
        .get("/api/v1/users/me", Some(&applicant.access))
        .await
        .body["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let rejected = platform
        .post(
            &format!("/api/v1/admin/users/{applicant_id}/reject"),
            Some(&boss.access),
            json!({ "reason": "unknown" }),
        )
        .await;
    assert_eq!(rejected.status, 200);
    let seen = platform
        .get("/api/v1/users/me", Some(&applicant.access))
        .await;
    assert_eq!(seen.body["status"], "rejected");
    assert_eq!(seen.body["status_reason"], "unknown");
    let reject_again = platform
        .post(
            &format!("/api/v1/admin/users/{applicant_id}/reject"),
            Some(&boss.access),
            json!({}),
        )
        .await;
    assert_eq!(reject_again.status, 409);

    // Promote the (re-approved) guest to admin: admin routes open on the next request.
    platform
        .call(
            "POST",
            &format!("/api/v1/admin/users/{guest_id}/approve"),
            Some(&boss.access),
            None,
        )
        .await;
    let promoted = platform
        .patch(
            &format!("/api/v1/admin/users/{guest_id}"),
            Some(&boss.access),
            json!({ "role": "admin", "tier": "pro" }),
        )
        .await;
    assert_eq!(promoted.status, 200, "{promoted:?}");
    assert_eq!(promoted.body["role"], "admin");
    assert_eq!(promoted.body["tier"], "pro");
    let all = platform
        .get("/api/v1/admin/users?status=all", Some(&guest.access))
        .await;
    assert_eq!(all.status, 200);
    assert_eq!(all.body.as_array().expect("list").len(), 3);
    let demote_to_guest = platform
        .patch(
            &format!("/api/v1/admin/users/{guest_id}"),
            Some(&boss.access),
            json!({ "role": "guest" }),
        )
        .await;
    assert_eq!(demote_to_guest.status, 422);
    let boss_id = me.body["id"].as_str().expect("id");
    let self_revoke = platform
        .post(
            &format!("/api/v1/admin/users/{boss_id}/revoke"),
            Some(&boss.access),
            json!({}),
        )
        .await;
    assert_eq!(self_revoke.status, 409);
    assert_eq!(self_revoke.body["error"]["code"], "cannot_change_self");
    let nobody = uuid::Uuid::new_v4();
    let missing = platform
        .call(
            "POST",
            &format!("/api/v1/admin/users/{nobody}/approve"),
            Some(&boss.access),
            None,
        )
        .await;
    assert_eq!(missing.status, 404);
    let missing_patch = platform
        .patch(
            &format!("/api/v1/admin/users/{nobody}"),
            Some(&boss.access),
            json!({}),
        )
        .await;
    assert_eq!(missing_patch.status, 404);
}

#[tokio::test]
async fn in_open_mode_new_users_are_approved_at_once() {
    let platform = Platform::start(&[("WARREN_APPROVAL", "open")]).await;
    let user = platform.sign_in("open@example.com").await;
    let me = platform.get("/api/v1/users/me", Some(&user.access)).await;
    assert_eq!(me.body["status"], "approved");
    assert_eq!(me.body["role"], "user");
    let key = platform
        .post(
            "/api/v1/users/me/api-keys",
            Some(&user.access),
            json!({ "provider": "libertai", "api_key": KEY }),
        )
        .await;
    assert_eq!(key.status, 201, "{key:?}");
}
