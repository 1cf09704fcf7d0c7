//! The Litestream-compatible replica of the appliance database (`research/litestream-ltx.md`).
//!
//! - [`ltx`]: the LTX file codec (writes what Litestream 0.5.16+ reads; reads 0.5.0+).
//! - [`layout`]: file names and the S3 and file-replica layouts.
//! - [`plan`]: which files a restore applies (Litestream's plan, gaps refused).
//! - [`store`]: S3 (aws-sdk-s3) and directory stores.
//! - [`restore`]: restore into a new file, and snapshots of a database file.
//! - [`wal`]: committed frames of a SQLite WAL, checksums verified.

pub mod layout;
pub mod ltx;
pub mod plan;
pub mod restore;
pub mod store;
pub mod wal;
