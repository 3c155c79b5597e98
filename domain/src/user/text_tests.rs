//! Given/when/then tests of the text rules on every free-text field of the user commands.

use super::tests::{USER, approved, given, pending};
use super::*;
use uuid::Uuid;

const LINK: ConnectionId = ConnectionId(Uuid::from_u128(31));
const KEY: KeyId = KeyId(Uuid::from_u128(32));
const URL: &str = "https://example.com/a.png";
/// Characters no field accepts, and characters only multi-line fields accept.
const NEVER: [&str; 4] = ["\u{0}", "\u{1b}", "\u{7}", "\u{85}"];
const LINE_BREAKS: [&str; 3] = ["\n", "\r", "\t"];

fn auth(kind: AuthKind, external_id: &str) -> AuthMethod {
    AuthMethod {
        connection_id: LINK,
        kind,
        external_id: external_id.into(),
    }
}

fn register(email: &str, display_name: &str, avatar_url: &str, external_id: &str) -> UserCommand {
    UserCommand::RegisterUser {
        user_id: USER,
        email: Some(email.into()),
        display_name: Some(display_name.into()),
        avatar_url: Some(avatar_url.into()),
        auth: auth(AuthKind::Email, external_id),
        approval: ApprovalMode::Required,
        is_admin: false,
    }
}

fn profile(display_name: Option<&str>, avatar_url: Option<&str>) -> UserCommand {
    UserCommand::UpdateProfile {
        display_name: display_name.map(Into::into),
        avatar_url: avatar_url.map(Into::into),
        show_tool_calls: None,
    }
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

#[test]
fn registration_refuses_control_characters_in_every_text_field() {
    for c in NEVER.into_iter().chain(LINE_BREAKS) {
        let bad = format!("x{c}y");
        let email = format!("a{c}b@example.com");
        let avatar = format!("{URL}{c}x");
        given([])
            .when(register(&email, "Ada", URL, "a@x.io"))
            .then_invalid("email");
        given([])
            .when(register("a@x.io", &bad, URL, "a@x.io"))
            .then_invalid("display_name");
        given([])
            .when(register("a@x.io", "Ada", &avatar, "a@x.io"))
            .then_invalid("avatar_url");
        given([])
            .when(register("a@x.io", "Ada", URL, &bad))
            .then_invalid("external_id");
    }
}

#[test]
fn registration_refuses_overlong_names_emails_and_ids() {
    let email = format!("{}@example.com", "a".repeat(250));
    given([])
        .when(register(&email, "Ada", URL, "a@x.io"))
        .then_invalid("email");
    given([])
        .when(register("a@x.io", &"n".repeat(101), URL, "a@x.io"))
        .then_invalid("display_name");
    given([])
        .when(register("a@x.io", "Ada", URL, &"i".repeat(257)))
        .then_invalid("external_id");
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
            auth: auth(AuthKind::Email, "a@x.io"),
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
        given(approved())
            .when(profile(Some(bad), None))
            .then_invalid("display_name");
    }
    given(approved())
        .when(profile(None, Some("https://example.com/\u{0}.png")))
        .then_invalid("avatar_url");
}

#[test]
fn a_rejection_or_revocation_reason_may_span_lines_but_holds_no_other_control() {
    for c in NEVER {
        let reason = Some(format!("n{c}o"));
        given([pending()])
            .when(UserCommand::RejectUser {
                reason: reason.clone(),
            })
            .then_invalid("reason");
        given(approved())
            .when(UserCommand::RevokeAccess { reason })
            .then_invalid("reason");
    }
    given([pending()])
        .when(UserCommand::RejectUser {
            reason: Some("x".repeat(1001)),
        })
        .then_invalid("reason");
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
        let auth = auth(AuthKind::Github, &format!("4{c}2"));
        given(approved())
            .when(UserCommand::LinkAuthMethod { auth })
            .then_invalid("external_id");
    }
}

#[test]
fn a_provider_key_refuses_control_characters_in_its_label_url_and_fingerprint() {
    let url = "https://llm.example.com/v1";
    for c in NEVER.into_iter().chain(LINE_BREAKS) {
        let label = format!("wo{c}rk");
        let base_url = format!("{url}{c}x");
        let fingerprint = format!("sk{c}…c123");
        given(approved())
            .when(set_key(&label, url, "sk-a…c123"))
            .then_invalid("label");
        given(approved())
            .when(set_key("work", &base_url, "sk-a…c123"))
            .then_invalid("base_url");
        given(approved())
            .when(set_key("work", url, &fingerprint))
            .then_invalid("fingerprint");
    }
    given(approved())
        .when(set_key(&"l".repeat(65), url, "sk-a…c123"))
        .then_invalid("label");
    let long_url = format!("{url}/{}", "p".repeat(2048));
    given(approved())
        .when(set_key("work", &long_url, "sk-a…c123"))
        .then_invalid("base_url");
}
