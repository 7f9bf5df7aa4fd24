//! Problem types (RFC 9457): one kind per error, each with a stable `type`, status and title.

/// Every error the API can answer with. `docs/CONTRACT-NOTES.md` lists which are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    IdempotencyKeyMissing,
    IdempotencyKeyInvalid,
    InvalidRequest,
    UnsupportedMediaType,
    BodyTooLarge,
    RequestTimeout,
    IdempotencyKeyReused,
    IdempotencyKeyInFlight,
    Overloaded,
    StorageUnavailable,
    InsufficientFunds,
    AccountNotFound,
    CurrencyMismatch,
    AccountExists,
    BalanceOverflow,
    ChargeNotFound,
    DeadLetterNotFound,
    RedriveRefused,
    OriginNotFound,
    Unauthorized,
    Forbidden,
    RateLimited,
    TenantExists,
    TenantNotFound,
    TokenNotFound,
    NotFound,
    MethodNotAllowed,
    Internal,
    ChargeStateInvalid,
    CaptureExceedsAuthorization,
    RefundExceedsCharge,
    RefundNotFound,
    TransferNotFound,
}

impl ProblemKind {
    /// Every kind, for the contract test that holds the OpenAPI document to them.
    pub const ALL: [ProblemKind; 33] = {
        use ProblemKind::*;
        [
            IdempotencyKeyMissing,
            IdempotencyKeyInvalid,
            InvalidRequest,
            UnsupportedMediaType,
            BodyTooLarge,
            RequestTimeout,
            IdempotencyKeyReused,
            IdempotencyKeyInFlight,
            Overloaded,
            StorageUnavailable,
            InsufficientFunds,
            AccountNotFound,
            CurrencyMismatch,
            AccountExists,
            BalanceOverflow,
            ChargeNotFound,
            DeadLetterNotFound,
            RedriveRefused,
            OriginNotFound,
            Unauthorized,
            Forbidden,
            RateLimited,
            TenantExists,
            TenantNotFound,
            TokenNotFound,
            NotFound,
            MethodNotAllowed,
            Internal,
            ChargeStateInvalid,
            CaptureExceedsAuthorization,
            RefundExceedsCharge,
            RefundNotFound,
            TransferNotFound,
        ]
    };

    /// `(status, slug, title)`; `type` is `/problems/<slug>`.
    fn parts(self) -> (u16, &'static str, &'static str) {
        use ProblemKind::*;
        match self {
            IdempotencyKeyMissing => (
                400,
                "idempotency-key-missing",
                "Idempotency-Key header missing",
            ),
            IdempotencyKeyInvalid => (
                400,
                "idempotency-key-invalid",
                "Idempotency-Key header malformed",
            ),
            InvalidRequest => (400, "invalid-request", "Invalid request"),
            UnsupportedMediaType => (415, "unsupported-media-type", "Unsupported media type"),
            BodyTooLarge => (413, "body-too-large", "Request body too large"),
            RequestTimeout => (408, "request-timeout", "Request body not received in time"),
            IdempotencyKeyReused => (
                422,
                "idempotency-key-reused",
                "Idempotency-Key reused with a different request",
            ),
            IdempotencyKeyInFlight => (
                409,
                "idempotency-key-in-flight",
                "A request with this Idempotency-Key is in progress",
            ),
            Overloaded => (503, "overloaded", "Server overloaded"),
            StorageUnavailable => (503, "storage-unavailable", "Storage unavailable"),
            InsufficientFunds => (402, "insufficient-funds", "Insufficient funds"),
            AccountNotFound => (404, "account-not-found", "Account not found"),
            CurrencyMismatch => (400, "currency-mismatch", "Currency mismatch"),
            AccountExists => (400, "account-exists", "Account already exists"),
            BalanceOverflow => (400, "balance-overflow", "Balance would overflow"),
            ChargeNotFound => (404, "charge-not-found", "Charge not found"),
            DeadLetterNotFound => (404, "dead-letter-not-found", "Dead letter not found"),
            RedriveRefused => (
                422,
                "redrive-refused",
                "The dead letter's event still cannot be applied",
            ),
            OriginNotFound => (404, "origin-not-found", "No events from this node"),
            Unauthorized => (401, "unauthorized", "Authentication required"),
            Forbidden => (403, "forbidden", "Not allowed for this token's role"),
            RateLimited => (429, "rate-limited", "Too many requests for this token"),
            TenantExists => (400, "tenant-exists", "Tenant already exists"),
            TenantNotFound => (404, "tenant-not-found", "Tenant not found"),
            TokenNotFound => (404, "token-not-found", "Token not found"),
            NotFound => (404, "not-found", "Not found"),
            MethodNotAllowed => (405, "method-not-allowed", "Method not allowed"),
            Internal => (500, "internal", "Internal error"),
            ChargeStateInvalid => (
                400,
                "charge-state-invalid",
                "The charge's state does not allow this",
            ),
            CaptureExceedsAuthorization => (
                400,
                "capture-exceeds-authorization",
                "Capture exceeds the authorized amount",
            ),
            RefundExceedsCharge => (
                400,
                "refund-exceeds-charge",
                "Refund exceeds what is left to refund",
            ),
            RefundNotFound => (404, "refund-not-found", "Refund not found"),
            TransferNotFound => (404, "transfer-not-found", "Transfer not found"),
        }
    }

    pub fn status(self) -> u16 {
        self.parts().0
    }

    pub fn type_uri(self) -> String {
        format!("/problems/{}", self.parts().1)
    }

    pub fn title(self) -> &'static str {
        self.parts().2
    }

    /// Seconds a client should wait before retrying, for the kinds a retry can change.
    pub fn retry_after_seconds(self) -> Option<u32> {
        match self {
            ProblemKind::IdempotencyKeyInFlight | ProblemKind::Overloaded => Some(1),
            ProblemKind::StorageUnavailable => Some(5),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// Human-readable, specific to this occurrence; never internals (paths, stack traces).
    pub detail: String,
    /// For 405: the methods the route accepts.
    pub allow: Option<&'static str>,
}

impl Problem {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            detail: detail.into(),
            allow: None,
        }
    }
}
