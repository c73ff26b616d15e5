//! The durable log behind `--data-dir` (issue 14, being built): history,
//! offsets and epochs kept on disk in segment files of
//! `pushgate_core::log::record` records. `disk_log` is the `Log`;
//! `segments` is the file layer.

pub mod disk_log;
pub mod segments;
