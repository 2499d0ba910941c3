//! A registry token server, the protocol of Docker Hub's `auth.docker.io`, for the test
//! world's token-auth registry (`scripts/test-world` starts it with this realm and trusts the
//! key it made). Tokens are ES256 JWTs carrying the signing certificate (`x5c`), as the
//! registry verifies them. Anonymous pulls of `kdbg-tools` are granted; `kdbg-private` needs
//! [`USER`] and [`PASSWORD`].

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

/// The user the private repository wants.
pub const USER: &str = "kdbg";
/// Its password.
pub const PASSWORD: &str = "token-test-password";
/// The repository that needs them.
pub const PRIVATE: &str = "kdbg-private";

/// One token request, as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The `scope` asked for.
    pub scope: String,
    /// The `service` named.
    pub service: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// Whether a token was issued.
    pub granted: bool,
}

/// The token server, stopped when dropped.
pub struct TokenServer {
    /// Every request served so far.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    address: String,
    thread: Option<JoinHandle<()>>,
}

fn env(name: &str) -> String {
    super::world_variable(name)
}

/// The DER inside a PEM file.
fn pem(path: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

impl TokenServer {
    /// Serves `$KDBG_TOKEN_REALM` until dropped.
    pub fn start() -> TokenServer {
        let realm = env("KDBG_TOKEN_REALM");
        let address = realm
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let listener = TcpListener::bind(&address)
            .unwrap_or_else(|e| panic!("binding the token server on {address}: {e}"));
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pem(&env("KDBG_TOKEN_KEY")),
            &SystemRandom::new(),
        )
        .expect("the token key is PKCS#8 P-256");
        let cert = pem(&env("KDBG_TOKEN_CERT"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        serve(stream, &key, &cert, &seen);
                    }
                }
            })
        };
        TokenServer {
            seen,
            stop,
            address,
            thread: Some(thread),
        }
    }

    /// What was asked for `repository`.
    pub fn seen_for(&self, repository: &str) -> Vec<Seen> {
        let scope = format!("repository:{repository}:pull");
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.scope == scope)
            .cloned()
            .collect()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.address);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(stream: TcpStream, key: &EcdsaKeyPair, cert: &[u8], seen: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(value.trim().to_owned());
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let (scope, service) = (param("scope"), param("service"));
    let repository = scope
        .strip_prefix("repository:")
        .and_then(|s| s.strip_suffix(":pull"))
        .unwrap_or("")
        .to_owned();
    let expected = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
    let granted = !repository.is_empty()
        && (repository != PRIVATE || authorization.as_deref() == Some(expected.as_str()));
    seen.lock().unwrap().push(Seen {
        scope,
        service: service.clone(),
        authorization: authorization.clone(),
        granted,
    });
    let (status, body) = if granted {
        let token = jwt(key, cert, &service, &repository);
        (
            "200 OK",
            format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#),
        )
    } else {
        (
            "401 Unauthorized",
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                .to_owned(),
        )
    };
    let _ = write!(
        &stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// An ES256 JWT granting pull on `repository`, as distribution's token auth reads it.
fn jwt(key: &EcdsaKeyPair, cert: &[u8], service: &str, repository: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(cert)]});
    let claims = serde_json::json!({
        "iss": "kdbg-token-issuer", "sub": "", "aud": service,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{repository}"),
        "access": [{"type": "repository", "name": repository, "actions": ["pull"]}]
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .expect("signing the token");
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    )
}
