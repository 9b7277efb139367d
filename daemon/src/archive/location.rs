//! Where the archive lives: a storage URL (`[storage] url`, `agentd restore --from`), checked
//! before anything starts and opened as an object store whose credentials and endpoint come from
//! the environment, as the cloud SDKs read them (`AWS_*`, `GOOGLE_*`, `AZURE_*`).

use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use std::path::PathBuf;
use std::sync::Arc;

/// The kinds of storage a URL may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageKind {
    /// `s3://bucket/prefix`: AWS S3 or any S3-compatible endpoint (`AWS_ENDPOINT_URL`).
    S3 { bucket: String },
    /// `gs://bucket/prefix`: Google Cloud Storage.
    Gcs { bucket: String },
    /// `az://container/prefix`: Azure Blob Storage (account from `AZURE_STORAGE_ACCOUNT_NAME`).
    Azure { container: String },
    /// `file:///absolute/path`: a local or mounted directory (tests, NFS, a second disk).
    File { root: PathBuf },
}

/// A checked storage URL: its kind and the object-key prefix everything goes under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageUrl {
    /// The URL as written, for messages.
    pub text: String,
    pub kind: StorageKind,
    /// Key prefix inside the bucket (empty for `file://`, whose path is the store's root).
    pub prefix: ObjectPath,
}

/// Why a storage URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StorageUrlError {
    #[error("storage URL {url:?} is not a URL ({source}); expected s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or file:///path")]
    NotAUrl {
        url: String,
        source: url::ParseError,
    },
    #[error("storage URL {url:?} has the unsupported scheme {scheme:?}; use s3://, gs://, az:// or file://")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("storage URL {url:?} names no bucket or container ({scheme}://NAME/prefix)")]
    MissingBucket { url: String, scheme: String },
    #[error("storage URL {url:?}: {detail}")]
    Invalid { url: String, detail: String },
    #[error("cannot open the object store for {url}: {source}")]
    Open {
        url: String,
        source: object_store::Error,
    },
    #[error("cannot create the archive directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StorageUrl {
    /// Parses and checks `text`; nothing is contacted.
    pub fn parse(text: &str) -> Result<StorageUrl, StorageUrlError> {
        let url = url::Url::parse(text).map_err(|source| StorageUrlError::NotAUrl {
            url: text.to_owned(),
            source,
        })?;
        let invalid = |detail: &str| StorageUrlError::Invalid {
            url: text.to_owned(),
            detail: detail.to_owned(),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "credentials do not belong in the URL (the config is not a secret); set them in the environment (AWS_ACCESS_KEY_ID, ...)",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a query or fragment is not supported"));
        }
        let scheme = url.scheme().to_owned();
        if scheme == "file" {
            return parse_file_url(text, &url);
        }
        let name = url.host_str().unwrap_or("").to_owned();
        if name.is_empty() {
            return Err(StorageUrlError::MissingBucket {
                url: text.to_owned(),
                scheme,
            });
        }
        let kind = match scheme.as_str() {
            "s3" | "s3a" => StorageKind::S3 { bucket: name },
            "gs" => StorageKind::Gcs { bucket: name },
            "az" | "azure" | "abfs" => StorageKind::Azure { container: name },
            _ => {
                return Err(StorageUrlError::UnsupportedScheme {
                    url: text.to_owned(),
                    scheme,
                })
            }
        };
        let prefix = ObjectPath::parse(url.path().trim_matches('/')).map_err(|error| {
            invalid(&format!(
                "the prefix {:?} is not a valid key: {error}",
                url.path()
            ))
        })?;
        Ok(StorageUrl {
            text: text.to_owned(),
            kind,
            prefix,
        })
    }

    /// Opens the store (credentials from the environment). A `file://` root is created if missing.
    pub fn open(&self) -> Result<ArchiveStore, StorageUrlError> {
        install_tls_crypto_provider();
        let opened = |result: object_store::Result<Arc<dyn ObjectStore>>| {
            result.map_err(|source| StorageUrlError::Open {
                url: self.text.clone(),
                source,
            })
        };
        let store: Arc<dyn ObjectStore> = match &self.kind {
            StorageKind::S3 { bucket } => opened(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map(|store| Arc::new(store) as _),
            )?,
            StorageKind::Gcs { bucket } => opened(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map(|store| Arc::new(store) as _),
            )?,
            StorageKind::Azure { container } => opened(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(container)
                    .build()
                    .map(|store| Arc::new(store) as _),
            )?,
            StorageKind::File { root } => {
                std::fs::create_dir_all(root).map_err(|source| StorageUrlError::CreateDir {
                    path: root.clone(),
                    source,
                })?;
                opened(
                    object_store::local::LocalFileSystem::new_with_prefix(root)
                        .map(|store| Arc::new(store) as _),
                )?
            }
        };
        Ok(ArchiveStore {
            store,
            root: self.prefix.clone(),
            log_prefix: self.prefix.clone().join("log"),
            url: self.text.clone(),
        })
    }
}

/// `file:///abs/path`: no host, an absolute path.
fn parse_file_url(text: &str, url: &url::Url) -> Result<StorageUrl, StorageUrlError> {
    let invalid = |detail: &str| StorageUrlError::Invalid {
        url: text.to_owned(),
        detail: detail.to_owned(),
    };
    if url
        .host_str()
        .is_some_and(|host| !host.is_empty() && host != "localhost")
    {
        return Err(invalid(
            "a file:// URL names a path on this machine: file:///absolute/path (three slashes)",
        ));
    }
    let root = url
        .to_file_path()
        .map_err(|()| invalid("a file:// URL needs an absolute path: file:///absolute/path"))?;
    if root.parent().is_none() {
        return Err(invalid("refusing the file system root as an archive"));
    }
    Ok(StorageUrl {
        text: text.to_owned(),
        kind: StorageKind::File { root },
        prefix: ObjectPath::default(),
    })
}

/// reqwest is built with rustls and no bundled crypto (no aws-lc C build): the process-wide
/// provider must be ring's, as the daemon's own TLS uses. Installing twice is refused by rustls,
/// hence the check; the daemon's TLS acceptor names ring explicitly and does not depend on it.
fn install_tls_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only when another thread installed one in between, which is then in force.
        let _already_installed = rustls::crypto::ring::default_provider().install_default();
    }
}

/// An opened archive location: the store and where the log goes in it.
#[derive(Debug, Clone)]
pub struct ArchiveStore {
    pub store: Arc<dyn ObjectStore>,
    /// The URL's key prefix: `log/`, `exports/` and `datasets/` go under it.
    pub root: ObjectPath,
    /// `<prefix>/log`: segment objects and `manifest.json`.
    pub log_prefix: ObjectPath,
    /// The URL as configured, for messages.
    pub url: String,
}

impl ArchiveStore {
    /// The object holding the segment file `name`.
    pub fn segment_path(&self, name: &str) -> ObjectPath {
        self.log_prefix.clone().join(name)
    }

    /// The object holding the manifest.
    pub fn manifest_path(&self) -> ObjectPath {
        self.log_prefix.clone().join(super::manifest::MANIFEST_NAME)
    }

    /// `url/log/name`, for messages.
    pub fn describe(&self, path: &ObjectPath) -> String {
        format!("{} (object {path})", self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> (StorageKind, String) {
        let url = StorageUrl::parse(text).unwrap();
        (url.kind, url.prefix.to_string())
    }

    fn error(text: &str) -> String {
        StorageUrl::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn cloud_urls_give_their_bucket_and_prefix() {
        let bucket = |name: &str| name.to_owned();
        assert_eq!(
            kind("s3://my-bucket/agentd/prod/"),
            (
                StorageKind::S3 {
                    bucket: bucket("my-bucket")
                },
                "agentd/prod".into()
            )
        );
        assert_eq!(
            kind("s3://my-bucket"),
            (
                StorageKind::S3 {
                    bucket: bucket("my-bucket")
                },
                String::new()
            )
        );
        assert_eq!(
            kind("gs://b/p"),
            (
                StorageKind::Gcs {
                    bucket: bucket("b")
                },
                "p".into()
            )
        );
        assert_eq!(
            kind("az://container/a/b"),
            (
                StorageKind::Azure {
                    container: bucket("container")
                },
                "a/b".into()
            )
        );
        assert_eq!(
            kind("file:///var/backups/agentd"),
            (
                StorageKind::File {
                    root: PathBuf::from("/var/backups/agentd")
                },
                String::new()
            )
        );
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        assert!(
            error("bucket/prefix").contains("is not a URL"),
            "{}",
            error("bucket/prefix")
        );
        assert!(error("http://host/x").contains("unsupported scheme \"http\""));
        assert!(
            error("s3:///prefix").contains("names no bucket"),
            "{}",
            error("s3:///prefix")
        );
        assert!(error("s3://key:secret@bucket/p").contains("credentials do not belong"));
        assert!(error("s3://bucket/p?region=x").contains("query"));
        assert!(error("file://relative/path").contains("three slashes"));
        assert!(error("file:///").contains("root"));
    }

    #[test]
    fn keys_go_under_the_prefix_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("file://{}", dir.path().join("archive").display());
        let store = StorageUrl::parse(&text).unwrap().open().unwrap();
        assert!(dir.path().join("archive").is_dir(), "the root is created");
        assert_eq!(store.manifest_path().to_string(), "log/manifest.json");
        let s3 = StorageUrl::parse("s3://b/agentd/prod").unwrap();
        assert_eq!(
            s3.prefix
                .clone()
                .join("log")
                .join("00000000000000000001.seg")
                .to_string(),
            "agentd/prod/log/00000000000000000001.seg"
        );
    }
}
