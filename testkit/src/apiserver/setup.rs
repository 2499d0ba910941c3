//! What the kubelet resolves before it creates a pod's containers: the pod's volumes (hostPath
//! with its type check, emptyDir, configMap and configMaps projected) and each container's
//! environment (values with `$(VAR)` references, `fieldRef`s, config map keys), in the
//! kubelet's words when one cannot be had.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Volume};

use super::store::Key;

/// A volume ready to mount: where it is on the host.
#[derive(Debug, Clone)]
pub(crate) struct Ready {
    host: PathBuf,
    read_only: bool,
}

/// The config maps the stand-in holds.
pub(crate) type ConfigMaps = BTreeMap<Key, ConfigMap>;

/// Prepares every volume of `pod`, those the kubelet makes under `dir`: by name, or the
/// volume that failed and why (`MountVolume.SetUp failed for volume "x" : why`).
pub(crate) fn volumes(
    pod: &Pod,
    dir: &Path,
    maps: &ConfigMaps,
) -> Result<HashMap<String, Ready>, (String, String)> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut ready = HashMap::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let made = prepare(volume, &dir.join(&volume.name), &namespace, maps)
            .map_err(|why| (volume.name.clone(), why))?;
        ready.insert(volume.name.clone(), made);
    }
    Ok(ready)
}

fn prepare(
    volume: &Volume,
    dir: &Path,
    namespace: &str,
    maps: &ConfigMaps,
) -> Result<Ready, String> {
    let made = |read_only| Ready {
        host: dir.to_owned(),
        read_only,
    };
    let create = || std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()));
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        check_host_path(&path, host.type_.as_deref().unwrap_or(""))?;
        return Ok(Ready {
            host: path,
            read_only: false,
        });
    }
    if volume.empty_dir.is_some() {
        create()?;
        // As the kubelet makes it: writable by whatever user the pod's containers run as.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        return Ok(made(false));
    }
    if let Some(source) = &volume.config_map {
        create()?;
        write_config_map(
            dir,
            namespace,
            &source.name,
            source.items.as_deref(),
            source.optional,
            maps,
        )?;
        return Ok(made(true));
    }
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        return match secret.optional {
            Some(true) => create().map(|()| made(true)),
            _ => Err(format!("secret \"{name}\" not found")),
        };
    }
    if let Some(projected) = &volume.projected {
        create()?;
        for source in projected.sources.iter().flatten() {
            if let Some(map) = &source.config_map {
                write_config_map(
                    dir,
                    namespace,
                    &map.name,
                    map.items.as_deref(),
                    map.optional,
                    maps,
                )?;
            } else if let Some(secret) = &source.secret {
                if secret.optional != Some(true) {
                    return Err(format!("secret \"{}\" not found", secret.name));
                }
            } else {
                return Err(
                    "the stand-in's kubelet projects config maps (and optional secrets) only"
                        .into(),
                );
            }
        }
        return Ok(made(true));
    }
    let kind = serde_json::to_value(volume)
        .ok()
        .and_then(|v| {
            v.as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        })
        .unwrap_or_else(|| "unknown".into());
    Err(format!(
        "the stand-in's kubelet does not mount {kind} volumes"
    ))
}

/// hostPath's `type` check, creating what `...OrCreate` asks for (`pkg/volume/hostpath`).
fn check_host_path(path: &Path, type_: &str) -> Result<(), String> {
    let failed = |what: &str| {
        format!(
            "hostPath type check failed: {} is not {what}",
            path.display()
        )
    };
    let meta = std::fs::metadata(path).ok();
    let is = |test: fn(&std::fs::Metadata) -> bool| meta.as_ref().is_some_and(test);
    match type_ {
        "DirectoryOrCreate" if meta.is_none() => std::fs::create_dir_all(path)
            .map_err(|e| format!("hostPath type check failed: {}: {e}", path.display())),
        "FileOrCreate" if meta.is_none() => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| format!("hostPath type check failed: {}: {e}", path.display())),
        "Directory" | "DirectoryOrCreate" if !is(std::fs::Metadata::is_dir) => {
            Err(failed("a directory"))
        }
        "File" | "FileOrCreate" if !is(std::fs::Metadata::is_file) => Err(failed("a file")),
        "Socket" if !is(|m| m.file_type().is_socket()) => Err(failed("a socket file")),
        "CharDevice" if !is(|m| m.file_type().is_char_device()) => {
            Err(failed("a character device"))
        }
        "BlockDevice" if !is(|m| m.file_type().is_block_device()) => Err(failed("a block device")),
        _ => Ok(()),
    }
}

fn write_config_map(
    dir: &Path,
    namespace: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    maps: &ConfigMaps,
) -> Result<(), String> {
    let Some(map) = maps.get(&(namespace.to_owned(), name.to_owned())) else {
        return match optional {
            Some(true) => Ok(()),
            _ => Err(format!("configmap \"{name}\" not found")),
        };
    };
    let data = map.data.clone().unwrap_or_default();
    let files: Vec<(String, String)> = match items {
        Some(items) => items
            .iter()
            .map(|i| match data.get(&i.key) {
                Some(v) => Ok((i.path.clone(), v.clone())),
                None => Err(format!(
                    "configmap references non-existent config key: {}",
                    i.key
                )),
            })
            .collect::<Result<_, _>>()?,
        None => data.into_iter().collect(),
    };
    for (path, value) in files {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&file, value).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(())
}

/// A pod's volume bind-mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bind {
    /// Where it is on the host.
    pub host: PathBuf,
    /// Where the container sees it.
    pub container: String,
    pub read_only: bool,
}

impl Bind {
    /// As `docker run --volume` takes it: `HOST:CONTAINER[:ro]`.
    pub fn volume(&self) -> String {
        let ro = if self.read_only { ":ro" } else { "" };
        format!("{}:{}{ro}", self.host.display(), self.container)
    }
}

/// `container`'s bind mounts of the pod's ready `volumes`.
pub(crate) fn binds(container: &Container, volumes: &HashMap<String, Ready>) -> Vec<Bind> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let volume = volumes.get(&m.name)?;
            let mut host = volume.host.clone();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                host.push(sub);
            }
            Some(Bind {
                host,
                container: m.mount_path.clone(),
                read_only: m.read_only == Some(true) || volume.read_only,
            })
        })
        .collect()
}

/// `container`'s environment in `pod` whose IP is `pod_ip`, or why it cannot be had
/// (`CreateContainerConfigError`).
pub(crate) fn env(
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
    maps: &ConfigMaps,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(source) = &from.config_map_ref {
            match maps.get(&(namespace.clone(), source.name.clone())) {
                Some(map) => {
                    for (k, v) in map.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if source.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", source.name)),
            }
        }
        if let Some(source) = &from.secret_ref
            && source.optional != Some(true)
        {
            return Err(format!("secret \"{}\" not found", source.name));
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => expand(value, &env),
            (None, None) => String::new(),
            (None, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    field_value(pod, &field.field_path, pod_ip)
                        .ok_or_else(|| format!("unsupported fieldRef {:?}", field.field_path))?
                } else if let Some(key) = &from.config_map_key_ref {
                    let map = maps.get(&(namespace.clone(), key.name.clone()));
                    match map.and_then(|m| m.data.as_ref()?.get(&key.key)) {
                        Some(value) => value.clone(),
                        None if key.optional == Some(true) => continue,
                        None if map.is_none() => {
                            return Err(format!("configmap \"{}\" not found", key.name));
                        }
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {namespace}/{}",
                                key.key, key.name
                            ));
                        }
                    }
                } else if let Some(key) = &from.secret_key_ref {
                    if key.optional == Some(true) {
                        continue;
                    }
                    return Err(format!("secret \"{}\" not found", key.name));
                } else {
                    // resourceFieldRef: resources are not modelled.
                    "0".into()
                }
            }
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// The value of downward-API field `path` of `pod`.
fn field_value(pod: &Pod, path: &str, pod_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let quoted = |prefix: &str| {
        path.strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")
            .map(str::to_owned)
    };
    if let Some(key) = quoted("metadata.labels") {
        return Some(
            meta.labels
                .as_ref()
                .and_then(|l| l.get(&key))
                .cloned()
                .unwrap_or_default(),
        );
    }
    if let Some(key) = quoted("metadata.annotations") {
        let annotations = meta.annotations.as_ref();
        return Some(
            annotations
                .and_then(|a| a.get(&key))
                .cloned()
                .unwrap_or_default(),
        );
    }
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => super::NODE_IP.to_owned(),
        "status.podIP" | "status.podIPs" => pod_ip.to_owned(),
        _ => return None,
    })
}

/// `text` with `$(VAR)` replaced by the value of `VAR` in `env` (left alone if it has none)
/// and `$$` by `$`, as the kubelet expands env values, commands and args.
pub(crate) fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(close) = after.strip_prefix('(').and_then(|a| a.find(')')) {
            let name = &after[1..=close];
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, value)) => out.push_str(value),
                None => out.push_str(&rest[at..at + close + 3]),
            }
            rest = &after[close + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_as_the_kubelet_expands_them() {
        let env = [("A".to_owned(), "1".to_owned())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A) $ $(", &env), "$(A) $ $(");
    }

    #[test]
    fn host_paths_are_checked_and_made_by_type() {
        let dir = std::env::temp_dir().join(format!("kdbg-setup-{}", std::process::id()));
        let made = dir.join("a/b");
        assert_eq!(check_host_path(&made, "DirectoryOrCreate"), Ok(()));
        assert!(made.is_dir());
        assert_eq!(
            check_host_path(&made, "Socket"),
            Err(format!(
                "hostPath type check failed: {} is not a socket file",
                made.display()
            ))
        );
        assert!(check_host_path(&dir.join("none"), "Directory").is_err());
        assert_eq!(check_host_path(&dir.join("none"), ""), Ok(()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
