//! Small text rules shared by the aggregates' validation: trimming, blank-means-absent, URLs.

/// The trimmed text, or `None` when it is blank.
pub(crate) fn non_blank(text: &str) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// [`non_blank`] over an optional field.
pub(crate) fn optional(text: Option<&String>) -> Option<String> {
    text.and_then(|t| non_blank(t))
}

/// Whether `url` is an absolute http(s) URL with something after the scheme.
pub(crate) fn is_http_url(url: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        url.strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty())
    }) && !url.chars().any(char::is_whitespace)
}
