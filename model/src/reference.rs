//! Image references, parsed once for both backends the way Docker parses them:
//! `nicolaka/netshoot` is `docker.io/nicolaka/netshoot:latest`, `busybox` is
//! `docker.io/library/busybox:latest`, a first component with a `.` or `:` (or `localhost`)
//! names a registry.

use std::fmt;

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API answers.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry, `host[:port]`; `docker.io` for Docker Hub.
    pub registry: String,
    /// The repository, e.g. `library/busybox`.
    pub repository: String,
    /// The tag, if any (`latest` when neither tag nor digest is given).
    pub tag: Option<String>,
    /// The digest, if any.
    pub digest: Option<String>,
}

/// An image reference that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image reference {image:?} is not valid: {why}")]
pub struct InvalidReference {
    /// The reference as given.
    pub image: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl Reference {
    /// Parses `image` the way Docker does.
    pub fn parse(image: &str) -> Result<Reference, InvalidReference> {
        let bad = |why| InvalidReference {
            image: image.to_owned(),
            why,
        };
        let (rest, digest) = match image.split_once('@') {
            Some((rest, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("only sha256 digests are supported"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad("the digest is not sha256:<64 hex digits>"));
                }
                (rest, Some(digest.to_owned()))
            }
            None => (image, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_owned()),
            ),
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(bad("the tag may hold only letters, digits, '.', '_', '-'"));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), path.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let ok = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if !ok {
            return Err(bad(
                "the repository may hold only lowercase letters, digits, '.', '_', '-' and '/'",
            ));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_owned())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The tag or digest to ask the registry for (the digest when both are given).
    pub fn object(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The name without tag or digest: `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// Where the registry's API answers.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }
}

impl fmt::Display for Reference {
    /// The full name, as containerd's image store keeps it: `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(image: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(image).unwrap();
        (r.registry, r.repository, r.tag, r.digest)
    }

    #[test]
    fn references_are_normalised_like_docker() {
        let latest = Some("latest".to_owned());
        assert_eq!(
            parsed("busybox"),
            (
                "docker.io".into(),
                "library/busybox".into(),
                latest.clone(),
                None
            )
        );
        assert_eq!(
            parsed("nicolaka/netshoot:v0.13"),
            (
                "docker.io".into(),
                "nicolaka/netshoot".into(),
                Some("v0.13".into()),
                None
            )
        );
        assert_eq!(
            parsed("127.0.0.1:5000/kdbg-tools:test"),
            (
                "127.0.0.1:5000".into(),
                "kdbg-tools".into(),
                Some("test".into()),
                None
            )
        );
        assert_eq!(
            parsed("localhost/a/b"),
            ("localhost".into(), "a/b".into(), latest.clone(), None)
        );
        assert_eq!(
            parsed("ghcr.io/org/tools"),
            ("ghcr.io".into(), "org/tools".into(), latest, None)
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("quay.io/x/y@{digest}")).unwrap();
        assert_eq!(
            (r.tag.as_deref(), r.digest.as_deref()),
            (None, Some(digest.as_str()))
        );
        assert_eq!(r.object(), digest);
        assert_eq!(
            Reference::parse("busybox").unwrap().to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            Reference::parse("busybox").unwrap().api_host(),
            DOCKER_HUB_API
        );
    }

    #[test]
    fn bad_references_say_why() {
        for bad in ["Busybox", "a//b", "a:b:c!", "x@md5:00", "x@sha256:12", ""] {
            let err = Reference::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
