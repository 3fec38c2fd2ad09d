//! Errors of CSI calls. Each knows its gRPC code (if any), whether it is
//! final in the sense of the create path (spec C.8), and its metric label.

use tonic::Code;

/// The outcome of a failed CSI interaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsiError {
    /// The driver (or the gRPC stack, e.g. a deadline) answered with a status.
    #[error("rpc error: code = {} desc = {message}", go_code_name(*code))]
    Status {
        /// The gRPC status code.
        code: Code,
        /// The status message as the driver sent it.
        message: String,
    },
    /// The driver answered OK but the reply is unusable (for example a
    /// CreateSnapshot reply without `snapshot`). Not a gRPC status, so it is
    /// non-final: the backend may hold a snapshot and the create is retried.
    #[error("invalid reply from CSI driver: {0}")]
    InvalidReply(String),
    /// The call could not be made (socket gone, connection refused, …).
    #[error("{0}")]
    Transport(String),
}

impl CsiError {
    /// Builds a status error.
    pub fn status(code: Code, message: impl Into<String>) -> Self {
        CsiError::Status {
            code,
            message: message.into(),
        }
    }

    /// The gRPC code, if this error is a gRPC status.
    pub fn code(&self) -> Option<Code> {
        match self {
            CsiError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the operation is known to have stopped on the storage side
    /// (spec C.8). Non-final errors keep the being-created annotation so the
    /// content cannot be deleted while the driver may still cut a snapshot.
    pub fn is_final(&self) -> bool {
        match self {
            CsiError::Status { code, .. } => is_final_code(*code),
            CsiError::InvalidReply(_) | CsiError::Transport(_) => false,
        }
    }

    /// Value of the `grpc_status_code` metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            CsiError::Status { code, .. } => go_code_name(*code),
            _ => "unknown-non-grpc",
        }
    }
}

impl From<tonic::Status> for CsiError {
    fn from(s: tonic::Status) -> Self {
        CsiError::Status {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

/// Final/non-final classification of a gRPC code for creates (spec C.8).
pub fn is_final_code(code: Code) -> bool {
    !matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Unavailable
            | Code::ResourceExhausted
            | Code::Aborted
    )
}

/// The Go name of a gRPC code, as used in upstream's error text and metrics.
pub fn go_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}
