//! Given/when/then tests of the text rules on every free-text field of the user commands.

use super::*;
use crate::testing::{self, Given};
use uuid::Uuid;

fn given(events: impl IntoIterator<Item = UserEvent>) -> Given<User> {
    testing::given(events)
}

const USER: UserId = UserId(Uuid::from_u128(1));
const LINK: ConnectionId = ConnectionId(Uuid::from_u128(11));
const KEY: KeyId = KeyId(Uuid::from_u128(21));
/// Characters no field accepts, and characters only multi-line fields accept.
const NEVER: [&str; 4] = ["\u{0}", "\u{1b}", "\u{7}", "\u{85}"];
const LINE_BREAKS: [&str; 3] = ["\n", "\r", "\t"];

fn auth(external_id: &str) -> AuthMethod {
    AuthMethod {
        connection_id: LINK,
        kind: AuthKind::Email,
        external_id: external_id.into(),
    }
}

fn register(email: &str, display_name: &str, avatar_url: &str, external_id: &str) -> UserCommand {
    UserCommand::RegisterUser {
        user_id: USER,
        email: Some(email.into()),
        display_name: Some(display_name.into()),
        avatar_url: Some(avatar_url.into()),
        auth: auth(external_id),
        approval: ApprovalMode::Required,
        is_admin: false,
    }
}

fn pending() -> UserEvent {
    UserEvent::UserRegistered {
        user_id: USER,
        email: Some("ada@example.com".into()),
        display_name: None,
        avatar_url: None,
        show_tool_calls: true,
        auth: auth("ada@example.com"),
        role: Role::Guest,
        status: UserStatus::Pending,
        tier: Tier::Free,
    }
}

fn approved() -> Vec<UserEvent> {
    vec![
        pending(),
        UserEvent::UserApproved {
            user_id: USER,
            role: Role::User,
        },
    ]
}

fn set_key(label: &str, base_url: &str, fingerprint: &str) -> UserCommand {
    UserCommand::SetProviderKey {
        key_id: KEY,
        provider: Provider::Custom,
        base_url: Some(base_url.into()),
        label: Some(label.into()),
        fingerprint: fingerprint.into(),
    }
}

/// Asserts `command` on a state built from `events` is refused as invalid `field`.
#[track_caller]
fn refused(events: Vec<UserEvent>, command: UserCommand, field: &str) {
    match given(events).when(command).then_error("invalid_input") {
        UserError::InvalidInput { field: got, .. } => assert_eq!(got, field),
        other => panic!("expected invalid_input, got {other}"),
    }
}

#[test]
fn registration_refuses_control_characters_in_every_text_field() {
    let url = "https://example.com/a.png";
    for c in NEVER.into_iter().chain(LINE_BREAKS) {
        let bad = format!("x{c}y");
        let email = format!("a{c}b@example.com");
        refused(vec![], register(&email, "Ada", url, "a@x.io"), "email");
        refused(
            vec![],
            register("a@x.io", &bad, url, "a@x.io"),
            "display_name",
        );
        let avatar = format!("{url}{c}x");
        refused(
            vec![],
            register("a@x.io", "Ada", &avatar, "a@x.io"),
            "avatar_url",
        );
        refused(vec![], register("a@x.io", "Ada", url, &bad), "external_id");
    }
}

#[test]
fn registration_refuses_overlong_names_emails_and_ids() {
    let url = "https://example.com/a.png";
    let email = format!("{}@example.com", "a".repeat(250));
    refused(vec![], register(&email, "Ada", url, "a@x.io"), "email");
    let name = "n".repeat(101);
    refused(
        vec![],
        register("a@x.io", &name, url, "a@x.io"),
        "display_name",
    );
    let id = "i".repeat(257);
    refused(vec![], register("a@x.io", "Ada", url, &id), "external_id");
}

#[test]
fn names_are_checked_after_trimming_so_surrounding_line_breaks_are_harmless() {
    given([])
        .when(register("a@x.io", "\n Ada Lovelace \n", "", "a@x.io"))
        .then_events([UserEvent::UserRegistered {
            user_id: USER,
            email: Some("a@x.io".into()),
            display_name: Some("Ada Lovelace".into()),
            avatar_url: None,
            show_tool_calls: true,
            auth: auth("a@x.io"),
            role: Role::Guest,
            status: UserStatus::Pending,
            tier: Tier::Free,
        }]);
}

#[test]
fn a_profile_update_refuses_control_characters_and_overlong_names() {
    for bad in [
        "Ada\u{0}",
        "Ada\u{1b}[31m",
        "Ada\nLovelace",
        &"n".repeat(101),
    ] {
        let command = UserCommand::UpdateProfile {
            display_name: Some(bad.into()),
            avatar_url: None,
            show_tool_calls: None,
        };
        refused(approved(), command, "display_name");
    }
    let command = UserCommand::UpdateProfile {
        display_name: None,
        avatar_url: Some("https://example.com/\u{0}.png".into()),
        show_tool_calls: None,
    };
    refused(approved(), command, "avatar_url");
}

#[test]
fn a_rejection_or_revocation_reason_may_span_lines_but_holds_no_other_control() {
    for c in NEVER {
        let reason = Some(format!("n{c}o"));
        refused(
            vec![pending()],
            UserCommand::RejectUser { reason },
            "reason",
        );
        let reason = Some(format!("n{c}o"));
        refused(approved(), UserCommand::RevokeAccess { reason }, "reason");
    }
    let reason = Some("x".repeat(1001));
    refused(
        vec![pending()],
        UserCommand::RejectUser { reason },
        "reason",
    );
    given([pending()])
        .when(UserCommand::RejectUser {
            reason: Some("Not now.\nTry again in May.".into()),
        })
        .then_events([UserEvent::UserRejected {
            user_id: USER,
            reason: Some("Not now.\nTry again in May.".into()),
        }]);
}

#[test]
fn a_linked_identity_holds_no_control_character() {
    for c in NEVER.into_iter().chain(LINE_BREAKS) {
        let auth = AuthMethod {
            connection_id: ConnectionId(Uuid::from_u128(12)),
            kind: AuthKind::Github,
            external_id: format!("4{c}2"),
        };
        refused(
            approved(),
            UserCommand::LinkAuthMethod { auth },
            "external_id",
        );
    }
}

#[test]
fn a_provider_key_refuses_control_characters_in_its_label_url_and_fingerprint() {
    let url = "https://llm.example.com/v1";
    for c in NEVER.into_iter().chain(LINE_BREAKS) {
        let bad = format!("wo{c}rk");
        refused(approved(), set_key(&bad, url, "sk-a…c123"), "label");
        let bad_url = format!("{url}{c}x");
        refused(
            approved(),
            set_key("work", &bad_url, "sk-a…c123"),
            "base_url",
        );
        let fingerprint = format!("sk{c}…c123");
        refused(
            approved(),
            set_key("work", url, &fingerprint),
            "fingerprint",
        );
    }
    refused(
        approved(),
        set_key(&"l".repeat(65), url, "sk-a…c123"),
        "label",
    );
    let long_url = format!("{url}/{}", "p".repeat(2048));
    refused(
        approved(),
        set_key("work", &long_url, "sk-a…c123"),
        "base_url",
    );
}
