//! Who a verified client certificate names: its subject's CN (the user) and O values (the
//! groups), read from the DER as the API server reads them.

use super::*;

impl Caller {
    /// A caller nobody checked (`auth.mode: none`), named as the client says.
    pub fn unverified(claimed: Option<&str>) -> Caller {
        Caller {
            user: claimed.unwrap_or("unknown").to_owned(),
            ..Caller::default()
        }
    }

    /// The caller a client certificate names, as the API server reads it: the subject's
    /// common name is the user, its organisations the groups (and `system:authenticated`).
    /// Only for a certificate the TLS handshake has verified against the client CA.
    pub fn from_certificate(der: &[u8]) -> Result<Caller, CredentialRejected> {
        let der = CertificateDer::from(der);
        let cert =
            webpki::EndEntityCert::try_from(&der).map_err(CredentialRejected::Certificate)?;
        let (user, mut groups) =
            subject_names(cert.subject()).ok_or(CredentialRejected::Subject)?;
        let user = user
            .filter(|u| !u.is_empty())
            .ok_or(CredentialRejected::NoCommonName)?;
        groups.push("system:authenticated".to_owned());
        Ok(Caller {
            user,
            groups,
            verified: true,
            ..Caller::default()
        })
    }
}

/// The common name and the organisations of an X.509 subject (a DER `RDNSequence` without
/// its outer tag), or `None` when it is not well formed. Other attributes are skipped.
pub(super) fn subject_names(mut name: &[u8]) -> Option<(Option<String>, Vec<String>)> {
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    const ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];
    let (mut common_name, mut organizations) = (None, Vec::new());
    while !name.is_empty() {
        let (0x31, mut set, rest) = der(name)? else {
            return None;
        };
        name = rest;
        while !set.is_empty() {
            let (0x30, pair, rest) = der(set)? else {
                return None;
            };
            set = rest;
            let (0x06, oid, value) = der(pair)? else {
                return None;
            };
            let (kind, value, _) = der(value)?;
            // UTF8String, PrintableString, IA5String, T61String (read as UTF-8, as Go does).
            if ![0x0c, 0x13, 0x16, 0x14].contains(&kind) {
                continue;
            }
            let value = String::from_utf8(value.to_vec()).ok()?;
            match oid {
                COMMON_NAME => common_name = Some(value),
                ORGANIZATION => organizations.push(value),
                _ => {}
            }
        }
    }
    Some((common_name, organizations))
}

/// One DER element at the start of `input`: its tag, its contents and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let (length, after) = rest.split_at(octets);
        rest = after;
        length
            .iter()
            .fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}
