//! The one error type of the protocol library: each variant names what was malformed.

/// What went wrong while reading, writing or talking the protocol.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("truncated input: {what} needs more bytes than remain")]
    Truncated { what: &'static str },
    #[error("malformed VarInt: more than {max_bytes} bytes")]
    VarIntTooLong { max_bytes: usize },
    #[error("negative length {length} for {what}")]
    NegativeLength { what: &'static str, length: i32 },
    #[error("packet of {length_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    PacketTooLarge { length_bytes: usize, max_bytes: usize },
    #[error("empty packet: a packet needs at least its id")]
    EmptyPacket,
    #[error("string {what} of {length} units exceeds the limit of {max}")]
    StringTooLong {
        what: &'static str,
        length: usize,
        max: usize,
    },
    #[error("string {what} is not valid {encoding}")]
    InvalidText { what: &'static str, encoding: &'static str },
    #[error("unexpected packet id {id:#04x} in {stage}")]
    UnexpectedPacket { stage: &'static str, id: i32 },
    #[error("unknown handshake next state {0} (expected 1 status, 2 login or 3 transfer)")]
    BadNextState(i32),
    #[error("{what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("status JSON is malformed: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{what} timed out after {timeout_ms} ms")]
    Timeout { what: &'static str, timeout_ms: u64 },
    #[error("the connection closed during {what}")]
    Closed { what: &'static str },
    #[error("RCON authentication refused (wrong password)")]
    RconAuthRefused,
    #[error("RCON response id {got} does not match request id {expected}")]
    RconIdMismatch { expected: i32, got: i32 },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl ProtoError {
    /// Maps an I/O error from a read: an unexpected end of file is [`ProtoError::Closed`].
    pub(crate) fn from_read(error: std::io::Error, what: &'static str) -> Self {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtoError::Closed { what }
        } else {
            ProtoError::Io(error)
        }
    }
}
