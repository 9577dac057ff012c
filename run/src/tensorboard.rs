//! TensorBoard event files: `events.out.tfevents.<unix seconds>.<hostname>` in the run directory,
//! the scalars of `metrics.jsonl` as `tensorboard --logdir runs/` reads them. Written by
//! [`crate::metrics::MetricsLog`] beside every record; nothing here reads them back (TensorBoard
//! and the tests' Python reader do).
//!
//! The format is small and written here (the Rust writers on crates.io are unmaintained or need
//! `protoc`): a file is a sequence of TFRecords, each
//! `u64 length | masked CRC32C of the length | data | masked CRC32C of the data` (little-endian,
//! mask = `((crc >> 15) | (crc << 17)) + 0xa282ead8`), whose data is one `Event` protobuf:
//! `wall_time` = 1 (double), `step` = 2 (int64), `file_version` = 3 (string, `brain.Event:2` in
//! the first event), `summary` = 5 (`Summary { repeated Value value = 1 }`,
//! `Value { string tag = 1; float simple_value = 2 }`), `session_log` = 7
//! (`SessionLog { status = 1 }`, START = 1; field 6 is the deprecated `log_message`).
//!
//! Every invocation of a run starts a new file, whose event after the version is a `SessionLog`
//! START: TensorBoard then drops every event of an earlier file at or after that step (the steps
//! a killed run logged past its checkpoint, which the resumed run logs again).

use crate::error::{Result, RunError};
use crate::layout::EVENTS_PREFIX;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `Event.file_version` of the first event in every file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// `SessionLog.SessionStatus.START`.
const SESSION_START: u64 = 1;

/// TFRecord's masked CRC32C of `data` (Castagnoli polynomial, then rotated right by 15 bits and
/// offset, so that a CRC stored inside checksummed data does not checksum to a constant).
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Appends one TFRecord holding `data` to `out`.
pub fn frame_record(data: &[u8], out: &mut Vec<u8>) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// What one event carries.
#[derive(Clone, Copy, Debug)]
pub enum What<'a> {
    /// The file's format version (the first event of a file).
    FileVersion(&'a str),
    /// Scalars: `(tag, value)` pairs, all at the event's step.
    Scalars(&'a [(String, f32)]),
    /// A session (re)start: TensorBoard discards earlier events at or after the event's step.
    SessionStart,
}

/// Appends the protobuf encoding of `Event { wall_time, step, what }` to `out`.
pub fn encode_event(wall_time: f64, step: i64, what: What, out: &mut Vec<u8>) {
    key(out, 1, WIRE_FIXED64);
    out.extend_from_slice(&wall_time.to_le_bytes());
    key(out, 2, WIRE_VARINT);
    varint(out, step as u64);
    match what {
        What::FileVersion(v) => bytes_field(out, 3, v.as_bytes()),
        What::Scalars(values) => {
            let mut summary = Vec::new();
            for (tag, value) in values {
                let mut v = Vec::with_capacity(tag.len() + 8);
                bytes_field(&mut v, 1, tag.as_bytes());
                key(&mut v, 2, WIRE_FIXED32);
                v.extend_from_slice(&value.to_le_bytes());
                bytes_field(&mut summary, 1, &v);
            }
            bytes_field(out, 5, &summary);
        }
        What::SessionStart => {
            let mut log = Vec::new();
            key(&mut log, 1, WIRE_VARINT);
            varint(&mut log, SESSION_START);
            bytes_field(out, 7, &log);
        }
    }
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

fn key(out: &mut Vec<u8>, field: u8, wire: u8) {
    out.push((field << 3) | wire);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u8, data: &[u8]) {
    key(out, field, WIRE_LEN);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// The file name TensorFlow gives an event file: `events.out.tfevents.<10-digit seconds>.<host>`.
pub fn file_name(unix_seconds: u64, host: &str) -> String {
    format!("{EVENTS_PREFIX}{unix_seconds:010}.{host}")
}

/// This machine's host name, with `/` replaced (it goes into a file name); `localhost` when the
/// system gives none.
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().replace('/', "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The seconds in the file name of an event file (`None` for other files).
fn file_seconds(name: &str) -> Option<u64> {
    name.strip_prefix(EVENTS_PREFIX)?.split('.').next()?.parse().ok()
}

/// Seconds since the Unix epoch, as a double (the events' `wall_time`).
fn wall_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// An event file being written: each call frames its events into one buffer and appends it with
/// one `write`, so the file only ever ends between records (or in a record a SIGKILL cut, which
/// TensorBoard skips).
pub struct EventWriter {
    path: PathBuf,
    file: std::fs::File,
    buf: Vec<u8>,
}

impl EventWriter {
    /// Creates a new event file in `dir` and writes its file-version event. The name carries the
    /// current time in seconds, or one second more than the latest event file already there, so
    /// that file names sort in the order the files were written (TensorBoard reads them in that
    /// order) and two invocations within one second do not share a file.
    ///
    /// Errors: the folder cannot be listed or the file cannot be created or written, with the
    /// path.
    pub fn create(dir: &Path) -> Result<Self> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let latest = std::fs::read_dir(dir)
            .map_err(|e| RunError::io(dir, e))?
            .filter_map(|e| e.ok().and_then(|e| file_seconds(&e.file_name().to_string_lossy())))
            .max();
        let mut seconds = latest.map_or(now, |l| now.max(l + 1));
        let host = host_name();
        let (path, file) = loop {
            let path = dir.join(file_name(seconds, &host));
            match std::fs::OpenOptions::new().create_new(true).append(true).open(&path) {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => seconds += 1,
                Err(e) => return Err(RunError::io(&path, e)),
            }
        };
        let mut w = EventWriter { path, file, buf: Vec::new() };
        w.write(0, What::FileVersion(FILE_VERSION))?;
        Ok(w)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event with `values` (tag, value) at `step`; nothing for no values.
    ///
    /// Errors: the write's, with the path.
    pub fn write_scalars(&mut self, step: i64, values: &[(String, f32)]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.write(step, What::Scalars(values))
    }

    /// Appends a `SessionLog` START at `step`: TensorBoard drops the events of earlier files at
    /// `step` and after.
    ///
    /// Errors: the write's, with the path.
    pub fn write_session_start(&mut self, step: i64) -> Result<()> {
        self.write(step, What::SessionStart)
    }

    fn write(&mut self, step: i64, what: What) -> Result<()> {
        let mut event = Vec::new();
        encode_event(wall_time(), step, what, &mut event);
        self.buf.clear();
        frame_record(&event, &mut self.buf);
        self.file.write_all(&self.buf).map_err(|e| RunError::io(&self.path, e))
    }

    /// Flushes the file to disk (fsync) and closes it.
    ///
    /// Errors: the fsync's, with the path.
    pub fn close(self) -> Result<()> {
        self.file.sync_all().map_err(|e| RunError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_its_mask_match_the_known_vectors() {
        // the CRC-32C check value (RFC 3720's polynomial)
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        // rotated right by 15 and offset: 0xe3069283 -> 0x2507c60d, + 0xa282ead8
        assert_eq!(masked_crc32c(b"123456789"), 0x2507_c60du32.wrapping_add(0xa282_ead8));
        assert_eq!(masked_crc32c(b"123456789"), 0xc78a_b0e5);
    }

    #[test]
    fn a_scalar_event_is_framed_and_encoded_as_decoded_by_hand() {
        let mut event = Vec::new();
        encode_event(1.5, 3, What::Scalars(&[("lr".to_string(), 0.5)]), &mut event);
        #[rustfmt::skip]
        let want: Vec<u8> = vec![
            0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, // wall_time = 1.5 (field 1, fixed64)
            0x10, 0x03,                          // step = 3 (field 2, varint)
            0x2a, 0x0b,                          // summary (field 5), 11 bytes
            0x0a, 0x09,                          //   value (field 1), 9 bytes
            0x0a, 0x02, b'l', b'r',              //     tag = "lr"
            0x15, 0, 0, 0, 0x3f,                 //     simple_value = 0.5 (field 2, fixed32)
        ];
        assert_eq!(event, want);
        let mut record = Vec::new();
        frame_record(&event, &mut record);
        assert_eq!(record.len(), 8 + 4 + event.len() + 4);
        assert_eq!(&record[..8], &[24, 0, 0, 0, 0, 0, 0, 0]);
        // both CRCs as TensorBoard's own masked_crc32c (tensorflow_stub) computes them
        assert_eq!(u32::from_le_bytes(record[8..12].try_into().unwrap()), 0x224b_7fa3);
        assert_eq!(&record[12..36], &want[..]);
        assert_eq!(u32::from_le_bytes(record[36..].try_into().unwrap()), 0xec52_d273);
        // a negative step is int64's ten-byte varint; a session start is field 7,
        // SessionLog { status: START = 1 }
        let mut start = Vec::new();
        encode_event(0.0, -1, What::SessionStart, &mut start);
        assert_eq!(
            &start[9..],
            &[0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x3a, 0x02, 0x08, 0x01]
        );
        let mut version = Vec::new();
        encode_event(0.0, 0, What::FileVersion(FILE_VERSION), &mut version);
        assert_eq!(&version[9..13], &[0x10, 0x00, 0x1a, 13]);
        assert_eq!(&version[13..], b"brain.Event:2");
    }

    /// The records of an event file: each one's data, CRCs checked.
    fn records(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            assert_eq!(
                u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()),
                masked_crc32c(&bytes[at..at + 8])
            );
            let data = &bytes[at + 12..at + 12 + len];
            let crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc32c(data));
            out.push(data.to_vec());
            at += 16 + len;
        }
        out
    }

    #[test]
    fn files_are_named_as_tensorflow_names_them_and_sort_in_writing_order() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(file_name(1_700_000_000, "node7"), "events.out.tfevents.1700000000.node7");
        assert_eq!(file_seconds("events.out.tfevents.1700000000.node7.example.org"), Some(1_700_000_000));
        assert_eq!(file_seconds("metrics.jsonl"), None);
        // an earlier invocation's file from the future: the new one sorts after it
        let later = dir.path().join(file_name(4_000_000_000, "elsewhere"));
        std::fs::write(&later, b"").unwrap();
        let mut a = EventWriter::create(dir.path()).unwrap();
        let b = EventWriter::create(dir.path()).unwrap();
        let name = |w: &EventWriter| w.path().file_name().unwrap().to_string_lossy().to_string();
        assert!(name(&a).starts_with("events.out.tfevents.4000000001."), "{}", name(&a));
        assert!(name(&b).starts_with("events.out.tfevents.4000000002."), "{}", name(&b));
        a.write_scalars(7, &[("loss/w1.00".into(), 2.25), ("lr".into(), 0.1)]).unwrap();
        a.write_scalars(8, &[]).unwrap();
        a.write_session_start(9).unwrap();
        let path = a.path().to_path_buf();
        a.close().unwrap();
        let recs = records(&std::fs::read(&path).unwrap());
        assert_eq!(recs.len(), 3, "the version, one scalar event, the start");
        assert!(recs[0].ends_with(b"\x1a\x0dbrain.Event:2"));
        assert_eq!(&recs[1][9..11], &[0x10, 7]);
        assert!(recs[1].windows(10).any(|w| w == b"loss/w1.00"));
        assert_eq!(&recs[2][9..], &[0x10, 9, 0x3a, 0x02, 0x08, 0x01]);
        // wall time is now, in seconds
        let t = f64::from_le_bytes(recs[1][1..9].try_into().unwrap());
        assert!((t - wall_time()).abs() < 60.0, "{t}");
        // an unwritable location names the folder
        let e = EventWriter::create(&dir.path().join("missing")).err().unwrap().to_string();
        assert!(e.contains("missing"), "{e}");
    }
}
