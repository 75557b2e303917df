//! Message templates: stored per tenant and channel, checked when stored,
//! rendered with minijinja in strict mode (an undefined variable is an error),
//! with the customer's loyalty figures in the context. Apart from the outbox
//! because rendering is pure text work that the outbox only calls.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{MAX_BODY_BYTES, MAX_SUBJECT_CHARS, text_limit, validate_channel};
use crate::store::{Store, StoreError, StoreResult, TenantId, from_millis, now_ms};

/// A named message template (minijinja syntax).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MessageTemplate {
    pub name: String,
    /// The only channel it may be used on (`null`: any).
    pub channel: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A template as written with `PUT /v1/message-templates/{name}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    pub body: String,
}

fn template_from_row(row: &AnyRow) -> StoreResult<MessageTemplate> {
    Ok(MessageTemplate {
        name: row.try_get("name")?,
        channel: row.try_get("channel")?,
        subject: row.try_get("subject")?,
        body: row.try_get("body")?,
        created_at: from_millis(row.try_get("created_at")?),
        updated_at: from_millis(row.try_get("updated_at")?),
    })
}

/// Template names: 1-64 of `a-z 0-9 _ - .`.
pub fn validate_template_name(name: &str) -> StoreResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "name",
            "template names are 1-64 characters of a-z, 0-9, '_', '-' and '.'",
        ))
    }
}

/// The template environment: strict about undefined variables (a message
/// saying "Hello ," is worse than a 422), no auto-escaping (the channel
/// decides what the body is), and a fuel budget so a template cannot loop
/// for long.
fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_fuel(Some(100_000));
    env
}

fn template_error(field: &str, err: &minijinja::Error) -> StoreError {
    StoreError::invalid(field, format!("template: {err:#}"))
}

/// Checks a template's syntax (at `PUT` time, not at first use).
fn compile_check(field: &str, source: &str) -> StoreResult<()> {
    let env = environment();
    env.template_from_str(source)
        .map(|_| ())
        .map_err(|e| template_error(field, &e))
}

pub(super) fn render(field: &str, source: &str, ctx: &Value) -> StoreResult<String> {
    let env = environment();
    let template = env.template_from_str(source).map_err(|e| template_error(field, &e))?;
    template
        .render(minijinja::value::Serde(ctx))
        .map_err(|e| template_error(field, &e))
}

/// The customer's loyalty balance and tier name, for templates.
pub(super) async fn loyalty_vars(conn: &mut AnyConnection, tenant: &TenantId, customer_id: &str) -> StoreResult<Value> {
    let row = sqlx::query(
        "SELECT a.balance, a.lifetime_earned, lt.name AS tier FROM loyalty_accounts a \
         LEFT JOIN loyalty_tiers lt ON lt.tenant_id = a.tenant_id AND lt.id = a.tier_id \
         WHERE a.tenant_id = $1 AND a.customer_id = $2",
    )
    .bind(tenant.as_str())
    .bind(customer_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        None => json!({ "balance": 0, "lifetime_earned": 0, "tier": null }),
        Some(row) => {
            let balance: i64 = row.try_get("balance")?;
            let lifetime: i64 = row.try_get("lifetime_earned")?;
            let tier: Option<String> = row.try_get("tier")?;
            json!({ "balance": balance, "lifetime_earned": lifetime, "tier": tier })
        }
    })
}

pub(super) async fn template_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    name: &str,
) -> StoreResult<Option<MessageTemplate>> {
    let row = sqlx::query(
        "SELECT name, channel, subject, body, created_at, updated_at FROM message_templates \
         WHERE tenant_id = $1 AND name = $2",
    )
    .bind(tenant.as_str())
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(template_from_row).transpose()
}

impl Store {
    /// Creates or replaces a template; `true` when it was created. The
    /// template is compiled first, so a syntax error is a 422 now rather
    /// than at the first message.
    pub async fn put_template(
        &self,
        tenant: &TenantId,
        name: &str,
        body: TemplateBody,
    ) -> StoreResult<(MessageTemplate, bool)> {
        validate_template_name(name)?;
        if let Some(channel) = &body.channel {
            validate_channel("channel", channel)?;
        }
        if body.body.len() > MAX_BODY_BYTES {
            return Err(StoreError::invalid("body", format!("at most {MAX_BODY_BYTES} bytes")));
        }
        compile_check("body", &body.body)?;
        if let Some(subject) = &body.subject {
            text_limit("subject", subject, MAX_SUBJECT_CHARS)?;
            compile_check("subject", subject)?;
        }
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        let updated = sqlx::query(
            "UPDATE message_templates SET channel = $1, subject = $2, body = $3, updated_at = $4 \
             WHERE tenant_id = $5 AND name = $6",
        )
        .bind(&body.channel)
        .bind(&body.subject)
        .bind(&body.body)
        .bind(now)
        .bind(tenant.as_str())
        .bind(name)
        .execute(&mut *tx)
        .await?;
        let created = updated.rows_affected() == 0;
        if created {
            sqlx::query(
                "INSERT INTO message_templates (tenant_id, name, channel, subject, body, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(tenant.as_str())
            .bind(name)
            .bind(&body.channel)
            .bind(&body.subject)
            .bind(&body.body)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let template = template_tx(&mut tx, tenant, name)
            .await?
            .ok_or_else(|| StoreError::Corrupt("template vanished inside its transaction".into()))?;
        tx.commit().await?;
        Ok((template, created))
    }

    pub async fn get_template(&self, tenant: &TenantId, name: &str) -> StoreResult<MessageTemplate> {
        let mut conn = self.db().pool().acquire().await?;
        template_tx(&mut conn, tenant, name).await?.ok_or(StoreError::NotFound {
            entity: "message template",
        })
    }

    pub async fn list_templates(&self, tenant: &TenantId) -> StoreResult<Vec<MessageTemplate>> {
        let rows = sqlx::query(
            "SELECT name, channel, subject, body, created_at, updated_at FROM message_templates \
             WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant.as_str())
        .fetch_all(self.db().pool())
        .await?;
        rows.iter().map(template_from_row).collect()
    }

    /// Deletes a template. Messages rendered from it keep their text.
    pub async fn delete_template(&self, tenant: &TenantId, name: &str) -> StoreResult<()> {
        let mut tx = self.db().begin_write().await?;
        // Triggers name templates (composite foreign key): say which rule is
        // in the way rather than fail on the constraint.
        let users: i64 = sqlx::query("SELECT COUNT(*) FROM message_triggers WHERE tenant_id = $1 AND template = $2")
            .bind(tenant.as_str())
            .bind(name)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if users > 0 {
            return Err(StoreError::conflict(
                "template_in_use",
                format!("{users} message trigger(s) use this template; delete them or point them elsewhere first"),
            ));
        }
        let deleted = sqlx::query("DELETE FROM message_templates WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                entity: "message template",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_strict() {
        let ctx = json!({ "customer": { "name": "Ada" }, "data": {}, "loyalty": { "balance": 5 } });
        assert_eq!(
            render("body", "Hi {{ customer.name }}, {{ loyalty.balance }} pts", &ctx).unwrap(),
            "Hi Ada, 5 pts"
        );
        assert!(render("body", "{{ data.missing }}", &ctx).is_err());
        assert!(compile_check("body", "{% if %}").is_err());
        assert_eq!(render("body", "<{{ customer.name }}>", &ctx).unwrap(), "<Ada>");
    }
}
