//! Azurite, Microsoft's Azure Storage emulator, as a real blob endpoint for a test: its own
//! process on a free loopback port, in-memory, killed when the test drops it. Installed by
//! `scripts/install-test-deps` into tests/node_modules at the version tests/package.json pins.
//!
//! Set-up (containers, uploads, reads) goes through `common::http` with an account SAS rather
//! than through the azure_storage_blob crate: that crate is what the agent uses, so seeding
//! and checking blobs with it would let one of its faults pass on both sides unseen; and the
//! plain client needs no async runtime, and trusts the test CA through a rustls config given
//! to it, not through process-wide environment variables.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use super::http::{self, Response};
use super::sas;
use super::tls::Tls;

/// The emulator's one built-in account and its published, well-known key.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How long Azurite may take to listen. It is ready in about a second on an idle machine;
/// the rest is for a machine busy compiling and running other tests.
pub const START_LIMIT: Duration = Duration::from_secs(20);

/// What Azurite prints once its blob service is bound to its port.
const LISTENING: &str = "successfully listens on";

/// How long set-up SASes stay valid: longer than any test.
const SETUP_SAS_LIFETIME: Duration = Duration::from_secs(3600);

pub struct Azurite {
    child: Child,
    addr: SocketAddr,
    scheme: &'static str,
    client_tls: Option<Arc<rustls::ClientConfig>>,
    log: PathBuf,
    // Azurite's working directory: it must not write into the source tree.
    _dir: tempfile::TempDir,
}

impl Azurite {
    /// Azurite over plain HTTP: Shared Key and SAS, no bearer tokens (Azurite refuses those
    /// over HTTP, as Azure does).
    pub fn start() -> Azurite {
        Azurite::launch(None)
    }

    /// Azurite over HTTPS with the test certificate, also accepting Entra ID bearer tokens
    /// (`--oauth basic`), such as those the `entra` stand-in issues.
    pub fn start_https_oauth(tls: &Tls) -> Azurite {
        Azurite::launch(Some(tls))
    }

    fn launch(tls: Option<&Tls>) -> Azurite {
        let program = program();
        assert!(
            program.exists(),
            "{} is missing: run scripts/install-test-deps",
            program.display()
        );
        // The port is found free and then handed to Azurite, so another process can take it
        // in between; a second try covers that.
        let mut last_log = String::new();
        for _ in 0..3 {
            match Azurite::try_launch(&program, tls) {
                Ok(azurite) => return azurite,
                Err(log) if log.contains("EADDRINUSE") => last_log = log,
                Err(log) => panic!("Azurite did not start:\n{log}"),
            }
        }
        panic!("Azurite found no free port:\n{last_log}")
    }

    fn try_launch(program: &Path, tls: Option<&Tls>) -> Result<Azurite, String> {
        let dir = tempfile::tempdir().expect("temp dir for Azurite");
        let port = free_port();
        let log = dir.path().join("azurite.log");
        let out = File::create(&log).expect("Azurite log file");
        let mut command = Command::new(program);
        command
            .current_dir(dir.path())
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args([
                "--disableTelemetry",
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--loose",
            ])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log file"))
            .stderr(out);
        if let Some(tls) = tls {
            command
                .args(["--oauth", "basic", "--cert"])
                .arg(tls.cert_file())
                .arg("--key")
                .arg(tls.key_file());
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let mut azurite = Azurite {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            scheme: if tls.is_some() { "https" } else { "http" },
            client_tls: tls.map(Tls::client_config),
            log,
            _dir: dir,
        };
        azurite.wait_listening()?;
        Ok(azurite)
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll Azurite") {
                return Err(format!("Azurite exited ({status}):\n{}", self.log()));
            }
            // Azurite says so once it is bound. A connection that goes through is no proof:
            // another process may have taken the port first (and this Azurite then failed),
            // and a loopback connect to a port in the ephemeral range can even connect to
            // itself.
            if self.log().contains(LISTENING) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                panic!(
                    "Azurite did not listen on {} within {START_LIMIT:?}:\n{}",
                    self.addr,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1`, or https: the account URL SDK clients take.
    pub fn account_url(&self) -> String {
        format!("{}://{}/{ACCOUNT}", self.scheme, self.addr)
    }

    /// The blob's URL without any query: `{account_url}/{container}/{path}`, path encoded.
    pub fn blob_url(&self, container: &str, path: &str) -> String {
        format!(
            "{}/{container}/{}",
            self.account_url(),
            sas::encode_path(path)
        )
    }

    /// The blob's URL with a service SAS for it: `permissions` in Azure's letters (`r` read,
    /// `c` create, `w` write, `d` delete ...), valid until `expiry`.
    pub fn sas_url(
        &self,
        container: &str,
        path: &str,
        permissions: &str,
        expiry: SystemTime,
    ) -> String {
        let query = sas::blob_sas(ACCOUNT, ACCOUNT_KEY, container, path, permissions, expiry);
        format!("{}?{query}", self.blob_url(container, path))
    }

    /// A read-only SAS URL valid for an hour: what most fetch tests hand the agent.
    pub fn read_url(&self, container: &str, path: &str) -> String {
        self.sas_url(container, path, "r", SystemTime::now() + SETUP_SAS_LIFETIME)
    }

    pub fn create_container(&self, name: &str) {
        let url = format!(
            "{}/{name}?restype=container&{}",
            self.account_url(),
            self.setup_sas()
        );
        let response = self.request("PUT", &url, &[], &[]);
        assert_eq!(
            response.status,
            201,
            "create container {name}: {} {}",
            response.reason,
            response.text()
        );
    }

    /// Uploads `bytes` as a block blob (replacing any blob there) and returns its URL without
    /// a query.
    pub fn upload(&self, container: &str, path: &str, bytes: &[u8]) -> String {
        let url = self.blob_url(container, path);
        let response = self.request(
            "PUT",
            &format!("{url}?{}", self.setup_sas()),
            &[
                ("x-ms-blob-type", "BlockBlob"),
                ("Content-Type", "application/octet-stream"),
            ],
            bytes,
        );
        assert_eq!(
            response.status,
            201,
            "upload {container}/{path}: {} {}",
            response.reason,
            response.text()
        );
        url
    }

    /// Deletes the blob; it must exist.
    pub fn delete(&self, container: &str, path: &str) {
        let url = format!("{}?{}", self.blob_url(container, path), self.setup_sas());
        let response = self.request("DELETE", &url, &[], &[]);
        assert_eq!(
            response.status,
            202,
            "delete {container}/{path}: {} {}",
            response.reason,
            response.text()
        );
    }

    /// The blob's content, or `None` if there is no such blob.
    pub fn download(&self, container: &str, path: &str) -> Option<Vec<u8>> {
        let url = format!("{}?{}", self.blob_url(container, path), self.setup_sas());
        let response = self.request("GET", &url, &[], &[]);
        match response.status {
            200 => Some(response.body),
            404 => None,
            _ => panic!(
                "download {container}/{path}: {} {} {}",
                response.status,
                response.reason,
                response.text()
            ),
        }
    }

    /// One request to this Azurite, over TLS trusting the test CA when it serves https.
    pub fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        http::request(method, url, headers, body, self.client_tls.as_ref())
            .unwrap_or_else(|e| panic!("{method} {url}: {e}\nAzurite log:\n{}", self.log()))
    }

    /// The rustls client configuration that trusts this Azurite, if it serves https.
    pub fn client_tls(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.client_tls.as_ref()
    }

    /// Azurite's console output so far: start-up messages and one access-log line a request.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn setup_sas(&self) -> String {
        sas::account_sas(
            ACCOUNT,
            ACCOUNT_KEY,
            "rwdlac",
            SystemTime::now() + SETUP_SAS_LIFETIME,
        )
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tests/node_modules/.bin/azurite-blob: the blob service alone starts fastest.
pub fn program() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node_modules/.bin/azurite-blob")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}
