//! Recording every received advert to a file in the replay format (`ble.record_file`).
//!
//! A dedicated thread does the file IO so the presence loop never blocks on the disk; the
//! channel to it is bounded and a full channel drops the advert (counted), because a recording
//! must never slow the engine down. The file stops growing at `ble.record_max_mib`.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use ble_scanner::{Advertisement, replay};

/// Adverts that may wait for the recording thread.
const RECORD_QUEUE: usize = 8192;

/// A handle to the recording thread; dropping it finishes the file.
pub struct Recorder {
    tx: Option<SyncSender<Advertisement>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dropped: u64,
}

impl Recorder {
    /// Opens (appends to) `path` and starts the thread.
    pub fn start(path: PathBuf, max_bytes: u64) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let already = file.metadata()?.len();
        let (tx, rx) = sync_channel(RECORD_QUEUE);
        let thread = std::thread::Builder::new()
            .name("ble-recorder".into())
            .spawn(move || write_all(rx, BufWriter::new(file), already, max_bytes, path))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            dropped: 0,
        })
    }

    /// Queues an advert; drops it if the recorder is behind or has stopped.
    pub fn record(&mut self, advert: &Advertisement) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(advert.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped += 1,
            Err(TrySendError::Disconnected(_)) => self.tx = None,
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if self.dropped > 0 {
            tracing::warn!(
                dropped = self.dropped,
                "the BLE recording missed adverts (the disk was too slow)"
            );
        }
    }
}

fn write_all(
    rx: Receiver<Advertisement>,
    mut out: BufWriter<std::fs::File>,
    mut written: u64,
    max: u64,
    path: PathBuf,
) {
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(advert) => {
                let mut line = Vec::with_capacity(256);
                if replay::write(&mut line, &advert).is_err() {
                    continue;
                }
                if written + line.len() as u64 > max {
                    tracing::warn!(file = %path.display(), max_bytes = max, "BLE recording reached its size limit; stopped");
                    break;
                }
                if let Err(e) = out.write_all(&line) {
                    tracing::error!(file = %path.display(), error = %e, "BLE recording failed; stopped");
                    break;
                }
                written += line.len() as u64;
            }
            // Flush at least once a second, so a crash loses at most a second of recording.
            Err(RecvTimeoutError::Timeout) => {
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = out.flush();
}
