//! The API server's protobuf bodies, as kubectl's typed clients send them (`kubectl create
//! secret`, `kubectl create serviceaccount`): the `k8s\0` envelope around a `runtime.Unknown`,
//! and the fields of `Secret` and `ServiceAccount` (`k8s.io/api/core/v1/generated.proto`) read
//! into the JSON the rest of the stand-in reads.

use base64::Engine;
use serde_json::{Map, Value, json};

/// What a protobuf body holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Secret,
    ServiceAccount,
}

/// A message's fields in order: number and value.
type Fields<'a> = Vec<(u64, Field<'a>)>;

#[derive(Clone, Copy, Debug)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(data: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *data.get(*at).ok_or("truncated varint")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("overlong varint".into())
}

/// The fields of message `data`.
fn fields(data: &[u8]) -> Result<Fields<'_>, String> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < data.len() {
        let key = varint(data, &mut at)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(data, &mut at)?),
            2 => {
                let len = usize::try_from(varint(data, &mut at)?).map_err(|e| e.to_string())?;
                let end = at.checked_add(len).filter(|&e| e <= data.len());
                let end = end.ok_or("truncated field")?;
                let bytes = &data[at..end];
                at = end;
                Field::Bytes(bytes)
            }
            1 => {
                at += 8;
                Field::Varint(0)
            }
            5 => {
                at += 4;
                Field::Varint(0)
            }
            wire => return Err(format!("unsupported wire type {wire}")),
        };
        out.push((key >> 3, field));
    }
    if at > data.len() {
        return Err("truncated field".into());
    }
    Ok(out)
}

fn string(bytes: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

/// A `map<string, V>` entry: its key and value bytes.
fn entry(bytes: &[u8]) -> Result<(String, &[u8]), String> {
    let (mut key, mut value) = (String::new(), &[][..]);
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (1, Field::Bytes(b)) => key = String::from_utf8_lossy(b).into_owned(),
            (2, Field::Bytes(b)) => value = b,
            _ => {}
        }
    }
    Ok((key, value))
}

/// `ObjectMeta`'s fields a create carries: names, namespace, labels, annotations.
fn metadata(bytes: &[u8]) -> Result<Value, String> {
    let mut meta = Map::new();
    let (mut labels, mut annotations) = (Map::new(), Map::new());
    for (number, field) in fields(bytes)? {
        let Field::Bytes(b) = field else { continue };
        match number {
            1 if !b.is_empty() => {
                meta.insert("name".into(), string(b));
            }
            2 if !b.is_empty() => {
                meta.insert("generateName".into(), string(b));
            }
            3 if !b.is_empty() => {
                meta.insert("namespace".into(), string(b));
            }
            11 => {
                let (k, v) = entry(b)?;
                labels.insert(k, string(v));
            }
            12 => {
                let (k, v) = entry(b)?;
                annotations.insert(k, string(v));
            }
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    Ok(Value::Object(meta))
}

/// A reference's `name` (field 1 of `LocalObjectReference`; field 4 of `ObjectReference`).
fn reference(bytes: &[u8], name_field: u64) -> Result<Value, String> {
    let mut name = None;
    for (number, field) in fields(bytes)? {
        if let (n, Field::Bytes(b)) = (number, field)
            && n == name_field
        {
            name = Some(string(b));
        }
    }
    Ok(match name {
        Some(name) => json!({"name": name}),
        None => json!({}),
    })
}

/// The object in a protobuf body (after `k8s\0`) as JSON, its `apiVersion` and `kind` from the
/// envelope; an error if it is not one or not a `kind`.
pub(crate) fn decode(body: &[u8], kind: Kind) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(b"k8s\0")
        .ok_or("not a Kubernetes protobuf envelope")?;
    let (mut api_version, mut kind_said, mut raw) = (String::new(), String::new(), &[][..]);
    for (number, field) in fields(envelope)? {
        match (number, field) {
            (1, Field::Bytes(type_meta)) => {
                for (n, f) in fields(type_meta)? {
                    match (n, f) {
                        (1, Field::Bytes(b)) => api_version = String::from_utf8_lossy(b).into(),
                        (2, Field::Bytes(b)) => kind_said = String::from_utf8_lossy(b).into(),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let expected = match kind {
        Kind::Secret => "Secret",
        Kind::ServiceAccount => "ServiceAccount",
    };
    if api_version != "v1" || kind_said != expected {
        return Err(format!(
            "no kind {kind_said:?} is registered for version {api_version:?} here"
        ));
    }
    let mut object = Map::new();
    object.insert("apiVersion".into(), json!("v1"));
    object.insert("kind".into(), json!(expected));
    let (mut data, mut string_data) = (Map::new(), Map::new());
    let (mut secrets, mut pull) = (Vec::new(), Vec::new());
    for (number, field) in fields(raw)? {
        match (kind, number, field) {
            (_, 1, Field::Bytes(b)) => {
                object.insert("metadata".into(), metadata(b)?);
            }
            (Kind::Secret, 2, Field::Bytes(b)) => {
                let (k, v) = entry(b)?;
                let encoded = base64::engine::general_purpose::STANDARD.encode(v);
                data.insert(k, Value::String(encoded));
            }
            (Kind::Secret, 3, Field::Bytes(b)) if !b.is_empty() => {
                object.insert("type".into(), string(b));
            }
            (Kind::Secret, 4, Field::Bytes(b)) => {
                let (k, v) = entry(b)?;
                string_data.insert(k, string(v));
            }
            (Kind::Secret, 5, Field::Varint(v)) => {
                object.insert("immutable".into(), json!(v != 0));
            }
            (Kind::ServiceAccount, 2, Field::Bytes(b)) => secrets.push(reference(b, 4)?),
            (Kind::ServiceAccount, 3, Field::Bytes(b)) => pull.push(reference(b, 1)?),
            (Kind::ServiceAccount, 4, Field::Varint(v)) => {
                object.insert("automountServiceAccountToken".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    for (field, map) in [("data", data), ("stringData", string_data)] {
        if !map.is_empty() {
            object.insert(field.into(), Value::Object(map));
        }
    }
    for (field, list) in [("secrets", secrets), ("imagePullSecrets", pull)] {
        if !list.is_empty() {
            object.insert(field.into(), Value::Array(list));
        }
    }
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectls_secret_reads_as_its_json() {
        // What `kubectl create secret docker-registry x --docker-server=r.io
        // --docker-username=u --docker-password=p` (v1.32) sends.
        let body = b"k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12\x8a\x01\n\x11\n\x01x\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12U\n\x11.dockerconfigjson\x12@{\"auths\":{\"r.io\":{\"username\":\"u\",\"password\":\"p\",\"auth\":\"dTpw\"}}}\x1a\x1ekubernetes.io/dockerconfigjson\x1a\x00\"\x00";
        let secret = decode(body, Kind::Secret).unwrap();
        assert_eq!(secret["metadata"], json!({"name": "x"}));
        assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
        let data = secret["data"][".dockerconfigjson"].as_str().unwrap();
        let data = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        assert!(data.starts_with(b"{\"auths\":{\"r.io\""));
        assert!(decode(body, Kind::ServiceAccount).is_err());
    }
}
