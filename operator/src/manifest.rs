//! Loading manifests from YAML files into an [`Inventory`] of typed objects.
//!
//! The same manifests that `kubectl apply -f` takes: multi-document YAML holding `DockerHost`,
//! `GreMesh`, `ContainerAttachment` and (for SSH keys) core `Secret` objects. Objects of other
//! API groups are skipped with a warning so that a folder shared with other tooling still
//! loads; a document without `apiVersion` or `kind`, or of group `gremesh.io` with a kind or
//! version gremesh does not know, is an error (it is almost certainly a typo).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::api::{ContainerAttachment, DockerHost, GreMesh};

/// Everything gremesh needs to know about the desired network, keyed by object name.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    /// `DockerHost` objects.
    pub hosts: BTreeMap<String, DockerHost>,
    /// `GreMesh` objects.
    pub meshes: BTreeMap<String, GreMesh>,
    /// `ContainerAttachment` objects.
    pub attachments: BTreeMap<String, ContainerAttachment>,
    /// Secret data: secret name → key → bytes. Never logged.
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

/// A manifest that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A document is not valid YAML, is not a Kubernetes object, or does not fit its kind's
    /// schema.
    #[error("{path}: document {number}{object}: {reason}")]
    Document {
        /// The file.
        path: PathBuf,
        /// One-based document number in the file.
        number: usize,
        /// ` (Kind name)` when the document got that far, else empty.
        object: String,
        /// Why, with the path of the offending field where there is one.
        reason: String,
    },
    /// Two objects of one kind share a name.
    #[error("{path}: document {number}: duplicate {kind} {name}")]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// One-based document number in the file.
        number: usize,
        /// Kind of the object.
        kind: &'static str,
        /// Name of the object.
        name: String,
    },
}

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Option<NameOnly>,
}

#[derive(Deserialize)]
struct NameOnly {
    #[serde(default)]
    name: Option<String>,
}

impl TypeMeta {
    /// The object's name, or `(no name)`.
    fn name(&self) -> &str {
        self.metadata
            .as_ref()
            .and_then(|m| m.name.as_deref())
            .unwrap_or("(no name)")
    }
}

#[derive(Deserialize)]
struct SecretDoc {
    metadata: SecretMeta,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default, rename = "stringData")]
    string_data: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct SecretMeta {
    name: String,
}

impl Inventory {
    /// Loads and merges every document of every file (a folder means its `*.yaml`/`*.yml`).
    pub fn load(paths: &[PathBuf]) -> Result<Self, ManifestError> {
        let mut inventory = Inventory::default();
        for path in expand(paths)? {
            let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Read {
                path: path.clone(),
                source,
            })?;
            inventory.add_yaml(&path, &text)?;
        }
        Ok(inventory)
    }

    /// Adds every document of one YAML text; `path` only names it in errors.
    pub fn add_yaml(&mut self, path: &Path, text: &str) -> Result<(), ManifestError> {
        for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let number = index + 1;
            let doc_err = |object: String, reason: String| ManifestError::Document {
                path: path.to_owned(),
                number,
                object,
                reason,
            };
            let value = serde_yaml::Value::deserialize(document)
                .map_err(|e| doc_err(String::new(), redact(&e.to_string())))?;
            if value.is_null() {
                continue;
            }
            let meta: TypeMeta =
                from_value(value.clone()).map_err(|e| doc_err(String::new(), e))?;
            let object = if meta.kind.is_empty() {
                String::new()
            } else {
                format!(" ({} {})", meta.kind, meta.name())
            };
            let err = |reason: String| doc_err(object.clone(), reason);
            let dup = |kind: &'static str, name: String| ManifestError::Duplicate {
                path: path.to_owned(),
                number,
                kind,
                name,
            };
            match (meta.api_version.as_str(), meta.kind.as_str()) {
                ("gremesh.io/v1alpha1", "DockerHost") => {
                    let obj: DockerHost = from_value(value).map_err(err)?;
                    let name = object_name(&obj.metadata).map_err(err)?;
                    if self.hosts.insert(name.clone(), obj).is_some() {
                        return Err(dup("DockerHost", name));
                    }
                }
                ("gremesh.io/v1alpha1", "GreMesh") => {
                    let obj: GreMesh = from_value(value).map_err(err)?;
                    let name = object_name(&obj.metadata).map_err(err)?;
                    if self.meshes.insert(name.clone(), obj).is_some() {
                        return Err(dup("GreMesh", name));
                    }
                }
                ("gremesh.io/v1alpha1", "ContainerAttachment") => {
                    let obj: ContainerAttachment = from_value(value).map_err(err)?;
                    let name = object_name(&obj.metadata).map_err(err)?;
                    if self.attachments.insert(name.clone(), obj).is_some() {
                        return Err(dup("ContainerAttachment", name));
                    }
                }
                ("v1", "Secret") => {
                    let doc: SecretDoc = from_value(value).map_err(err)?;
                    let data = secret_data(doc.data, doc.string_data).map_err(err)?;
                    if self
                        .secrets
                        .insert(doc.metadata.name.clone(), data)
                        .is_some()
                    {
                        return Err(dup("Secret", doc.metadata.name));
                    }
                }
                ("", _) => return Err(err("apiVersion: missing".to_owned())),
                (_, "") => return Err(err("kind: missing".to_owned())),
                (api_version, kind) if api_version.split('/').next() == Some(GROUP) => {
                    return Err(err(format!(
                        "{api_version} {kind} is not a kind gremesh knows (DockerHost, GreMesh, \
                         ContainerAttachment of {GROUP}/v1alpha1)"
                    )));
                }
                (api_version, kind) => {
                    tracing::warn!(path = %path.display(), document = number, api_version, kind, "skipping object of a kind gremesh does not handle");
                }
            }
        }
        Ok(())
    }
}

/// The API group of gremesh's kinds.
const GROUP: &str = "gremesh.io";

/// Deserializes `value`, naming the path of the offending field in the error. The offending
/// value itself is never shown: it may be key material (a Secret's data, a key pasted in the
/// wrong place).
fn from_value<T: serde::de::DeserializeOwned>(value: serde_yaml::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let inner = redact(&e.into_inner().to_string());
        if field == "." {
            inner
        } else {
            format!("{field}: {inner}")
        }
    })
}

/// serde's message with every value it echoes replaced: quoted strings (`invalid type: string
/// "..."`) and the value of an unknown enum variant; field names and the accepted variants
/// (in backquotes) stay.
fn redact(message: &str) -> String {
    static VALUES: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#""(?:[^"\\]|\\.)*"?|unknown variant `[^`]*`"#).expect("static pattern")
    });
    VALUES
        .replace_all(message, |c: &regex::Captures| {
            if c[0].starts_with("unknown variant") {
                "unknown variant (value not shown)"
            } else {
                "(value not shown)"
            }
        })
        .into_owned()
}

fn object_name(meta: &kube::api::ObjectMeta) -> Result<String, String> {
    meta.name
        .clone()
        .ok_or_else(|| "metadata.name: missing".to_owned())
}

fn secret_data(
    data: BTreeMap<String, String>,
    string_data: BTreeMap<String, String>,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    use base64::Engine as _;
    let mut out = BTreeMap::new();
    for (key, encoded) in data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| format!("data.{key}: not valid base64"))?;
        out.insert(key, bytes);
    }
    for (key, text) in string_data {
        out.insert(key, text.into_bytes());
    }
    Ok(out)
}

fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ManifestError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| ManifestError::Read {
                path: path.clone(),
                source,
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: key}
stringData: {ssh-privatekey: "PRIVATE"}
---
apiVersion: gremesh.io/v1alpha1
kind: DockerHost
metadata: {name: host-a}
spec:
  address: 10.200.0.11
  sshKeySecretRef: {name: key}
  hostKey: ssh-ed25519 AAAA
  underlayAddress: 10.200.0.11
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
"#;

    #[test]
    fn loads_hosts_and_secrets_and_skips_other_kinds() {
        let mut inv = Inventory::default();
        inv.add_yaml(Path::new("m.yaml"), MANIFEST).unwrap();
        assert_eq!(inv.hosts.len(), 1);
        assert_eq!(inv.secrets["key"]["ssh-privatekey"], b"PRIVATE");
        assert_eq!(inv.hosts["host-a"].spec.port_or_default(), 22);
    }

    #[test]
    fn unknown_field_is_named() {
        let text = "apiVersion: gremesh.io/v1alpha1\nkind: GreMesh\nmetadata: {name: m}\nspec: {hosts: [], key: 1, network: 10.0.0.0/16, mtuu: 3}\n";
        let err = Inventory::default()
            .add_yaml(Path::new("m.yaml"), text)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("m.yaml: document 1 (GreMesh m): spec.mtuu: unknown field `mtuu`"),
            "{err}"
        );
    }

    #[test]
    fn typos_in_kind_or_api_version_are_errors_and_other_groups_are_skipped() {
        let load = |text: &str| Inventory::default().add_yaml(Path::new("m.yaml"), text);
        let typo = "apiVersion: gremesh.io/v1alpha1\nkind: GreMash\nmetadata: {name: m}\n";
        let err = load(typo).unwrap_err().to_string();
        assert!(
            err.contains("document 1 (GreMash m)") && err.contains("not a kind"),
            "{err}"
        );
        let err = load("kind: GreMesh\nmetadata: {name: m}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("apiVersion: missing"), "{err}");
        let two = "apiVersion: apps/v1\nkind: Deployment\n---\napiVersion: v1\nmetadata: {}\n";
        let err = load(two).unwrap_err().to_string();
        assert!(err.ends_with("document 2: kind: missing"), "{err}");
        assert!(load("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n").is_ok());
    }

    #[test]
    fn errors_never_echo_the_values_they_reject() {
        let key = "-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjE=";
        let load = |text: &str| Inventory::default().add_yaml(Path::new("m.yaml"), text);
        for text in [
            format!("\"{key}\"\n"),
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: k}}\ndata: {{k: [\"{key}\"]}}\n"
            ),
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: k}}\ndata: {{k: \"{key}\"}}\n"
            ),
            format!(
                "apiVersion: gremesh.io/v1alpha1\nkind: GreMesh\nmetadata: {{name: m}}\n\
                 spec: {{hosts: [], key: 1, network: 10.0.0.0/16, encapsulation: \"{key}\"}}\n"
            ),
        ] {
            let err = load(&text).unwrap_err().to_string();
            assert!(!err.contains("b3BlbnNzaC1rZXktdjE"), "{err}");
            assert!(!err.contains("PRIVATE KEY"), "{err}");
        }
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let mut inv = Inventory::default();
        let text = format!("{MANIFEST}\n---\n{}", MANIFEST.split("---").nth(1).unwrap());
        let err = inv.add_yaml(Path::new("m.yaml"), &text).unwrap_err();
        assert!(
            err.to_string().contains("duplicate DockerHost host-a"),
            "{err}"
        );
    }
}
