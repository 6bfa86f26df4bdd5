//! What every Azure SDK client of the agent shares: a retry policy bounded by a budget,
//! error texts that keep their causes on one line, and protection from the SDK's panic
//! when no CA certificate can be loaded.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions};

/// Client options whose retries (throttling with Retry-After, 5xx, broken connections) stop
/// once `budget` has passed.
pub fn client_options(budget: Duration) -> ClientOptions {
    let budget = azure_core::time::Duration::try_from(budget)
        .unwrap_or(azure_core::time::Duration::seconds(30));
    ClientOptions {
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(200),
            max_retries: 10,
            max_total_elapsed: budget,
            max_delay: azure_core::time::Duration::seconds(8),
        }),
        ..ClientOptions::default()
    }
}

/// An error with its chain of causes (where TLS and connection problems are named),
/// without repeating a cause its parent already quotes, on one line.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let part = inner.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = inner.source();
    }
    // Service messages span lines; a log line must not.
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs client construction, turning the SDK's panic when it cannot build an HTTP client
/// (no CA certificates) into an error that says what is missing. The panic hook is quiet
/// meanwhile so no raw panic text reaches stderr.
pub fn build<T>(construct: impl FnOnce() -> T) -> Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let built = std::panic::catch_unwind(AssertUnwindSafe(construct));
    std::panic::set_hook(hook);
    built.map_err(|panic| {
        let detail = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!(
            "cannot set up https ({detail}); install CA certificates (ca-certificates) or point SSL_CERT_FILE at a bundle"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn causes_are_joined_once_on_one_line() {
        let error = Layer(
            "request failed",
            Some(Box::new(Layer(
                "invalid peer certificate:\n UnknownIssuer",
                Some(Box::new(Layer("UnknownIssuer", None))),
            ))),
        );
        assert_eq!(
            describe(&error),
            "request failed: invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn a_panic_while_building_becomes_an_error() {
        let err = build::<()>(|| panic!("No CA certificates were loaded")).unwrap_err();
        assert!(
            err.contains("No CA certificates") && err.contains("SSL_CERT_FILE"),
            "{err}"
        );
        assert_eq!(build(|| 3), Ok(3));
    }
}
