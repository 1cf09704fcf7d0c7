//! The IPP operations the print queue needs, over HTTP: Print-Job, Get-Job-Attributes, Get-Jobs
//! and Get-Printer-Attributes. The `ipp` crate encodes and parses the messages; the exchange is
//! the daemon's own `reqwest` client, with a timeout on every request and a cap on every answer.

use std::io::Cursor;
use std::time::Duration;

use ipp::attribute::{IppAttribute, IppAttributes};
use ipp::model::{DelimiterTag, IppVersion, Operation, StatusCode};
use ipp::parser::IppParser;
use ipp::reader::IppReader;
use ipp::request::IppRequestResponse;
use ipp::value::{IppKeyword, IppMimeMediaType, IppName, IppValue};

/// The largest answer read from a printer; attribute answers are a few kilobytes.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// The name venued submits jobs under (`requesting-user-name`).
pub const USER_NAME: &str = "venued";

/// Why an IPP exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IppError {
    /// Not reachable, or no answer in time: the printer is off or off the network.
    #[error("printer unreachable: {0}")]
    Unreachable(String),
    /// The printer answered with an IPP error status.
    #[error("printer refused: {status}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Refused {
        /// The status keyword, e.g. `client-error-document-format-not-supported`.
        status: String,
        /// Its `status-message`, when it gave one.
        message: Option<String>,
        /// Whether trying again later can succeed (busy, not accepting jobs, temporary error).
        transient: bool,
    },
    /// The answer was not IPP.
    #[error("not an IPP answer: {0}")]
    Garbled(String),
}

impl IppError {
    /// Whether the printer refused only because it is busy with other jobs.
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Refused { status, .. } if status == "server-error-busy")
    }
}

/// A job's state as the printer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// RFC 8011 `job-state`: 3 pending, 4 held, 5 processing, 6 stopped, 7 canceled, 8 aborted,
    /// 9 completed.
    pub state: i32,
    /// `job-state-reasons`.
    pub reasons: Vec<String>,
    /// `job-printer-state-message` or `job-state-message`, when given.
    pub message: Option<String>,
}

/// A printer's state as it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrinterStatus {
    /// `printer-state`: 3 idle, 4 processing, 5 stopped.
    pub state: i32,
    /// `printer-state-reasons` (`none` left out).
    pub reasons: Vec<String>,
    /// `printer-state-message`, when given.
    pub message: Option<String>,
    /// Marker supplies (`marker-names` with `marker-levels`, percent; -1 unknown).
    pub markers: Vec<(String, i32)>,
    /// `printer-is-accepting-jobs`.
    pub accepting: bool,
}

/// A client for one printer address.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The printer's `ipp://` or `ipps://` URI, as given.
    printer_uri: String,
    /// The same as an `http://` or `https://` URL.
    url: String,
}

impl Client {
    /// A client for `printer_uri` (checked by the registry), each request limited to `timeout`.
    ///
    /// `ipps://`: printers present self-signed certificates, so the certificate is not checked
    /// against public roots (as CUPS on first use); the channel is encrypted, and the address is
    /// the one staff registered.
    pub fn new(printer_uri: &str, timeout: Duration) -> Result<Self, IppError> {
        let url = http_url(printer_uri)?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .danger_accept_invalid_certs(url.starts_with("https:"))
            .build()
            .map_err(|e| IppError::Unreachable(e.to_string()))?;
        Ok(Self {
            http,
            printer_uri: printer_uri.to_string(),
            url,
        })
    }

    /// Print-Job: submits `pdf` as `job_name`; the printer's job id.
    pub async fn print_pdf(&self, job_name: &str, pdf: Vec<u8>) -> Result<i32, IppError> {
        let mut request = self.request(Operation::PrintJob)?;
        let attrs = request.attributes_mut();
        add(
            attrs,
            "requesting-user-name",
            IppValue::NameWithoutLanguage(name(USER_NAME)?),
        );
        add(
            attrs,
            "job-name",
            IppValue::NameWithoutLanguage(name(job_name)?),
        );
        add(
            attrs,
            "document-format",
            IppValue::MimeMediaType(IppMimeMediaType::new("application/pdf").map_err(garbled)?),
        );
        let answer = self.exchange(request, pdf).await?;
        let job_id = first(&answer, DelimiterTag::JobAttributes, "job-id")
            .and_then(integer)
            .ok_or_else(|| IppError::Garbled("Print-Job answer without `job-id`".into()))?;
        Ok(job_id)
    }

    /// Get-Job-Attributes of the printer's job `job_id`.
    pub async fn job(&self, job_id: i32) -> Result<JobStatus, IppError> {
        let mut request = self.request(Operation::GetJobAttributes)?;
        let attrs = request.attributes_mut();
        add(attrs, "job-id", IppValue::Integer(job_id));
        add(
            attrs,
            "requesting-user-name",
            IppValue::NameWithoutLanguage(name(USER_NAME)?),
        );
        let answer = self.exchange(request, Vec::new()).await?;
        Ok(JobStatus {
            state: first(&answer, DelimiterTag::JobAttributes, "job-state")
                .and_then(integer)
                .unwrap_or(0),
            reasons: keywords(first(
                &answer,
                DelimiterTag::JobAttributes,
                "job-state-reasons",
            )),
            message: first(
                &answer,
                DelimiterTag::JobAttributes,
                "job-printer-state-message",
            )
            .or_else(|| first(&answer, DelimiterTag::JobAttributes, "job-state-message"))
            .and_then(text)
            .filter(|m| !m.is_empty()),
        })
    }

    /// Get-Jobs (not completed and completed): the printer's job id of the job named
    /// `job_name`, if it has one. Used after a crash to learn whether a job was handed over.
    pub async fn find_job(&self, job_name: &str) -> Result<Option<i32>, IppError> {
        for which in ["not-completed", "completed"] {
            let mut request = self.request(Operation::GetJobs)?;
            let attrs = request.attributes_mut();
            add(
                attrs,
                "requesting-user-name",
                IppValue::NameWithoutLanguage(name(USER_NAME)?),
            );
            add(attrs, "which-jobs", IppValue::Keyword(keyword(which)?));
            add(
                attrs,
                "requested-attributes",
                IppValue::Array(vec![
                    IppValue::Keyword(keyword("job-id")?),
                    IppValue::Keyword(keyword("job-name")?),
                ]),
            );
            let answer = self.exchange(request, Vec::new()).await?;
            for group in answer.attributes().groups_of(DelimiterTag::JobAttributes) {
                let named = group.get("job-name").and_then(text);
                if named.as_deref() == Some(job_name)
                    && let Some(id) = group.get("job-id").and_then(integer)
                {
                    return Ok(Some(id));
                }
            }
        }
        Ok(None)
    }

    /// Get-Printer-Attributes: state, reasons, supplies.
    pub async fn printer(&self) -> Result<PrinterStatus, IppError> {
        let mut request = self.request(Operation::GetPrinterAttributes)?;
        let wanted = [
            "printer-state",
            "printer-state-reasons",
            "printer-state-message",
            "printer-is-accepting-jobs",
            "marker-names",
            "marker-levels",
        ];
        let wanted = wanted
            .iter()
            .map(|k| keyword(k).map(IppValue::Keyword))
            .collect::<Result<Vec<_>, _>>()?;
        add(
            request.attributes_mut(),
            "requested-attributes",
            IppValue::Array(wanted),
        );
        let answer = self.exchange(request, Vec::new()).await?;
        let get = |name| first(&answer, DelimiterTag::PrinterAttributes, name);
        let names = keywords_or_names(get("marker-names"));
        let levels: Vec<i32> = match get("marker-levels").map(IppAttribute::value) {
            Some(IppValue::Array(values)) => values.iter().filter_map(value_integer).collect(),
            Some(v) => value_integer(v).into_iter().collect(),
            None => Vec::new(),
        };
        Ok(PrinterStatus {
            state: get("printer-state").and_then(integer).unwrap_or(0),
            reasons: keywords(get("printer-state-reasons"))
                .into_iter()
                .filter(|r| r != "none")
                .collect(),
            message: get("printer-state-message")
                .and_then(text)
                .filter(|m| !m.is_empty()),
            markers: names.into_iter().zip(levels).collect(),
            accepting: !matches!(
                get("printer-is-accepting-jobs").map(IppAttribute::value),
                Some(IppValue::Boolean(false))
            ),
        })
    }

    fn request(&self, operation: Operation) -> Result<IppRequestResponse, IppError> {
        let uri = self
            .printer_uri
            .parse()
            .map_err(|e| IppError::Garbled(format!("printer address: {e}")))?;
        IppRequestResponse::new(IppVersion::v2_0(), operation, Some(uri)).map_err(garbled)
    }

    /// Posts `request` followed by `document`; the parsed answer, or the printer's refusal.
    async fn exchange(
        &self,
        request: IppRequestResponse,
        document: Vec<u8>,
    ) -> Result<IppRequestResponse, IppError> {
        let mut body = request.to_bytes().to_vec();
        body.extend_from_slice(&document);
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/ipp")
            .body(body)
            .send()
            .await
            .map_err(|e| IppError::Unreachable(sync_agent::error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(IppError::Refused {
                status: format!("HTTP {}", response.status()),
                message: None,
                transient: response.status().is_server_error(),
            });
        }
        let mut bytes = Vec::new();
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| IppError::Unreachable(sync_agent::error_chain(&e)))?
        {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(IppError::Garbled(format!(
                    "answer longer than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let answer = IppParser::new(IppReader::new(Cursor::new(bytes)))
            .parse()
            .map_err(garbled)?;
        let status = answer.header().status_code();
        if status.is_success() {
            return Ok(answer);
        }
        let message =
            first(&answer, DelimiterTag::OperationAttributes, "status-message").and_then(text);
        Err(IppError::Refused {
            status: status_keyword(status),
            message,
            transient: matches!(
                status,
                StatusCode::ServerErrorBusy
                    | StatusCode::ServerErrorServiceUnavailable
                    | StatusCode::ServerErrorNotAcceptingJobs
                    | StatusCode::ServerErrorTemporaryError
                    | StatusCode::ServerErrorDeviceError
                    | StatusCode::ClientErrorTimeout
            ),
        })
    }
}

/// `ipp://host[:631]/path` as `http://host:631/path`; `ipps://` as `https://` (IPP's port is
/// 631 for both).
pub fn http_url(printer_uri: &str) -> Result<String, IppError> {
    let mut url = reqwest::Url::parse(printer_uri)
        .map_err(|e| IppError::Garbled(format!("printer address `{printer_uri}`: {e}")))?;
    let scheme = match url.scheme() {
        "ipp" | "http" => "http",
        "ipps" | "https" => "https",
        other => {
            return Err(IppError::Garbled(format!(
                "printer address scheme `{other}` is not IPP"
            )));
        }
    };
    let port = url.port().unwrap_or(631);
    // `Url` keeps special-scheme rules, so the scheme is swapped in the text.
    let rest = url
        .as_str()
        .split_once("://")
        .map(|(_, r)| r.to_string())
        .unwrap_or_default();
    url = reqwest::Url::parse(&format!("{scheme}://{rest}"))
        .map_err(|e| IppError::Garbled(e.to_string()))?;
    let _ = url.set_port(Some(port));
    Ok(url.to_string())
}

/// The RFC 8011 keyword of a status code, e.g. `client-error-document-format-not-supported`.
fn status_keyword(status: StatusCode) -> String {
    let debug = format!("{status:?}");
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn add(attrs: &mut IppAttributes, name: &str, value: IppValue) {
    // Attribute names here are fixed keywords of RFC 8011, always short enough.
    if let Ok(name) = IppName::new(name) {
        attrs.add(
            DelimiterTag::OperationAttributes,
            IppAttribute::new(name, value),
        );
    }
}

fn name(s: &str) -> Result<IppName, IppError> {
    IppName::new(s).map_err(garbled)
}

fn keyword(s: &str) -> Result<IppKeyword, IppError> {
    IppKeyword::new(s).map_err(garbled)
}

fn garbled(e: impl std::fmt::Display) -> IppError {
    IppError::Garbled(e.to_string())
}

fn first<'a>(
    answer: &'a IppRequestResponse,
    tag: DelimiterTag,
    name: &str,
) -> Option<&'a IppAttribute> {
    answer.attributes().groups_of(tag).find_map(|g| g.get(name))
}

fn integer(attr: &IppAttribute) -> Option<i32> {
    value_integer(attr.value())
}

fn value_integer(value: &IppValue) -> Option<i32> {
    match value {
        IppValue::Integer(v) | IppValue::Enum(v) => Some(*v),
        _ => None,
    }
}

fn text(attr: &IppAttribute) -> Option<String> {
    match attr.value() {
        IppValue::TextWithoutLanguage(v) => Some(v.to_string()),
        IppValue::NameWithoutLanguage(v) => Some(v.as_str().to_string()),
        IppValue::TextWithLanguage { text, .. } => Some(text.to_string()),
        IppValue::NameWithLanguage { name, .. } => Some(name.as_str().to_string()),
        IppValue::Keyword(v) => Some(v.as_str().to_string()),
        _ => None,
    }
}

fn keywords(attr: Option<&IppAttribute>) -> Vec<String> {
    match attr.map(IppAttribute::value) {
        Some(IppValue::Array(values)) => values
            .iter()
            .filter_map(|v| match v {
                IppValue::Keyword(k) => Some(k.as_str().to_string()),
                _ => None,
            })
            .collect(),
        Some(IppValue::Keyword(k)) => vec![k.as_str().to_string()],
        _ => Vec::new(),
    }
}

fn keywords_or_names(attr: Option<&IppAttribute>) -> Vec<String> {
    let one = |v: &IppValue| match v {
        IppValue::Keyword(k) => Some(k.as_str().to_string()),
        IppValue::NameWithoutLanguage(n) => Some(n.as_str().to_string()),
        IppValue::NameWithLanguage { name, .. } => Some(name.as_str().to_string()),
        _ => None,
    };
    match attr.map(IppAttribute::value) {
        Some(IppValue::Array(values)) => values.iter().filter_map(one).collect(),
        Some(v) => one(v).into_iter().collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_addresses_become_http_urls_on_ipps_port() {
        assert_eq!(
            http_url("ipp://10.0.0.5/ipp/print").ok(),
            Some("http://10.0.0.5:631/ipp/print".to_string())
        );
        assert_eq!(
            http_url("ipps://printer.local:8631/ipp/print").ok(),
            Some("https://printer.local:8631/ipp/print".to_string())
        );
        assert!(http_url("tcp://10.0.0.5:9100").is_err());
    }

    #[test]
    fn status_codes_read_as_their_keywords() {
        assert_eq!(
            status_keyword(StatusCode::ClientErrorDocumentFormatNotSupported),
            "client-error-document-format-not-supported"
        );
    }
}
