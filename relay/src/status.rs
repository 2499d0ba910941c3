//! The `metav1.Status` document a server sends on the status channel when the process ends, and
//! that Kubernetes servers put in the body of a refused request.
//!
//! A non-zero exit code travels as a cause whose *type* field is serialised as `"reason"`:
//! `{"reason":"ExitCode","message":"42"}`. Clients parse it as an 8-bit unsigned number.

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

/// The `reason` of a Status reporting a non-zero exit code.
pub const REASON_NON_ZERO_EXIT: &str = "NonZeroExitCode";
/// The `reason` (really the type) of the cause that carries the exit code.
pub const CAUSE_EXIT_CODE: &str = "ExitCode";

/// How a remote command ended, as carried by the status channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// The process exited with this code (0 is success).
    Code(u8),
    /// The process ended with this (non-zero) code because of something the user should be
    /// told: its container was killed, its target went away, the session was idle too long.
    /// Sent as a non-zero exit (kubectl sees the code) with `reason` as a second cause.
    Ended {
        /// The exit code.
        code: u8,
        /// Machine-readable, e.g. `TargetGone`, `Killed`.
        reason: String,
        /// What happened, for a human.
        message: String,
    },
    /// The server could not run or follow the process.
    Failure {
        /// Machine-readable reason, e.g. `InternalError`.
        reason: String,
        /// What went wrong, for a human.
        message: String,
    },
}

impl ExitStatus {
    /// The `metav1.Status` JSON for this outcome, in the exact shape the kubelet sends.
    pub fn to_json(&self) -> Vec<u8> {
        let doc = match self {
            ExitStatus::Code(0) => Status::success(),
            ExitStatus::Code(code) => Status {
                message: Some(format!(
                    "command terminated with non-zero exit code: {code}"
                )),
                reason: Some(REASON_NON_ZERO_EXIT.into()),
                details: Some(StatusDetails {
                    causes: vec![StatusCause {
                        reason: Some(CAUSE_EXIT_CODE.into()),
                        message: Some(code.to_string()),
                        field: None,
                    }],
                    ..StatusDetails::default()
                }),
                ..Status::failure()
            },
            ExitStatus::Ended {
                code,
                reason,
                message,
            } => Status {
                message: Some(message.clone()),
                reason: Some(REASON_NON_ZERO_EXIT.into()),
                details: Some(StatusDetails {
                    causes: vec![
                        StatusCause {
                            reason: Some(CAUSE_EXIT_CODE.into()),
                            message: Some(code.to_string()),
                            field: None,
                        },
                        StatusCause {
                            reason: Some(reason.clone()),
                            message: Some(message.clone()),
                            field: None,
                        },
                    ],
                    ..StatusDetails::default()
                }),
                ..Status::failure()
            },
            ExitStatus::Failure { reason, message } => Status {
                message: Some(message.clone()),
                reason: Some(reason.clone()),
                ..Status::failure()
            },
        };
        serde_json::to_vec(&doc).expect("a Status always serialises")
    }

    /// Reads a status document as a client does.
    pub fn from_json(json: &[u8]) -> Result<ExitStatus, ProtocolError> {
        let doc: Status =
            serde_json::from_slice(json).map_err(|e| ProtocolError::Status(e.to_string()))?;
        match doc.status.as_deref() {
            Some("Success") => return Ok(ExitStatus::Code(0)),
            Some("Failure") => {}
            other => {
                return Err(ProtocolError::Status(format!(
                    "status is {other:?}, expected \"Success\" or \"Failure\""
                )));
            }
        }
        let message = doc.message.unwrap_or_default();
        let reason = doc.reason.unwrap_or_default();
        if reason == REASON_NON_ZERO_EXIT {
            let cause = doc
                .details
                .iter()
                .flat_map(|d| &d.causes)
                .find(|c| c.reason.as_deref() == Some(CAUSE_EXIT_CODE));
            let Some(cause) = cause else {
                return Err(ProtocolError::Status(format!(
                    "{REASON_NON_ZERO_EXIT} without an {CAUSE_EXIT_CODE} cause"
                )));
            };
            let text = cause.message.as_deref().unwrap_or_default();
            let code = text.parse::<u8>().map_err(|_| {
                ProtocolError::Status(format!("exit code {text:?} is not a number in 0..=255"))
            })?;
            let why = doc
                .details
                .iter()
                .flat_map(|d| &d.causes)
                .find(|c| c.reason.as_deref() != Some(CAUSE_EXIT_CODE));
            return Ok(match why {
                Some(why) => ExitStatus::Ended {
                    code,
                    reason: why.reason.clone().unwrap_or_default(),
                    message,
                },
                None => ExitStatus::Code(code),
            });
        }
        Ok(ExitStatus::Failure { reason, message })
    }
}

/// `metav1.Status`: the fields Kubernetes clients read. Unset fields are omitted, as Go does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// `"Status"` in API responses; absent on the status channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `"v1"` in API responses; absent on the status channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Always an (empty) object.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// `"Success"` or `"Failure"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// For a human.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Machine-readable, e.g. `NotFound`, `BadRequest`, `NonZeroExitCode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// More about the object concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    /// The HTTP status code, in API responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
}

impl Status {
    /// `{"metadata":{},"status":"Success"}`.
    pub fn success() -> Status {
        Status {
            status: Some("Success".into()),
            ..Status::default()
        }
    }

    /// A bare failure to fill in.
    pub fn failure() -> Status {
        Status {
            status: Some("Failure".into()),
            ..Status::default()
        }
    }

    /// The body of a refused HTTP request with `code`, its reason taken from the code's name
    /// (`404` -> `NotFound`).
    pub fn for_http(
        code: tokio_tungstenite::tungstenite::http::StatusCode,
        message: &str,
    ) -> Status {
        let reason = code
            .canonical_reason()
            .unwrap_or("Failure")
            .replace(' ', "");
        Status::http_error(code.as_u16(), &reason, message)
    }

    /// The body of a refused HTTP request, as the apiserver writes it.
    pub fn http_error(code: u16, reason: &str, message: impl Into<String>) -> Status {
        Status {
            kind: Some("Status".into()),
            api_version: Some("v1".into()),
            message: Some(message.into()),
            reason: Some(reason.into()),
            code: Some(code),
            ..Status::failure()
        }
    }
}

/// `metav1.StatusDetails`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDetails {
    /// The object's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The object's kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Individual causes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

/// `metav1.StatusCause`. Its Go field `Type` is serialised as `"reason"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCause {
    /// The cause's type, e.g. `ExitCode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `ExitCode`: the code in decimal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The field concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
