//! The User aggregate's value types: roles, statuses, tiers, auth methods and provider keys.

use crate::ids::{ConnectionId, KeyId};
use crate::names::string_enum;
use serde::{Deserialize, Serialize};

string_enum! {
    /// What a user may do. Guests wait for approval; admins also manage other users.
    #[derive(Default, PartialOrd, Ord)]
    pub enum Role {
        /// Registered but not (or no longer) allowed to use agents.
        #[default]
        Guest => "guest",
        /// An approved user.
        User => "user",
        /// An approved user who also approves, rejects and revokes others.
        Admin => "admin",
        /// An approved user who also reads every user's usage (the analyst API).
        Analyst => "analyst",
    }
}

string_enum! {
    /// Where a user stands in the approval flow.
    #[derive(Default)]
    pub enum UserStatus {
        /// Waiting for an admin (approval mode `required`).
        #[default]
        Pending => "pending",
        /// Allowed in.
        Approved => "approved",
        /// Turned down while pending; an admin may still approve later.
        Rejected => "rejected",
        /// Access taken away after approval; an admin may approve again.
        Revoked => "revoked",
    }
}

string_enum! {
    /// The plan a user is on; quotas (agents, messages per day) hang off it.
    #[derive(Default, PartialOrd, Ord)]
    pub enum Tier {
        /// The default plan.
        #[default]
        Free => "free",
        /// Paid.
        Pro => "pro",
        /// Paid, negotiated.
        Enterprise => "enterprise",
    }
}

string_enum! {
    /// The instance's registration setting (DESIGN §3).
    pub enum ApprovalMode {
        /// New users are pending guests until an admin approves them (ChatOps).
        Required => "required",
        /// New users are approved users at once.
        Open => "open",
    }
}

string_enum! {
    /// How a user proves who they are.
    pub enum AuthKind {
        /// A magic link sent to an email address; the external id is the address.
        Email => "email",
        /// Google OAuth; the external id is Google's subject id.
        Google => "google",
        /// GitHub OAuth; the external id is GitHub's numeric user id.
        Github => "github",
        /// Sign-In with Ethereum; the external id is the checksummed address.
        Wallet => "wallet",
        /// Telegram identity; the external id is the numeric Telegram user id.
        Telegram => "telegram",
    }
}

string_enum! {
    /// Which model API a user's key is for.
    pub enum Provider {
        /// Anthropic's API.
        Anthropic => "anthropic",
        /// OpenAI's API.
        Openai => "openai",
        /// OpenRouter.
        Openrouter => "openrouter",
        /// LibertAI.
        Libertai => "libertai",
        /// Any compatible endpoint at a user-given base URL.
        Custom => "custom",
    }
}

string_enum! {
    /// The wire protocol a model provider speaks: what an agent runtime must speak to reach it
    /// (through the platform's model proxy, ADR 23).
    pub enum ModelProtocol {
        /// OpenAI chat completions (OpenAI, OpenRouter, LibertAI, any compatible endpoint).
        Openai => "openai",
        /// Anthropic Messages.
        Anthropic => "anthropic",
    }
}

impl Provider {
    /// The protocol this provider's API speaks: Anthropic's own, OpenAI's for every other.
    pub fn protocol(self) -> ModelProtocol {
        match self {
            Provider::Anthropic => ModelProtocol::Anthropic,
            Provider::Openai | Provider::Openrouter | Provider::Libertai | Provider::Custom => {
                ModelProtocol::Openai
            }
        }
    }
}

/// One way a user signs in (a "connection"). The pair (`kind`, `external_id`) identifies the
/// identity; callers pass `external_id` in its canonical form (lowercased email, checksummed
/// address) because the domain compares it verbatim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthMethod {
    /// Id of this link, used to unlink it.
    pub connection_id: ConnectionId,
    /// The kind of identity.
    pub kind: AuthKind,
    /// The identity at that provider (see [`AuthKind`] for what each kind uses).
    pub external_id: String,
}

/// A provider API key as the log knows it: where it points and how to recognise it, never the key.
/// The ciphertext lives outside the log under `key_id` (DESIGN §2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderKey {
    /// Where the encrypted key is kept.
    pub key_id: KeyId,
    /// The API it is for.
    pub provider: Provider,
    /// Endpoint override; always present for [`Provider::Custom`].
    pub base_url: Option<String>,
    /// The user's name for it (`"default"` unless given); unique per provider.
    pub label: String,
    /// A masked form such as `sk-a…c123` (see [`fingerprint`]).
    pub fingerprint: String,
}

/// The longest fingerprint an event accepts, so a whole key can never pass for one.
pub const MAX_FINGERPRINT_CHARS: usize = crate::text::FINGERPRINT.max_chars;

/// Masks a secret for display and for events: a short head and tail around an ellipsis
/// (`sk-a…c123`), less of it for short secrets, never more than 8 of its characters.
pub fn fingerprint(secret: &str) -> String {
    let chars: Vec<char> = secret.trim().chars().collect();
    let shown = match chars.len() {
        n if n >= 20 => 4,
        n if n >= 12 => 2,
        _ => 0,
    };
    let head: String = chars[..shown].iter().collect();
    let tail: String = chars[chars.len() - shown..].iter().collect();
    format!("{head}…{tail}")
}
