//! The read-only host capabilities (`customers`, `interactions`, `loyalty`,
//! `catalog`), `outbound-http` and `outbound-smtp`, with SDK types and
//! `Result`s.
//!
//! A plugin imports (and so needs granted in its manifest) only the
//! capabilities whose functions it actually calls: unused ones are dropped
//! from the component. Natively (plugin unit tests) there is no host: the
//! lookups answer `HostError::Unavailable`, and `http::send` and
//! `smtp::send` go to the handlers a test installs in [`crate::testing`].

#[cfg(not(target_arch = "wasm32"))]
use crate::types::HostError;

/// One page of a paged listing; pass `next_cursor` back for the next page
/// (`None` on the last one).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[cfg(not(target_arch = "wasm32"))]
fn no_host<T>() -> Result<T, HostError> {
    Err(HostError::Unavailable("no host capabilities in native tests".into()))
}

/// Capability `customers`.
pub mod customers {
    use super::Page;
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::scoring_rule::rapport::crm::customers as wit;
    use crate::types::{Customer, HostError};

    /// `None` when the tenant has no such customer.
    pub fn get(id: &str) -> Result<Option<Customer>, HostError> {
        #[cfg(target_arch = "wasm32")]
        return wit::get_customer(id).map(|c| c.map(Into::into)).map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = id;
            super::no_host()
        }
    }

    pub fn get_by_external_id(external_id: &str) -> Result<Option<Customer>, HostError> {
        #[cfg(target_arch = "wasm32")]
        return wit::get_customer_by_external_id(external_id)
            .map(|c| c.map(Into::into))
            .map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = external_id;
            super::no_host()
        }
    }

    /// Customers in id order, at most `limit` (host cap 500) per page.
    pub fn list(cursor: Option<&str>, limit: u32) -> Result<Page<Customer>, HostError> {
        #[cfg(target_arch = "wasm32")]
        return wit::list_customers(cursor, limit)
            .map(|p| Page {
                items: p.items.into_iter().map(Into::into).collect(),
                next_cursor: p.next_cursor,
            })
            .map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (cursor, limit);
            super::no_host()
        }
    }
}

/// Capability `interactions`.
pub mod interactions {
    use super::Page;
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::scoring_rule::rapport::crm::interactions as wit;
    use crate::types::{HostError, Interaction};

    /// A customer's interactions, newest first, at most `limit` (cap 500)
    /// per page; an unknown customer yields an empty page.
    pub fn list(customer_id: &str, cursor: Option<&str>, limit: u32) -> Result<Page<Interaction>, HostError> {
        #[cfg(target_arch = "wasm32")]
        return wit::list_interactions(customer_id, cursor, limit)
            .map(|p| Page {
                items: p.items.into_iter().map(Into::into).collect(),
                next_cursor: p.next_cursor,
            })
            .map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (customer_id, cursor, limit);
            super::no_host()
        }
    }
}

/// Capability `loyalty`.
pub mod loyalty {
    use super::Page;
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::scoring_rule::rapport::crm::loyalty as wit;
    use crate::types::{HostError, LedgerEntry, LoyaltyAccount, Reward, Tier};

    /// `None` when the customer has no account (or does not exist).
    pub fn account(customer_id: &str) -> Result<Option<LoyaltyAccount>, HostError> {
        #[cfg(target_arch = "wasm32")]
        return wit::get_account(customer_id)
            .map(|a| a.map(Into::into))
            .map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = customer_id;
            super::no_host()
        }
    }

    /// Newest first.
    pub fn ledger(customer_id: &str, cursor: Option<&str>, limit: u32) -> Result<Page<LedgerEntry>, HostError> {
        #[cfg(target_arch = "wasm32")]
        return wit::list_ledger(customer_id, cursor, limit)
            .map(|p| Page {
                items: p.items.into_iter().map(Into::into).collect(),
                next_cursor: p.next_cursor,
            })
            .map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (customer_id, cursor, limit);
            super::no_host()
        }
    }

    pub fn tiers() -> Result<Vec<Tier>, HostError> {
        #[cfg(target_arch = "wasm32")]
        return wit::list_tiers()
            .map(|t| t.into_iter().map(Into::into).collect())
            .map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        super::no_host()
    }

    /// Active rewards only.
    pub fn rewards() -> Result<Vec<Reward>, HostError> {
        #[cfg(target_arch = "wasm32")]
        return wit::list_rewards()
            .map(|r| r.into_iter().map(Into::into).collect())
            .map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        super::no_host()
    }
}

/// Capability `catalog`.
pub mod catalog {
    use super::Page;
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::scoring_rule::rapport::crm::catalog as wit;
    use crate::types::{HostError, Product};

    pub fn product(sku: &str) -> Result<Option<Product>, HostError> {
        #[cfg(target_arch = "wasm32")]
        return wit::get_product(sku).map(|p| p.map(Into::into)).map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = sku;
            super::no_host()
        }
    }

    pub fn products(category: Option<&str>, cursor: Option<&str>, limit: u32) -> Result<Page<Product>, HostError> {
        #[cfg(target_arch = "wasm32")]
        return wit::list_products(category, cursor, limit)
            .map(|p| Page {
                items: p.items.into_iter().map(Into::into).collect(),
                next_cursor: p.next_cursor,
            })
            .map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (category, cursor, limit);
            super::no_host()
        }
    }
}

/// Capability `outbound-http` (channel connectors; only to the manifest's
/// `allowed_hosts`).
pub mod http {
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::channel_connector::rapport::crm::outbound_http as wit;
    use crate::types::{HttpError, HttpRequest, HttpResponse};

    pub fn send(request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        #[cfg(target_arch = "wasm32")]
        {
            let request = wit::Request {
                method: request.method.clone(),
                url: request.url.clone(),
                headers: request.headers.clone(),
                body: request.body.clone(),
                timeout_ms: request.timeout_ms,
            };
            wit::send(&request)
                .map(|r| HttpResponse {
                    status: r.status,
                    headers: r.headers,
                    body: r.body,
                })
                .map_err(|e| match e {
                    wit::HttpError::Denied(m) => HttpError::Denied(m),
                    wit::HttpError::InvalidRequest(m) => HttpError::InvalidRequest(m),
                    wit::HttpError::Timeout => HttpError::Timeout,
                    wit::HttpError::ResponseTooLarge => HttpError::ResponseTooLarge,
                    wit::HttpError::Connection(m) => HttpError::Connection(m),
                })
        }
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::http_send(request)
    }
}

/// Capability `outbound-smtp` (channel connectors; only to the manifest's
/// `allowed_hosts`): submits a complete RFC 5322 message.
pub mod smtp {
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::channel_connector::rapport::crm::outbound_smtp as wit;
    #[cfg(target_arch = "wasm32")]
    use crate::types::SmtpTls;
    use crate::types::{SmtpError, SmtpReply, SmtpSubmission};

    /// Submits one message; `Ok` is the server's reply to the end of DATA.
    pub fn send(submission: &SmtpSubmission) -> Result<SmtpReply, SmtpError> {
        #[cfg(target_arch = "wasm32")]
        {
            let request = wit::Submission {
                host: submission.host.clone(),
                port: submission.port,
                tls: match submission.tls {
                    SmtpTls::None => wit::TlsMode::None,
                    SmtpTls::Starttls => wit::TlsMode::Starttls,
                    SmtpTls::Implicit => wit::TlsMode::Implicit,
                },
                credentials: submission
                    .credentials
                    .as_ref()
                    .map(|(username, password)| wit::Credentials {
                        username: username.clone(),
                        password: password.clone(),
                    }),
                mail_from: submission.mail_from.clone(),
                rcpt_to: submission.rcpt_to.clone(),
                message: submission.message.clone(),
                timeout_ms: submission.timeout_ms,
            };
            let reply = |r: wit::Reply| SmtpReply {
                code: r.code,
                text: r.text,
            };
            wit::send(&request).map(reply).map_err(|e| match e {
                wit::SmtpError::Denied(m) => SmtpError::Denied(m),
                wit::SmtpError::InvalidRequest(m) => SmtpError::InvalidRequest(m),
                wit::SmtpError::Timeout => SmtpError::Timeout,
                wit::SmtpError::Connection(m) => SmtpError::Connection(m),
                wit::SmtpError::Transient(r) => SmtpError::Transient(reply(r)),
                wit::SmtpError::Permanent(r) => SmtpError::Permanent(reply(r)),
            })
        }
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::smtp_send(submission)
    }
}
