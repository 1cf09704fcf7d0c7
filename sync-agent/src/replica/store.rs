//! Where replica files are kept: an S3-compatible bucket ([`S3Store`]), or a directory in
//! Litestream's file-replica layout ([`DirStore`]).

use std::future::Future;
use std::path::PathBuf;

use super::layout::{self, FileInfo};

/// Storage failures, naming the object.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A call to S3 failed.
    #[error("S3 {op} `{key}`: {reason}")]
    S3 {
        /// What was being done.
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// The SDK's error, with its sources.
        reason: String,
    },
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// What the replica needs of a store.
pub trait ReplicaStore: Send + Sync + 'static {
    /// The files of one level, in TXID order.
    fn list(&self, level: u8) -> impl Future<Output = Result<Vec<FileInfo>, StoreError>> + Send;
    /// One file's bytes.
    fn get(&self, file: &FileInfo) -> impl Future<Output = Result<Vec<u8>, StoreError>> + Send;
    /// Stores a file; `timestamp_ms` becomes its `litestream-timestamp`.
    fn put(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        bytes: Vec<u8>,
        timestamp_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Deletes files.
    fn delete(&self, files: &[FileInfo]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every file of every level.
    fn list_all(&self) -> impl Future<Output = Result<Vec<FileInfo>, StoreError>> + Send {
        async {
            let mut all = Vec::new();
            for level in 0..=layout::SNAPSHOT_LEVEL {
                all.extend(self.list(level).await?);
            }
            Ok(all)
        }
    }
}

/// A directory in Litestream's file-replica layout: `<root>/ltx/<level>/<min>-<max>.ltx`.
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// A store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn level_dir(&self, level: u8) -> PathBuf {
        self.root.join("ltx").join(level.to_string())
    }
}

fn io(path: &std::path::Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl ReplicaStore for DirStore {
    async fn list(&self, level: u8) -> Result<Vec<FileInfo>, StoreError> {
        let dir = self.level_dir(level);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((min, max)) = layout::parse_file_name(&name) else {
                continue;
            };
            let meta = entry.metadata().map_err(|e| io(&entry.path(), e))?;
            let created_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            out.push(FileInfo {
                level,
                min_txid: min,
                max_txid: max,
                key: entry.path().display().to_string(),
                size: meta.len(),
                created_ms,
            });
        }
        out.sort_by_key(|f| (f.min_txid, f.max_txid));
        Ok(out)
    }

    async fn get(&self, file: &FileInfo) -> Result<Vec<u8>, StoreError> {
        std::fs::read(&file.key).map_err(|e| io(std::path::Path::new(&file.key), e))
    }

    async fn put(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        bytes: Vec<u8>,
        _timestamp_ms: i64,
    ) -> Result<(), StoreError> {
        let dir = self.level_dir(level);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let path = dir.join(layout::file_name(min_txid, max_txid));
        let tmp = path.with_extension("ltx.tmp");
        std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))
    }

    async fn delete(&self, files: &[FileInfo]) -> Result<(), StoreError> {
        for f in files {
            match std::fs::remove_file(&f.key) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(std::path::Path::new(&f.key), e)),
            }
        }
        Ok(())
    }
}

/// Where an S3 replica lives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Location {
    /// Bucket.
    pub bucket: String,
    /// Key prefix, without leading or trailing slashes.
    pub path: String,
    /// Endpoint of an S3-compatible store (`http://127.0.0.1:9000`); AWS when empty.
    pub endpoint: String,
    /// Region; `us-east-1` when empty and an endpoint is set.
    pub region: String,
    /// Path-style addressing (the default with an endpoint).
    pub force_path_style: bool,
}

/// An S3 URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `s3://…`.
    #[error("`{0}` is not an s3:// URL; write s3://BUCKET/PATH?endpoint=…")]
    NotS3(String),
    /// `s3://` with no bucket.
    #[error("`{0}` names no bucket; write s3://BUCKET/PATH")]
    NoBucket(String),
    /// A bucket with no path inside it.
    #[error("`{0}` names no path inside the bucket; use s3://bucket/some/path")]
    NoPath(String),
}

impl S3Location {
    /// Parses Litestream's URL form: `s3://BUCKET/PATH?endpoint=…&region=…&forcePathStyle=…`.
    pub fn from_url(url: &str) -> Result<Self, UrlError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| UrlError::NotS3(url.into()))?;
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, path) = main.split_once('/').unwrap_or((main, ""));
        if bucket.is_empty() {
            return Err(UrlError::NoBucket(url.into()));
        }
        let mut loc = Self {
            bucket: bucket.into(),
            path: path.trim_matches('/').into(),
            ..Self::default()
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "endpoint" => {
                    loc.endpoint = match v.contains("://") {
                        true => v.into(),
                        false => format!("http://{v}"),
                    }
                }
                "region" => loc.region = v.into(),
                "forcePathStyle" | "force-path-style" => loc.force_path_style = v != "false",
                _ => {}
            }
        }
        if !loc.endpoint.is_empty()
            && !query.contains("orcePathStyle")
            && !query.contains("force-path-style")
        {
            loc.force_path_style = true;
        }
        if loc.path.is_empty() {
            return Err(UrlError::NoPath(url.into()));
        }
        Ok(loc)
    }
}

/// An S3 (or S3-compatible) bucket, in Litestream's S3 layout.
pub struct S3Store {
    client: aws_sdk_s3::Client,
    location: S3Location,
}

impl S3Store {
    /// Connects with the standard AWS credential chain (environment, profile, instance role).
    /// With a custom endpoint, request checksums are computed and validated only when required:
    /// MinIO, Garage, R2 and B2 reject the SDK's defaults.
    pub async fn connect(location: S3Location) -> Self {
        Self::build(location, None).await
    }

    /// Connects with a fixed access key and secret instead of the credential chain.
    pub async fn connect_with_keys(
        location: S3Location,
        access_key_id: &str,
        secret: &str,
    ) -> Self {
        let credentials = aws_sdk_s3::config::Credentials::new(
            access_key_id,
            secret,
            None,
            None,
            "venued-config",
        );
        Self::build(location, Some(credentials)).await
    }

    async fn build(
        location: S3Location,
        credentials: Option<aws_sdk_s3::config::Credentials>,
    ) -> Self {
        use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
        let region = match (location.region.is_empty(), location.endpoint.is_empty()) {
            (false, _) => Some(location.region.clone()),
            (true, false) => Some("us-east-1".to_string()),
            (true, true) => None,
        };
        if let Some(region) = region {
            loader = loader.region(aws_sdk_s3::config::Region::new(region));
        }
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(location.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if !location.endpoint.is_empty() {
            builder = builder.endpoint_url(&location.endpoint);
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            location,
        }
    }

    fn key(&self, level: u8, min: u64, max: u64) -> String {
        format!(
            "{}{}",
            layout::s3_level_prefix(&self.location.path, level),
            layout::file_name(min, max)
        )
    }
}

impl ReplicaStore for S3Store {
    async fn list(&self, level: u8) -> Result<Vec<FileInfo>, StoreError> {
        let prefix = layout::s3_level_prefix(&self.location.path, level);
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.location.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| StoreError::S3 {
                op: "list",
                key: prefix.clone(),
                reason: crate::error_chain(&e),
            })?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let Some(name) = key.strip_prefix(&prefix) else {
                    continue;
                };
                let Some((min, max)) = layout::parse_file_name(name) else {
                    continue;
                };
                out.push(FileInfo {
                    level,
                    min_txid: min,
                    max_txid: max,
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    created_ms: object
                        .last_modified()
                        .and_then(|t| t.to_millis().ok())
                        .unwrap_or(0),
                });
            }
        }
        out.sort_by_key(|f| (f.min_txid, f.max_txid));
        Ok(out)
    }

    async fn get(&self, file: &FileInfo) -> Result<Vec<u8>, StoreError> {
        let err = |reason: String| StoreError::S3 {
            op: "get",
            key: file.key.clone(),
            reason,
        };
        let object = self
            .client
            .get_object()
            .bucket(&self.location.bucket)
            .key(&file.key)
            .send()
            .await
            .map_err(|e| err(crate::error_chain(&e)))?;
        let body = object
            .body
            .collect()
            .await
            .map_err(|e| err(crate::error_chain(&e)))?;
        Ok(body.into_bytes().to_vec())
    }

    async fn put(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        bytes: Vec<u8>,
        timestamp_ms: i64,
    ) -> Result<(), StoreError> {
        let key = self.key(level, min_txid, max_txid);
        let stamp =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(timestamp_ms) * 1_000_000)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
        self.client
            .put_object()
            .bucket(&self.location.bucket)
            .key(&key)
            .content_type("application/octet-stream")
            .metadata("litestream-timestamp", stamp)
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| StoreError::S3 {
                op: "put",
                key: key.clone(),
                reason: crate::error_chain(&e),
            })?;
        Ok(())
    }

    async fn delete(&self, files: &[FileInfo]) -> Result<(), StoreError> {
        for f in files {
            self.client
                .delete_object()
                .bucket(&self.location.bucket)
                .key(&f.key)
                .send()
                .await
                .map_err(|e| StoreError::S3 {
                    op: "delete",
                    key: f.key.clone(),
                    reason: crate::error_chain(&e),
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn litestream_urls_parse() {
        let l =
            S3Location::from_url("s3://venue/edge/app?endpoint=127.0.0.1:5055&region=eu-west-1")
                .expect("url");
        assert_eq!(l.bucket, "venue");
        assert_eq!(l.path, "edge/app");
        assert_eq!(l.endpoint, "http://127.0.0.1:5055");
        assert_eq!(l.region, "eu-west-1");
        assert!(l.force_path_style);
        assert!(S3Location::from_url("s3://venue").is_err());
        assert!(S3Location::from_url("https://x/y").is_err());
    }
}
