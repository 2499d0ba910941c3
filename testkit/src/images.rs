//! Images the tests build in the loopback registry through its HTTP API (curl), as a CI's
//! `docker buildx` would push them: here, an index of two platforms.

use std::process::Command;

use ring::digest::{SHA256, digest};

use crate::{registry, text};

/// The media types of what is pushed.
const LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// An index pushed by [`two_platform_image`].
#[derive(Debug, Clone)]
pub struct TwoPlatforms {
    /// The reference: `REGISTRY/kdbg-multi:test`.
    pub image: String,
    /// This machine's platform, as the index names it (`linux/amd64`).
    pub native: String,
    /// The other platform (`linux/arm64/v8`).
    pub other: String,
    /// The config digest of this machine's entry.
    pub native_config: String,
    /// The config digest of the other entry: its config says the other architecture.
    pub other_config: String,
}

/// Pushes `REGISTRY/kdbg-multi:test`: an index of this machine's platform (the test image,
/// `kdbg-tools:test`, as it is) and `linux/arm64/v8` (the same layers, with a config that
/// says arm64; its files still run here, so a test can tell which entry was chosen by the
/// config alone).
pub fn two_platform_image() -> TwoPlatforms {
    // Once per test process: tests running at once would push the same blobs together.
    static PUSHED: std::sync::OnceLock<TwoPlatforms> = std::sync::OnceLock::new();
    PUSHED.get_or_init(push_two_platforms).clone()
}

fn push_two_platforms() -> TwoPlatforms {
    let registry = registry();
    let base = format!("http://{registry}/v2");
    let manifest = curl(&[
        "-H",
        &format!("Accept: {MANIFEST}"),
        &format!("{base}/kdbg-tools/manifests/test"),
    ]);
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).expect("a manifest");
    let config_digest = parsed["config"]["digest"].as_str().unwrap().to_owned();
    let config = curl(&[&format!("{base}/kdbg-tools/blobs/{config_digest}")]);
    // Every blob of the test image, mounted into the new repository.
    let layers: Vec<String> = parsed["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    for blob in layers.iter().chain([&config_digest]) {
        curl(&[
            "-X",
            "POST",
            &format!("{base}/kdbg-multi/blobs/uploads/?mount={blob}&from=kdbg-tools"),
        ]);
    }
    // The other platform's config, uploaded.
    let mut other: serde_json::Value = serde_json::from_slice(&config).unwrap();
    other["architecture"] = "arm64".into();
    other["variant"] = "v8".into();
    let other = other.to_string().into_bytes();
    let other_digest = sha256(&other);
    let location = upload_location(&base);
    let separator = if location.contains('?') { '&' } else { '?' };
    put(
        &format!("{location}{separator}digest={other_digest}"),
        "application/octet-stream",
        &other,
    );
    let mut other_manifest = parsed.clone();
    other_manifest["config"]["digest"] = other_digest.clone().into();
    other_manifest["config"]["size"] = other.len().into();
    let other_manifest = other_manifest.to_string().into_bytes();
    let native_digest = sha256(&manifest);
    let other_manifest_digest = sha256(&other_manifest);
    for (bytes, digest) in [
        (&manifest, &native_digest),
        (&other_manifest, &other_manifest_digest),
    ] {
        put(
            &format!("{base}/kdbg-multi/manifests/{digest}"),
            MANIFEST,
            bytes,
        );
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": LIST,
        "manifests": [
            {"mediaType": MANIFEST, "digest": native_digest, "size": manifest.len(),
             "platform": {"architecture": arch, "os": "linux"}},
            {"mediaType": MANIFEST, "digest": other_manifest_digest, "size": other_manifest.len(),
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ],
    });
    put(
        &format!("{base}/kdbg-multi/manifests/test"),
        LIST,
        index.to_string().as_bytes(),
    );
    TwoPlatforms {
        image: format!("{registry}/kdbg-multi:test"),
        native: format!("linux/{arch}"),
        other: "linux/arm64/v8".to_owned(),
        native_config: config_digest,
        other_config: other_digest,
    }
}

fn sha256(bytes: &[u8]) -> String {
    let d = digest(&SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Where a new upload to `kdbg-multi` goes.
fn upload_location(base: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null", "-X", "POST"])
        .arg(format!("{base}/kdbg-multi/blobs/uploads/"))
        .output()
        .expect("running curl");
    let headers = text(&out.stdout);
    let location = headers
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no upload location in:\n{headers}"));
    if location.starts_with('/') {
        let origin = base.trim_end_matches("/v2");
        format!("{origin}{location}")
    } else {
        location
    }
}

/// `curl -fsS ARGS`, which must succeed; its output.
fn curl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .arg("-fsS")
        .args(args)
        .output()
        .expect("running curl");
    assert!(out.status.success(), "curl {args:?}: {}", text(&out.stderr));
    out.stdout
}

/// PUTs `body` as `media_type` to `url`.
fn put(url: &str, media_type: &str, body: &[u8]) {
    let file = std::env::temp_dir().join(format!(
        "kdbg-push-{}-{}",
        std::process::id(),
        sha256(body).trim_start_matches("sha256:")
    ));
    std::fs::write(&file, body).unwrap();
    curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {media_type}"),
        "--data-binary",
        &format!("@{}", file.display()),
        url,
    ]);
    let _ = std::fs::remove_file(file);
}
