//! What every HTTP client of the agent shares: a retry policy bounded by a budget, error
//! texts that keep their causes on one line, and the CA certificates to trust, with Mozilla's
//! roots compiled in for an empty root filesystem (a `FROM scratch` image with no bundle),
//! where the SDK would otherwise panic.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use azure_core::http::{
    ClientOptions, ExponentialRetryOptions, HttpClient, RetryOptions, Transport,
};

/// What the Azure SDK's own client uses: a stalled connect fails, a stalled read is retried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Client options whose retries (throttling with Retry-After, 5xx, broken connections) stop
/// once `budget` has passed, over the agent's one shared HTTP client.
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
        // None only if no client can be built at all; the SDK then tries its own and `build`
        // turns its panic into an error.
        transport: azure_http_client().map(Transport::new),
        ..ClientOptions::default()
    }
}

/// The one HTTP client of every Azure SDK client (snapshot, secrets, identity): one
/// connection pool, and one place that decides which CA certificates are trusted.
fn azure_http_client() -> Option<Arc<dyn HttpClient>> {
    static CLIENT: OnceLock<Option<Arc<dyn HttpClient>>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            with_trusted_roots(|roots| {
                let builder = reqwest::Client::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(READ_TIMEOUT)
                    // Azure services do not redirect; the SDK's own client does not follow either.
                    .redirect(reqwest::redirect::Policy::none());
                match roots {
                    Some(roots) => builder.tls_certs_only(roots),
                    None => builder,
                }
                .build()
            })
            .ok()
            .map(|client| Arc::new(client) as Arc<dyn HttpClient>)
        })
        .clone()
}

/// Builds an HTTP client with `build_client(None)`, which trusts the system's CA certificates
/// (`SSL_CERT_FILE`, `SSL_CERT_DIR`, `/etc/ssl/…`); where the system has none, with
/// `build_client(Some(roots))`, Mozilla's roots compiled into the agent.
pub fn with_trusted_roots<C, E>(
    mut build_client: impl FnMut(Option<Vec<reqwest::Certificate>>) -> Result<C, E>,
) -> Result<C, String>
where
    E: std::error::Error + 'static,
{
    // reqwest refuses to build when the system has no CA certificate at all.
    if let Ok(Ok(client)) = build(|| build_client(None)) {
        return Ok(client);
    }
    build(|| build_client(Some(embedded_roots())))?.map_err(|e| describe(&e))
}

/// Mozilla's root certificates (the `webpki-root-certs` crate), trusted only when the system
/// has no CA certificates.
fn embedded_roots() -> Vec<reqwest::Certificate> {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .filter_map(|der| reqwest::Certificate::from_der(der).ok())
        .collect()
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
    fn the_embedded_roots_are_mozillas() {
        let roots = embedded_roots();
        assert!(roots.len() > 100, "{} roots", roots.len());
        assert_eq!(roots.len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
    }

    #[test]
    fn the_system_roots_are_tried_first_and_the_embedded_ones_when_that_fails() {
        let mut asked = Vec::new();
        let chosen = with_trusted_roots(|roots| {
            asked.push(roots.as_ref().map(Vec::len));
            match roots {
                None => Err(Layer(
                    "No CA certificates were loaded from the system",
                    None,
                )),
                Some(roots) => Ok(roots.len()),
            }
        });
        assert!(chosen.unwrap() > 100);
        assert_eq!(asked.len(), 2);
        assert_eq!(asked[0], None);

        let system = with_trusted_roots(|roots| match roots {
            None => Ok::<_, Layer>("system"),
            Some(_) => Ok("embedded"),
        });
        assert_eq!(system, Ok("system"));
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
