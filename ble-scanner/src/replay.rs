//! The replay recording format: JSON lines, one advertisement per line, oldest first.
//!
//! ```json
//! {"at_ms":1795357333000,"scanner":"hci0","address":"C0:11:22:33:44:55","rssi":-61,
//!  "manufacturer_data":{"004c":"0215f782…c5"},"service_data":{"0000feaa-…":"20000bb8…"}}
//! ```
//!
//! Company ids are 4 hex digits; data is hex. `venued` can record any source to this format, and
//! the replay source plays it back (trace tests, demos, field diagnosis). A bad line is an error
//! with its line number; the reader goes on with the next line.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::advert::Advertisement;

/// Longest line accepted; a recorded advert is a few hundred bytes.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// A line that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("replay line {line}: {reason}")]
pub struct ReplayError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub reason: LineError,
}

/// What is wrong with one replay line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// Longer than the reader accepts.
    #[error("longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] std::io::Error),
    /// Not a JSON advert line.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A manufacturer data key is not a company id.
    #[error("company id `{0}` is not 4 hex digits")]
    CompanyId(String),
    /// Advert data is not hex.
    #[error("{what} of {key}: {source}")]
    Hex {
        /// Manufacturer or service data.
        what: &'static str,
        /// Its company id or service UUID.
        key: String,
        /// The decoder's reason.
        source: hex::FromHexError,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    at_ms: u64,
    scanner: String,
    address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rssi: Option<i16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tx_power: Option<i16>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    manufacturer_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    service_data: BTreeMap<Uuid, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local_name: Option<String>,
}

/// Writes one advertisement as a line.
pub fn write<W: Write>(out: &mut W, advert: &Advertisement) -> std::io::Result<()> {
    let line = Line {
        at_ms: advert.at_ms,
        scanner: advert.scanner.clone(),
        address: advert.address.clone(),
        rssi: advert.rssi,
        tx_power: advert.tx_power,
        manufacturer_data: advert
            .manufacturer_data
            .iter()
            .map(|(k, v)| (format!("{k:04x}"), hex::encode(v)))
            .collect(),
        service_data: advert
            .service_data
            .iter()
            .map(|(k, v)| (*k, hex::encode(v)))
            .collect(),
        local_name: advert.local_name.clone(),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

/// Reads a recording line by line.
pub struct Reader<R> {
    input: R,
    line: usize,
    buf: String,
}

impl<R: BufRead> Reader<R> {
    /// A reader over `input`.
    pub fn new(input: R) -> Self {
        Self {
            input,
            line: 0,
            buf: String::new(),
        }
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<Advertisement, ReplayError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            self.line += 1;
            let line = self.line;
            let err = |reason: LineError| Some(Err(ReplayError { line, reason }));
            // Bounded read: a runaway line must not grow the buffer without limit.
            let mut limited = <&mut R as Read>::take(&mut self.input, MAX_LINE_BYTES as u64 + 1);
            match limited.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(n) if n > MAX_LINE_BYTES => {
                    // Skip the rest of the oversized line before reporting it.
                    let mut rest = Vec::new();
                    let _ = self.input.read_until(b'\n', &mut rest);
                    return err(LineError::TooLong);
                }
                Ok(_) => {}
                Err(e) => return err(e.into()),
            }
            if self.buf.trim().is_empty() {
                continue;
            }
            return Some(decode(&self.buf).map_err(|reason| ReplayError { line, reason }));
        }
    }
}

fn decode(text: &str) -> Result<Advertisement, LineError> {
    let line: Line = serde_json::from_str(text)?;
    let mut manufacturer_data = BTreeMap::new();
    for (company, data) in line.manufacturer_data {
        let id = u16::from_str_radix(&company, 16)
            .ok()
            .filter(|_| company.len() == 4)
            .ok_or_else(|| LineError::CompanyId(company.clone()))?;
        let bytes = hex::decode(&data).map_err(|source| LineError::Hex {
            what: "manufacturer data",
            key: company.clone(),
            source,
        })?;
        manufacturer_data.insert(id, bytes);
    }
    let mut service_data = BTreeMap::new();
    for (uuid, data) in line.service_data {
        let bytes = hex::decode(&data).map_err(|source| LineError::Hex {
            what: "service data",
            key: uuid.to_string(),
            source,
        })?;
        service_data.insert(uuid, bytes);
    }
    Ok(Advertisement {
        scanner: line.scanner,
        address: line.address,
        rssi: line.rssi,
        tx_power: line.tx_power,
        manufacturer_data,
        service_data,
        local_name: line.local_name,
        at_ms: line.at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advert::{APPLE_COMPANY_ID, EDDYSTONE_SERVICE};

    fn sample(n: u64) -> Advertisement {
        let mut a = Advertisement {
            scanner: "hci0".into(),
            address: format!("C0:11:22:33:44:{n:02X}"),
            rssi: Some(-60 - n as i16),
            tx_power: Some(-12),
            local_name: Some("badge".into()),
            at_ms: 1_000 * n,
            ..Advertisement::default()
        };
        a.manufacturer_data
            .insert(APPLE_COMPANY_ID, vec![0x02, 0x15, n as u8]);
        a.service_data.insert(EDDYSTONE_SERVICE, vec![0x20, 0x00]);
        a
    }

    #[test]
    fn a_recording_reads_back_identical() {
        let adverts: Vec<Advertisement> = (0..5).map(sample).collect();
        let mut file = Vec::new();
        for a in &adverts {
            write(&mut file, a).expect("writes");
        }
        let back: Vec<Advertisement> = Reader::new(file.as_slice())
            .collect::<Result<_, _>>()
            .expect("reads");
        assert_eq!(back, adverts);
    }

    #[test]
    fn bad_lines_are_reported_with_their_number_and_skipped() {
        let mut file = Vec::new();
        write(&mut file, &sample(1)).expect("writes");
        file.extend(b"not json\n\n");
        file.extend(br#"{"at_ms":1,"scanner":"s","address":"a","manufacturer_data":{"4c":"00"}}"#);
        file.push(b'\n');
        file.extend(br#"{"at_ms":1,"scanner":"s","address":"a","colour":"red"}"#);
        file.push(b'\n');
        file.extend(vec![b'x'; MAX_LINE_BYTES + 10]);
        file.push(b'\n');
        write(&mut file, &sample(2)).expect("writes");
        let results: Vec<_> = Reader::new(file.as_slice()).collect();
        let lines: Vec<Result<u64, (usize, String)>> = results
            .into_iter()
            .map(|r| {
                r.map(|a| a.at_ms)
                    .map_err(|e| (e.line, e.reason.to_string()))
            })
            .collect();
        assert_eq!(lines.len(), 6, "{lines:?}");
        assert_eq!(lines[0], Ok(1_000));
        assert!(matches!(&lines[1], Err((2, _))));
        assert!(
            matches!(&lines[2], Err((4, r)) if r.contains("4 hex digits")),
            "{:?}",
            lines[2]
        );
        assert!(
            matches!(&lines[3], Err((5, r)) if r.contains("colour")),
            "{:?}",
            lines[3]
        );
        assert!(
            matches!(&lines[4], Err((6, r)) if r.contains("longer than")),
            "{:?}",
            lines[4]
        );
        assert_eq!(lines[5], Ok(2_000));
    }
}
