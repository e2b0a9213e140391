//! The one place a refusal of the fold ([`Rejection`]) becomes a gRPC
//! [`Status`]: its cause picks the code, its words are the message.
//!
//! | cause | code |
//! |---|---|
//! | `NotRegistered` (a key no one registered) | `UNAUTHENTICATED` |
//! | `Revoked` (a revoked key) | `PERMISSION_DENIED` |
//! | `NotAllowed` (a key that may not sign this) | `PERMISSION_DENIED` |
//! | `Stale` (an expired or overtaken proposal, action or attestation) | `FAILED_PRECONDITION` |
//! | `DuplicateApproval` (one admin approving twice) | `ALREADY_EXISTS` |
//! | `AlreadyRecorded` | `ALREADY_EXISTS` |
//! | `BadSignature` | `INVALID_ARGUMENT` |
//! | `Malformed` | `INVALID_ARGUMENT` |
//! | `Precondition` (a rule the state sets) | `FAILED_PRECONDITION` |
//! | `NotFound` (no such customer, deployment, case, proposal ...) | `NOT_FOUND` |
//! | `Unavailable` (this server cannot fold it now) | `UNAVAILABLE` |

use covenant_core::state::Rejection;
use tonic::{Code, Status};

/// The gRPC code a refusal is answered with.
pub fn code(rejection: &Rejection) -> Code {
    match rejection {
        Rejection::NotRegistered(_) => Code::Unauthenticated,
        Rejection::Revoked(_) | Rejection::NotAllowed(_) => Code::PermissionDenied,
        Rejection::Stale(_) | Rejection::Precondition(_) => Code::FailedPrecondition,
        Rejection::DuplicateApproval(_) | Rejection::AlreadyRecorded(_) => Code::AlreadyExists,
        Rejection::BadSignature(_) | Rejection::Malformed(_) => Code::InvalidArgument,
        Rejection::NotFound(_) => Code::NotFound,
        Rejection::Unavailable(_) => Code::Unavailable,
        // `Rejection` is non-exhaustive: a cause added in core is answered
        // as every refusal was before causes, until it is mapped here.
        _ => Code::InvalidArgument,
    }
}

/// The gRPC status of a refusal: its cause's code, its words.
pub fn status(rejection: Rejection) -> Status {
    Status::new(code(&rejection), rejection.message())
}
