//! Given/when/then tests for the User aggregate: every command, accepted and refused.

use super::*;
use crate::testing::{self, Given};
use uuid::Uuid;

pub(super) fn given(events: impl IntoIterator<Item = UserEvent>) -> Given<User> {
    testing::given(events)
}

pub(super) const USER: UserId = UserId(Uuid::from_u128(1));
const EMAIL_LINK: ConnectionId = ConnectionId(Uuid::from_u128(11));
const GITHUB_LINK: ConnectionId = ConnectionId(Uuid::from_u128(12));
const KEY: KeyId = KeyId(Uuid::from_u128(21));
const OTHER_KEY: KeyId = KeyId(Uuid::from_u128(22));

fn email_auth() -> AuthMethod {
    AuthMethod {
        connection_id: EMAIL_LINK,
        kind: AuthKind::Email,
        external_id: "ada@example.com".into(),
    }
}

fn github_auth() -> AuthMethod {
    AuthMethod {
        connection_id: GITHUB_LINK,
        kind: AuthKind::Github,
        external_id: "4242".into(),
    }
}

fn register(approval: ApprovalMode, is_admin: bool) -> UserCommand {
    UserCommand::RegisterUser {
        user_id: USER,
        email: Some(" ada@example.com ".into()),
        display_name: Some("Ada".into()),
        avatar_url: None,
        auth: email_auth(),
        approval,
        is_admin,
    }
}

fn registered(role: Role, status: UserStatus) -> UserEvent {
    UserEvent::UserRegistered {
        user_id: USER,
        email: Some("ada@example.com".into()),
        display_name: Some("Ada".into()),
        avatar_url: None,
        show_tool_calls: true,
        auth: email_auth(),
        role,
        status,
        tier: Tier::Free,
    }
}

pub(super) fn pending() -> UserEvent {
    registered(Role::Guest, UserStatus::Pending)
}

pub(super) fn approved() -> Vec<UserEvent> {
    vec![
        pending(),
        UserEvent::UserApproved {
            user_id: USER,
            role: Role::User,
        },
    ]
}

fn key_set(key_id: KeyId, provider: Provider, label: &str) -> UserEvent {
    UserEvent::ProviderKeySet {
        user_id: USER,
        key: ProviderKey {
            key_id,
            provider,
            base_url: None,
            label: label.into(),
            fingerprint: "sk-a…c123".into(),
        },
    }
}

fn set_key(key_id: KeyId, provider: Provider, base_url: Option<&str>) -> UserCommand {
    UserCommand::SetProviderKey {
        key_id,
        provider,
        base_url: base_url.map(str::to_owned),
        label: None,
        fingerprint: "sk-a…c123".into(),
    }
}

// --- registration ---

#[test]
fn registering_with_approval_required_makes_a_pending_guest() {
    let user = given([])
        .when(register(ApprovalMode::Required, false))
        .then_events([pending()]);
    assert_eq!(user.id, Some(USER));
    assert_eq!(user.auth_methods, vec![email_auth()]);
    assert!(!user.is_approved());
}

#[test]
fn registering_in_open_mode_approves_a_user_at_once() {
    given([])
        .when(register(ApprovalMode::Open, false))
        .then_events([registered(Role::User, UserStatus::Approved)]);
}

#[test]
fn a_configured_admin_registers_as_an_approved_admin_whatever_the_mode() {
    given([])
        .when(register(ApprovalMode::Required, true))
        .then_events([registered(Role::Admin, UserStatus::Approved)]);
}

#[test]
fn registering_twice_is_refused() {
    given([pending()])
        .when(register(ApprovalMode::Open, false))
        .then_error("already_exists");
}

#[test]
fn registering_with_a_blank_identity_or_a_bad_email_is_refused() {
    let mut command = register(ApprovalMode::Open, false);
    if let UserCommand::RegisterUser { auth, .. } = &mut command {
        auth.external_id = "  ".into();
    }
    given([]).when(command).then_error("invalid_input");

    let mut command = register(ApprovalMode::Open, false);
    if let UserCommand::RegisterUser { email, .. } = &mut command {
        *email = Some("not-an-address".into());
    }
    given([]).when(command).then_error("invalid_input");
}

#[test]
fn any_other_command_before_registration_is_not_found() {
    let error = given([])
        .when(UserCommand::ApproveUser)
        .then_error("not_found");
    assert_eq!(error.to_string(), "user not found (approve_user)");
}

// --- approval ---

#[test]
fn approving_a_pending_user_makes_them_a_user() {
    let user = given([pending()])
        .when(UserCommand::ApproveUser)
        .then_events([UserEvent::UserApproved {
            user_id: USER,
            role: Role::User,
        }]);
    assert_eq!((user.role, user.status), (Role::User, UserStatus::Approved));
}

#[test]
fn approving_an_approved_user_is_an_invalid_state() {
    let error = given(approved())
        .when(UserCommand::ApproveUser)
        .then_error("invalid_state");
    assert_eq!(error.to_string(), "cannot approve a user who is approved");
}

#[test]
fn a_rejected_or_revoked_user_can_be_approved_again() {
    let rejected = UserEvent::UserRejected {
        user_id: USER,
        reason: None,
    };
    given([pending(), rejected])
        .when(UserCommand::ApproveUser)
        .then_events([UserEvent::UserApproved {
            user_id: USER,
            role: Role::User,
        }]);

    let mut revoked = approved();
    revoked.push(UserEvent::UserAccessRevoked {
        user_id: USER,
        reason: None,
        role: Role::Guest,
    });
    given(revoked)
        .when(UserCommand::ApproveUser)
        .then_events([UserEvent::UserApproved {
            user_id: USER,
            role: Role::User,
        }]);
}

#[test]
fn rejecting_a_pending_user_keeps_the_trimmed_reason() {
    let user = given([pending()])
        .when(UserCommand::RejectUser {
            reason: Some(" not authorized ".into()),
        })
        .then_events([UserEvent::UserRejected {
            user_id: USER,
            reason: Some("not authorized".into()),
        }]);
    assert_eq!(user.status, UserStatus::Rejected);
}

#[test]
fn only_pending_users_can_be_rejected() {
    given(approved())
        .when(UserCommand::RejectUser { reason: None })
        .then_error("invalid_state");
}

#[test]
fn revoking_an_approved_user_makes_them_a_guest() {
    let user = given(approved())
        .when(UserCommand::RevokeAccess {
            reason: Some(String::new()),
        })
        .then_events([UserEvent::UserAccessRevoked {
            user_id: USER,
            reason: None,
            role: Role::Guest,
        }]);
    assert_eq!((user.role, user.status), (Role::Guest, UserStatus::Revoked));
}

#[test]
fn only_approved_users_can_be_revoked() {
    given([pending()])
        .when(UserCommand::RevokeAccess { reason: None })
        .then_error("invalid_state");
}

// --- roles and tiers ---

#[test]
fn an_approved_user_can_be_made_admin() {
    let user = given(approved())
        .when(UserCommand::ChangeRole { role: Role::Admin })
        .then_events([UserEvent::RoleChanged {
            user_id: USER,
            role: Role::Admin,
        }]);
    assert_eq!(user.role, Role::Admin);
}

#[test]
fn changing_to_the_current_role_changes_nothing() {
    given(approved())
        .when(UserCommand::ChangeRole { role: Role::User })
        .then_nothing();
}

#[test]
fn a_pending_user_cannot_be_given_a_role() {
    given([pending()])
        .when(UserCommand::ChangeRole { role: Role::Admin })
        .then_error("not_approved");
}

#[test]
fn guest_is_not_an_assignable_role() {
    given(approved())
        .when(UserCommand::ChangeRole { role: Role::Guest })
        .then_error("invalid_input");
}

#[test]
fn the_tier_changes_in_any_status_and_a_same_tier_change_is_a_no_op() {
    let user = given([pending()])
        .when(UserCommand::ChangeTier { tier: Tier::Pro })
        .then_events([UserEvent::TierChanged {
            user_id: USER,
            tier: Tier::Pro,
        }]);
    assert_eq!(user.tier, Tier::Pro);

    given([pending()])
        .when(UserCommand::ChangeTier { tier: Tier::Free })
        .then_nothing();
}

// --- auth methods ---

#[test]
fn a_second_identity_can_be_linked() {
    let user = given([pending()])
        .when(UserCommand::LinkAuthMethod {
            auth: github_auth(),
        })
        .then_events([UserEvent::AuthMethodLinked {
            user_id: USER,
            auth: github_auth(),
        }]);
    assert_eq!(user.auth_methods.len(), 2);
}

#[test]
fn the_same_identity_or_connection_cannot_be_linked_twice() {
    let same_identity = AuthMethod {
        connection_id: GITHUB_LINK,
        ..email_auth()
    };
    given([pending()])
        .when(UserCommand::LinkAuthMethod {
            auth: same_identity,
        })
        .then_error("auth_method_already_linked");

    let same_connection = AuthMethod {
        connection_id: EMAIL_LINK,
        ..github_auth()
    };
    given([pending()])
        .when(UserCommand::LinkAuthMethod {
            auth: same_connection,
        })
        .then_error("auth_method_already_linked");
}

#[test]
fn linking_a_blank_identity_is_refused() {
    let blank = AuthMethod {
        external_id: String::new(),
        ..github_auth()
    };
    given([pending()])
        .when(UserCommand::LinkAuthMethod { auth: blank })
        .then_error("invalid_input");
}

#[test]
fn an_identity_can_be_unlinked_while_another_remains() {
    let linked = UserEvent::AuthMethodLinked {
        user_id: USER,
        auth: github_auth(),
    };
    let user = given([pending(), linked])
        .when(UserCommand::UnlinkAuthMethod {
            connection_id: EMAIL_LINK,
        })
        .then_events([UserEvent::AuthMethodUnlinked {
            user_id: USER,
            connection_id: EMAIL_LINK,
            kind: AuthKind::Email,
        }]);
    assert_eq!(user.auth_methods, vec![github_auth()]);
}

#[test]
fn the_last_identity_cannot_be_unlinked() {
    given([pending()])
        .when(UserCommand::UnlinkAuthMethod {
            connection_id: EMAIL_LINK,
        })
        .then_error("last_auth_method");
}

#[test]
fn unlinking_an_unknown_connection_is_refused() {
    given([pending()])
        .when(UserCommand::UnlinkAuthMethod {
            connection_id: GITHUB_LINK,
        })
        .then_error("auth_method_not_found");
}

// --- profile ---

#[test]
fn a_profile_update_carries_the_whole_resulting_profile() {
    let user = given([pending()])
        .when(UserCommand::UpdateProfile {
            display_name: None,
            avatar_url: Some("https://example.com/a.png".into()),
            show_tool_calls: Some(false),
        })
        .then_events([UserEvent::ProfileUpdated {
            user_id: USER,
            display_name: Some("Ada".into()),
            avatar_url: Some("https://example.com/a.png".into()),
            show_tool_calls: false,
        }]);
    assert!(!user.show_tool_calls);
}

#[test]
fn a_blank_display_name_clears_it() {
    given([pending()])
        .when(UserCommand::UpdateProfile {
            display_name: Some(" ".into()),
            avatar_url: None,
            show_tool_calls: None,
        })
        .then_events([UserEvent::ProfileUpdated {
            user_id: USER,
            display_name: None,
            avatar_url: None,
            show_tool_calls: true,
        }]);
}

#[test]
fn a_profile_update_that_changes_nothing_emits_nothing() {
    given([pending()])
        .when(UserCommand::UpdateProfile {
            display_name: Some("Ada".into()),
            avatar_url: None,
            show_tool_calls: Some(true),
        })
        .then_nothing();
}

#[test]
fn an_avatar_that_is_not_a_web_url_is_refused() {
    given([pending()])
        .when(UserCommand::UpdateProfile {
            display_name: None,
            avatar_url: Some("javascript:alert(1)".into()),
            show_tool_calls: None,
        })
        .then_error("invalid_input");
}

// --- provider keys ---

#[test]
fn an_approved_user_can_set_a_key_under_the_default_label() {
    let user = given(approved())
        .when(set_key(KEY, Provider::Anthropic, None))
        .then_events([key_set(KEY, Provider::Anthropic, "default")]);
    assert!(user.provider_key(Provider::Anthropic, "default").is_some());
}

#[test]
fn setting_a_key_for_the_same_provider_and_label_replaces_the_old_one() {
    let mut history = approved();
    history.push(key_set(KEY, Provider::Anthropic, "default"));
    let user = given(history)
        .when(set_key(OTHER_KEY, Provider::Anthropic, None))
        .then_events([
            UserEvent::ProviderKeyRemoved {
                user_id: USER,
                key_id: KEY,
            },
            key_set(OTHER_KEY, Provider::Anthropic, "default"),
        ]);
    assert_eq!(user.provider_keys.len(), 1);
}

#[test]
fn keys_for_other_providers_live_side_by_side() {
    let mut history = approved();
    history.push(key_set(KEY, Provider::Anthropic, "default"));
    given(history)
        .when(set_key(OTHER_KEY, Provider::Openrouter, None))
        .then_events([key_set(OTHER_KEY, Provider::Openrouter, "default")]);
}

#[test]
fn a_pending_user_cannot_set_a_key() {
    given([pending()])
        .when(set_key(KEY, Provider::Anthropic, None))
        .then_error("not_approved");
}

#[test]
fn the_custom_provider_needs_a_web_base_url() {
    given(approved())
        .when(set_key(KEY, Provider::Custom, None))
        .then_error("invalid_input");
    given(approved())
        .when(set_key(KEY, Provider::Custom, Some("ftp://proxy")))
        .then_error("invalid_input");
    given(approved())
        .when(set_key(
            KEY,
            Provider::Custom,
            Some("https://llm.internal/v1"),
        ))
        .then_events([UserEvent::ProviderKeySet {
            user_id: USER,
            key: ProviderKey {
                base_url: Some("https://llm.internal/v1".into()),
                ..key_set_key(KEY, Provider::Custom)
            },
        }]);
}

fn key_set_key(key_id: KeyId, provider: Provider) -> ProviderKey {
    match key_set(key_id, provider, "default") {
        UserEvent::ProviderKeySet { key, .. } => key,
        other => panic!("not a key event: {other:?}"),
    }
}

#[test]
fn a_fingerprint_long_enough_to_be_a_key_is_refused() {
    let command = UserCommand::SetProviderKey {
        key_id: KEY,
        provider: Provider::Openai,
        base_url: None,
        label: None,
        fingerprint: "sk-proj-0123456789abcdef".into(),
    };
    given(approved()).when(command).then_error("invalid_input");
}

#[test]
fn reusing_a_key_id_is_refused() {
    let mut history = approved();
    history.push(key_set(KEY, Provider::Anthropic, "work"));
    given(history)
        .when(set_key(KEY, Provider::Openai, None))
        .then_error("duplicate_key");
}

#[test]
fn a_key_can_be_removed_in_any_status() {
    let mut history = approved();
    history.push(key_set(KEY, Provider::Anthropic, "default"));
    history.push(UserEvent::UserAccessRevoked {
        user_id: USER,
        reason: None,
        role: Role::Guest,
    });
    let user = given(history)
        .when(UserCommand::RemoveProviderKey { key_id: KEY })
        .then_events([UserEvent::ProviderKeyRemoved {
            user_id: USER,
            key_id: KEY,
        }]);
    assert!(user.provider_keys.is_empty());
}

#[test]
fn removing_an_unknown_key_is_refused() {
    given(approved())
        .when(UserCommand::RemoveProviderKey { key_id: KEY })
        .then_error("key_not_found");
}

#[test]
fn fingerprints_show_little_of_the_secret() {
    assert_eq!(fingerprint("sk-ant-api03-abcdefghijklmnop"), "sk-a…mnop");
    assert_eq!(fingerprint("0123456789abcd"), "01…cd");
    assert_eq!(fingerprint("short"), "…");
    assert!(fingerprint(&"x".repeat(200)).chars().count() <= MAX_FINGERPRINT_CHARS);
}

// --- names ---

#[test]
fn enum_names_round_trip_through_strings_and_serde() {
    for role in Role::ALL {
        assert_eq!(role.as_str().parse::<Role>(), Ok(*role));
        assert_eq!(
            serde_json::to_value(role).expect("serializes"),
            serde_json::json!(role.as_str())
        );
    }
    for provider in Provider::ALL {
        assert_eq!(provider.to_string().parse::<Provider>(), Ok(*provider));
    }
    let error = "root".parse::<Role>().expect_err("not a role");
    assert_eq!(error.to_string(), "unknown Role \"root\"");
}

#[test]
fn every_provider_speaks_openais_protocol_but_anthropic() {
    use crate::user::ModelProtocol;
    for provider in Provider::ALL {
        let expected = if *provider == Provider::Anthropic {
            ModelProtocol::Anthropic
        } else {
            ModelProtocol::Openai
        };
        assert_eq!(provider.protocol(), expected, "{provider}");
    }
}
