//! The public words of a failed run. What a client reads in `RunFailed` is chosen here, never
//! an error's `Display` chain: a cause may name an internal URL, or a provider URL with a key in
//! its query, so causes go to the log and the event gets a sentence that says what to set.
//!
//! A runtime knows only its own flags (`WARREN_AGENT_*`); the worker knows whose model the run
//! used (the user's own key or the platform's default), so it rewrites the two failures a
//! newcomer meets first, `model_not_configured` and `model_unreachable`, in the platform's terms,
//! and says in its own words what `sandbox_out_of_memory` means for the user.

use warren_domain::user::Provider;

/// The route where users add their own provider key.
const KEYS_ROUTE: &str = "POST /api/v1/users/me/api-keys";

/// The platform variables that configure the default model provider.
pub const PROVIDER_VARIABLES: &str =
    "WARREN_DEFAULT_PROVIDER, WARREN_DEFAULT_BASE_URL and WARREN_DEFAULT_API_KEY";

/// Whose model a run called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// The user's own key, for this provider.
    UserKey(Provider),
    /// The platform's default (`WARREN_DEFAULT_*`), if the chat worker's config names one.
    Platform(Option<Provider>),
}

/// The message a failed run is recorded with: the runtime's own for most codes, the platform's
/// words for the model's configuration failures.
pub fn public_message(code: &str, runtime_message: String, source: ModelSource) -> String {
    match (code, source) {
        ("model_not_configured", _) => format!(
            "no model provider is configured: the operator sets {PROVIDER_VARIABLES} and \
             restarts Warren, or you add your own key ({KEYS_ROUTE})"
        ),
        ("model_unreachable", ModelSource::UserKey(provider)) => format!(
            "could not reach the {provider} model provider of your API key: check its base URL \
             ({KEYS_ROUTE})"
        ),
        ("model_unreachable", ModelSource::Platform(provider)) => {
            let provider = provider.map_or("platform's".to_owned(), |p| p.to_string());
            format!(
                "could not reach the {provider} model provider: the operator checks \
                 WARREN_DEFAULT_BASE_URL (and WARREN_DEFAULT_PROVIDER), or you add your own key \
                 ({KEYS_ROUTE})"
            )
        }
        // The runtime's words would do, but a runtime is untrusted: the platform says what
        // happened and that the agent is still there.
        ("sandbox_out_of_memory", _) => "the agent's sandbox ran out of memory: a command it \
             ran used more than the sandbox's memory limit and was stopped. The agent is still \
             running; send your next message (ask for something that needs less memory)"
            .to_owned(),
        _ => runtime_message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unconfigured_model_names_the_variables_to_set() {
        let message = public_message(
            "model_not_configured",
            "set WARREN_AGENT_API_KEY".into(),
            ModelSource::Platform(None),
        );
        assert!(message.contains(PROVIDER_VARIABLES), "{message}");
        assert!(message.contains("api-keys"), "{message}");
    }

    #[test]
    fn an_unreachable_model_names_its_provider_and_never_the_runtime_text() {
        let runtime = "could not reach http://10.0.0.1/v1?key=sk-x".to_owned();
        let platform = public_message(
            "model_unreachable",
            runtime.clone(),
            ModelSource::Platform(Some(Provider::Openrouter)),
        );
        assert!(platform.contains("openrouter") && platform.contains("WARREN_DEFAULT_BASE_URL"));
        assert!(!platform.contains("sk-x"));
        let own = public_message(
            "model_unreachable",
            runtime,
            ModelSource::UserKey(Provider::Anthropic),
        );
        assert!(
            own.contains("anthropic") && own.contains("your API key"),
            "{own}"
        );
    }

    #[test]
    fn a_sandbox_out_of_memory_says_the_agent_is_still_there() {
        let message = public_message(
            "sandbox_out_of_memory",
            "anything a runtime says".into(),
            ModelSource::Platform(None),
        );
        assert!(message.contains("memory limit"), "{message}");
        assert!(message.contains("next message"), "{message}");
    }

    #[test]
    fn other_codes_keep_the_runtimes_words() {
        assert_eq!(
            public_message(
                "model_http_error",
                "model provider answered 429: slow down".into(),
                ModelSource::Platform(None)
            ),
            "model provider answered 429: slow down"
        );
    }
}
