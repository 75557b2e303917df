//! The first-party channel connectors (`plugins/webhook`, `plugins/email`)
//! and the host capabilities they use (`outbound-http` over TLS,
//! `outbound-smtp`), loaded as real components through the runtime and
//! checked against independent counterparts on loopback:
//! - HTTPS: a Python TLS server with a self-signed certificate must fail as a
//!   `connection` error naming the TLS failure, never a panic;
//! - webhook: a Python receiver verifying with the `standardwebhooks` PyPI
//!   package (the spec's reference library), and inbound requests signed
//!   with that library;
//! - email: a real SMTP server (`aiosmtpd` from PyPI) writing what it
//!   received to disk;
//! - end to end, on both backends: messages posted to `/v1/messages` and
//!   delivered by the outbox workers through both components (a receiver
//!   failing twice sees three signed attempts with one `webhook-id`; an SMTP
//!   550 dead-letters after one attempt), and the webhook component behind
//!   `POST /v1/channels/{connector}/inbound` fed requests the reference
//!   library signed; a manifest's `[plugin.limits] http_max_response_bytes`
//!   enforced on a delivery whose answer is larger.
//!
//! The Python packages are installed by `scripts/test`. When one is missing
//! the test that needs it reports itself SKIPPED, unless
//! `RAPPORT_REQUIRE_STANDARDWEBHOOKS` / `RAPPORT_REQUIRE_AIOSMTPD` is set
//! (CI), where it fails instead.

// The app harness (`TestApp`, `both_backends!`, which names `support`)
// and the runtime helpers (definitions, fixture, call contexts).

use crate::support;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::support::runtime::*;
use rapport::runtime::contract::channel::Message;
use rapport::runtime::{CallError, Capability, LoadError, PluginErrorKind, PluginKind};

/// A child process killed when the test ends, pass or fail.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `python3 -c script args...` and waits for its first stdout line,
/// which the scripts below use to announce their port.
fn python(script: &str, args: &[&str]) -> (Guard, String) {
    let mut child = Command::new("python3")
        .arg("-u")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 must be installed to run the connector tests");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reading the helper's port");
    (Guard(child), line.trim().to_owned())
}

/// Whether `python3` can import `module`; if not, the test is skipped, or
/// fails when `require_var` is set.
fn python_module_available(module: &str, require_var: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os(require_var).is_some() {
            panic!("python module `{module}` is missing (scripts/test installs it) and {require_var} is set");
        }
        eprintln!("SKIPPED: python module `{module}` is missing (scripts/test installs it)");
    }
    ok
}

fn message(id: &str, to: &str) -> Message {
    Message {
        id: id.into(),
        customer_id: "a-1".into(),
        channel: "webhook".into(),
        to: to.into(),
        subject: Some("Your points".into()),
        body: "You have 120 points.".into(),
        metadata: r#"{"campaign":"spring"}"#.into(),
        attempt: 1,
        now: 1_700_000_000_123,
    }
}

/// A TLS server on loopback with a fresh self-signed certificate (made
/// with the `openssl` CLI), answering 200 to anyone who completes the
/// handshake, which no client trusting only public roots should.
const TLS_SERVER: &str = r#"
import http.server, ssl, sys
cert, key = sys.argv[1], sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1])
srv.serve_forever()
"#;

fn self_signed_cert(dir: &Path) -> (String, String) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed to run the TLS test");
    assert!(status.success(), "openssl could not make a certificate");
    (cert.display().to_string(), key.display().to_string())
}

#[tokio::test]
async fn https_is_allow_listed_and_untrusted_certificates_fail_as_connection_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    let (_server, port) = python(TLS_SERVER, &[&cert, &key]);
    let rt = runtime();
    let mut def = definition(
        "test-connector",
        PluginKind::ChannelConnector,
        &[Capability::OutboundHttp],
    );
    def.allowed_hosts = vec![format!("127.0.0.1:{port}").parse().unwrap()];
    let plugin = rt.load(def).unwrap();
    let services = fixture();

    // A host that is not allowed is refused before any connection, https or not.
    let (result, _) = plugin
        .deliver(ctx(ACME, "{}", &services), &message("m-1", "https://example.com/hook"))
        .await;
    assert_eq!(
        result.unwrap_err(),
        CallError::Guest(
            PluginErrorKind::DeliveryFailed,
            "example.com:443 is not in the plugin's allowed hosts".into()
        )
    );

    // The allowed loopback host presents a self-signed certificate: the
    // handshake fails, reported as a (retryable) connection error whose
    // text names the certificate problem.
    let (result, _) = plugin
        .deliver(
            ctx(ACME, "{}", &services),
            &message("m-2", &format!("https://127.0.0.1:{port}/hook")),
        )
        .await;
    match result.unwrap_err() {
        CallError::Guest(PluginErrorKind::DeliveryRetryable, text) => {
            eprintln!("reported: {text}");
            assert!(text.starts_with("connection failed: "), "{text}");
            assert!(text.to_ascii_lowercase().contains("certificate"), "{text}");
        }
        other => panic!("expected a retryable connection error, got {other:?}"),
    }
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

/// The secret both sides share in the webhook tests.
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// An independent Standard Webhooks receiver: verifies every POST with the
/// reference library (`standardwebhooks.Webhook(secret).verify`), also
/// checks that the same request with one byte of the body changed is
/// rejected, appends what it saw to `<dir>/received.jsonl` and answers 204
/// (verified) or 401; on `/flaky/N` it answers 503 to the first N attempts
/// of each `webhook-id`.
const RECEIVER: &str = r#"
import http.server, json, os, sys
from standardwebhooks import Webhook, WebhookVerificationError
secret, out = sys.argv[1], sys.argv[2]
wh = Webhook(secret)
FLAKY = {}
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = {"path": self.path, "headers": headers, "body": body.decode("utf-8")}
        try:
            record["payload"] = wh.verify(body, headers)
            record["verified"] = True
        except WebhookVerificationError as e:
            record["verified"] = False
            record["error"] = str(e)
        tampered = body[:-1] + (b" " if body[-1:] != b" " else b"}")
        try:
            wh.verify(tampered, headers)
            record["tampered_rejected"] = False
        except WebhookVerificationError:
            record["tampered_rejected"] = True
        status = 204 if record["verified"] else 401
        # /flaky/N: 503 for the first N attempts of each webhook-id.
        if record["verified"] and self.path.startswith("/flaky/"):
            seen = FLAKY.get(headers.get("webhook-id"), 0)
            FLAKY[headers.get("webhook-id")] = seen + 1
            if seen < int(self.path.rsplit("/", 1)[1]):
                status = 503
        record["status"] = status
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1])
srv.serve_forever()
"#;

fn received(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn webhook_definition(port: &str) -> rapport::runtime::PluginDefinition {
    let mut def = definition(
        "rapport-plugin-webhook",
        PluginKind::ChannelConnector,
        &[Capability::Config, Capability::OutboundHttp],
    );
    def.allowed_hosts = vec![format!("127.0.0.1:{port}").parse().unwrap()];
    def
}

#[tokio::test]
async fn webhook_deliveries_verify_with_the_reference_library() {
    if !python_module_available("standardwebhooks", "RAPPORT_REQUIRE_STANDARDWEBHOOKS") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("received.jsonl");
    let (_receiver, port) = python(RECEIVER, &[WEBHOOK_SECRET, &log.display().to_string()]);
    let plugin = runtime().load(webhook_definition(&port)).unwrap();
    let services = fixture();
    let config = serde_json::json!({
        "url": format!("http://127.0.0.1:{port}/hooks/rapport"),
        "secret": WEBHOOK_SECRET,
        "headers": {"x-api-key": "k-123"},
    })
    .to_string();

    // A message whose `to` is not a URL goes to the configured `url`.
    let mut m = message("msg_2Yx8", "ann@example.org");
    m.now = now_ms();
    m.attempt = 2;
    let (result, _) = plugin.deliver(ctx(ACME, &config, &services), &m).await;
    let receipt = result.unwrap();
    assert_eq!(receipt.detail.as_deref(), Some("HTTP 204"));
    let got = received(&log);
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["tampered_rejected"], true, "{r}");
    assert_eq!(r["path"], "/hooks/rapport");
    assert_eq!(r["headers"]["webhook-id"], "msg_2Yx8");
    assert_eq!(r["headers"]["webhook-timestamp"], (m.now / 1000).to_string());
    assert_eq!(r["headers"]["x-api-key"], "k-123");
    assert_eq!(r["headers"]["content-type"], "application/json");
    let payload = &r["payload"];
    assert_eq!(payload["type"], "message.created");
    assert_eq!(payload["data"]["id"], "msg_2Yx8");
    assert_eq!(payload["data"]["customer_id"], "a-1");
    assert_eq!(payload["data"]["to"], "ann@example.org");
    assert_eq!(payload["data"]["subject"], "Your points");
    assert_eq!(payload["data"]["body"], "You have 120 points.");
    assert_eq!(payload["data"]["metadata"], serde_json::json!({"campaign": "spring"}));
    assert_eq!(payload["data"]["attempt"], 2);

    // A receiver holding another secret refuses (401): a permanent failure.
    let wrong = serde_json::json!({
        "url": format!("http://127.0.0.1:{port}/hooks/rapport"),
        "secret": "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    })
    .to_string();
    let mut m = message("msg_3", "ann@example.org");
    m.now = now_ms();
    let (result, _) = plugin.deliver(ctx(ACME, &wrong, &services), &m).await;
    assert_eq!(
        result.unwrap_err(),
        CallError::Guest(PluginErrorKind::DeliveryFailed, "HTTP 401".into())
    );
    let got = received(&log);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1]["verified"], false, "{}", got[1]);

    // An http(s) `to` overrides the configured url, still within allowed_hosts.
    let mut m = message("msg_4", &format!("http://127.0.0.1:{port}/per-message"));
    m.now = now_ms();
    let (result, _) = plugin.deliver(ctx(ACME, &config, &services), &m).await;
    result.unwrap();
    assert_eq!(received(&log)[2]["path"], "/per-message");

    // A destination outside allowed_hosts: denied by the host, permanent.
    let mut m = message("msg_5", "https://elsewhere.example.com/hook");
    m.now = now_ms();
    let (result, _) = plugin.deliver(ctx(ACME, &config, &services), &m).await;
    assert_eq!(
        result.unwrap_err(),
        CallError::Guest(
            PluginErrorKind::DeliveryFailed,
            "elsewhere.example.com:443 is not in the plugin's allowed hosts".into()
        )
    );
    assert_eq!(received(&log).len(), 3);
}

/// Signs `body` with the reference library: prints the three headers as a
/// JSON object.
const SIGNER: &str = r#"
import json, sys
from datetime import datetime, timezone
from standardwebhooks import Webhook
secret, msg_id, ts, body = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sig = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, tz=timezone.utc), body)
print(json.dumps({"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}))
"#;

fn reference_headers(msg_id: &str, timestamp: i64, body: &str) -> Vec<(String, String)> {
    let (_child, line) = python(SIGNER, &[WEBHOOK_SECRET, msg_id, &timestamp.to_string(), body]);
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&line).unwrap();
    map.into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn webhook_inbound_accepts_requests_signed_by_the_reference_library() {
    if !python_module_available("standardwebhooks", "RAPPORT_REQUIRE_STANDARDWEBHOOKS") {
        return;
    }
    let plugin = runtime().load(webhook_definition("9")).unwrap();
    let services = fixture();
    let config = serde_json::json!({"secret": WEBHOOK_SECRET}).to_string();
    let now = now_ms();
    let body = r#"[{"id":"evt_1","type":"delivered","customer":"EXT-A1","message_id":"msg_2Yx8","at":"2026-01-02T03:04:05Z"},{"id":"evt_2","type":"clicked","customer":"EXT-A1","message_id":"msg_2Yx8","at":1767323046000,"data":{"url":"https://shop.example.com/p/1"}}]"#;
    let request = |headers: Vec<(String, String)>, body: &str| rapport::runtime::contract::channel::InboundRequest {
        method: "POST".into(),
        path: "/v1/channels/webhook/inbound".into(),
        headers,
        body: body.as_bytes().to_vec(),
        received_at: now,
    };

    let signed = reference_headers("msg_in_1", now / 1000, body);
    let (result, _) = plugin
        .parse_inbound(ctx(ACME, &config, &services), &request(signed.clone(), body))
        .await;
    let events = result.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].customer_external_id, "EXT-A1");
    assert_eq!(events[0].kind, "message_delivered");
    assert_eq!(events[0].occurred_at, 1_767_323_045_000);
    assert_eq!(events[0].idempotency_key, "evt_1");
    assert_eq!(events[1].kind, "message_clicked");
    assert_eq!(events[1].occurred_at, 1_767_323_046_000);
    assert_eq!(events[1].idempotency_key, "evt_2");
    let payload: serde_json::Value = serde_json::from_str(&events[1].payload).unwrap();
    assert_eq!(payload["data"]["url"], "https://shop.example.com/p/1");

    // The same headers over another body: unauthenticated.
    let tampered = body.replace("EXT-A1", "EXT-A2");
    let (result, _) = plugin
        .parse_inbound(ctx(ACME, &config, &services), &request(signed, &tampered))
        .await;
    assert!(
        matches!(
            result.unwrap_err(),
            CallError::Guest(PluginErrorKind::Unauthenticated, _)
        ),
        "tampered body"
    );

    // Correctly signed, but ten minutes old: a possible replay.
    let old = reference_headers("msg_in_2", now / 1000 - 600, body);
    let (result, _) = plugin
        .parse_inbound(ctx(ACME, &config, &services), &request(old, body))
        .await;
    match result.unwrap_err() {
        CallError::Guest(PluginErrorKind::Unauthenticated, m) => assert!(m.contains("webhook-timestamp"), "{m}"),
        other => panic!("{other:?}"),
    }

    // Signed, but not an event this connector understands: malformed.
    let odd = r#"{"type":"exploded","customer":"EXT-A1"}"#;
    let headers = reference_headers("msg_in_3", now / 1000, odd);
    let (result, _) = plugin
        .parse_inbound(ctx(ACME, &config, &services), &request(headers, odd))
        .await;
    assert!(matches!(
        result.unwrap_err(),
        CallError::Guest(PluginErrorKind::Malformed, _)
    ));
}

/// A real SMTP server (aiosmtpd) on a free loopback port: recipients
/// starting with `reject` get `550`, with `later` get `451`; every accepted
/// message is written to `<dir>/<n>.json` with its envelope. With a
/// certificate and key as further arguments it speaks implicit TLS. It
/// never offers STARTTLS.
const SMTP_SERVER: &str = r#"
import asyncio, json, os, sys
from aiosmtpd.smtp import SMTP
out = sys.argv[1]
class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        if address.startswith("later"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"
    async def handle_DATA(self, server, session, envelope):
        n = len(os.listdir(out))
        with open(os.path.join(out, "%d.json" % n), "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                       "data": envelope.content.decode("utf-8", "replace")}, f)
        return "250 2.0.0 queued as Q%d" % n
async def main():
    loop = asyncio.get_running_loop()
    tls = None
    if len(sys.argv) > 3:  # cert, key: implicit TLS (SMTPS)
        import ssl
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(sys.argv[2], sys.argv[3])
    srv = await loop.create_server(lambda: SMTP(Handler(), hostname="mx.test"), "127.0.0.1", 0, ssl=tls)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await srv.serve_forever()
asyncio.run(main())
"#;

fn email_definition(allowed: &str) -> rapport::runtime::PluginDefinition {
    let mut def = definition(
        "rapport-plugin-email",
        PluginKind::ChannelConnector,
        &[Capability::Config, Capability::OutboundSmtp],
    );
    def.allowed_hosts = vec![allowed.parse().unwrap()];
    def
}

fn email_message(id: &str, to: &str, metadata: &str) -> Message {
    Message {
        channel: "email".into(),
        metadata: metadata.into(),
        ..message(id, to)
    }
}

#[tokio::test]
async fn email_is_delivered_to_a_real_smtp_server() {
    if !python_module_available("aiosmtpd", "RAPPORT_REQUIRE_AIOSMTPD") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = python(SMTP_SERVER, &[&dir.path().display().to_string()]);
    let plugin = runtime().load(email_definition(&format!("127.0.0.1:{port}"))).unwrap();
    let services = fixture();
    let config = serde_json::json!({
        "smtp_host": "127.0.0.1",
        "smtp_port": port.parse::<u16>().unwrap(),
        "tls": "none",
        "from": "Acme Shop <shop@acme.example>",
        "reply_to": "help@acme.example",
    })
    .to_string();

    let m = email_message(
        "m-email-1",
        "Ann Lee <ann@example.org>",
        r#"{"html":"<p>You have <b>120</b> points.</p>"}"#,
    );
    let (result, _) = plugin.deliver(ctx(ACME, &config, &services), &m).await;
    let receipt = result.unwrap();
    assert_eq!(receipt.provider_id.as_deref(), Some("<rapport.m-email-1@acme.example>"));
    assert_eq!(receipt.detail.as_deref(), Some("SMTP 250 2.0.0 queued as Q0"));

    let got: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("0.json")).unwrap()).unwrap();
    assert_eq!(got["mail_from"], "shop@acme.example");
    assert_eq!(got["rcpt_tos"], serde_json::json!(["ann@example.org"]));
    let data = got["data"].as_str().unwrap();
    for needle in [
        "From: \"Acme Shop\" <shop@acme.example>\r\n",
        "To: \"Ann Lee\" <ann@example.org>\r\n",
        "Reply-To: <help@acme.example>\r\n",
        "Subject: Your points\r\n",
        "Message-ID: <rapport.m-email-1@acme.example>\r\n",
        // message.now = 1_700_000_000_123 ms.
        "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n",
        "MIME-Version: 1.0\r\n",
        "Content-Type: multipart/alternative",
        "Content-Type: text/plain; charset=\"utf-8\"",
        "You have 120 points.",
        "Content-Type: text/html; charset=\"utf-8\"",
        "<p>You have <b>120</b> points.</p>",
    ] {
        assert!(data.contains(needle), "missing {needle:?} in\n{data}");
    }

    // 550 at RCPT: permanent, with the server's code and text.
    let (result, _) = plugin
        .deliver(
            ctx(ACME, &config, &services),
            &email_message("m-email-2", "reject@example.org", "{}"),
        )
        .await;
    assert_eq!(
        result.unwrap_err(),
        CallError::Guest(
            PluginErrorKind::DeliveryFailed,
            "SMTP 550 5.1.1 <reject@example.org>: mailbox unavailable".into()
        )
    );
    // 451: retryable.
    let (result, _) = plugin
        .deliver(
            ctx(ACME, &config, &services),
            &email_message("m-email-3", "later@example.org", "{}"),
        )
        .await;
    assert_eq!(
        result.unwrap_err(),
        CallError::Guest(
            PluginErrorKind::DeliveryRetryable,
            "SMTP 451 4.3.0 try again later".into()
        )
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only the first message was accepted"
    );
}

#[tokio::test]
async fn email_to_a_server_outside_allowed_hosts_is_denied_without_connecting() {
    // A listener that would see any connection attempt.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let plugin = runtime().load(email_definition("smtp.acme.example")).unwrap();
    let services = fixture();
    let config = serde_json::json!({
        "smtp_host": "127.0.0.1", "smtp_port": port, "tls": "none", "from": "shop@acme.example",
    })
    .to_string();
    let (result, _) = plugin
        .deliver(
            ctx(ACME, &config, &services),
            &email_message("m-1", "ann@example.org", "{}"),
        )
        .await;
    assert_eq!(
        result.unwrap_err(),
        CallError::Guest(
            PluginErrorKind::DeliveryFailed,
            format!("127.0.0.1:{port} is not in the plugin's allowed hosts")
        )
    );
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "no connection was attempted"
    );
    // The allowed host on a port its pattern does not allow (no port = 25/465/587).
    let config = serde_json::json!({
        "smtp_host": "smtp.acme.example", "smtp_port": 2525, "tls": "none", "from": "shop@acme.example",
    })
    .to_string();
    let (result, _) = plugin
        .deliver(
            ctx(ACME, &config, &services),
            &email_message("m-2", "ann@example.org", "{}"),
        )
        .await;
    assert_eq!(
        result.unwrap_err(),
        CallError::Guest(
            PluginErrorKind::DeliveryFailed,
            "smtp.acme.example:2525 is not in the plugin's allowed hosts".into()
        )
    );
}

#[tokio::test]
async fn outbound_smtp_must_be_granted_and_only_to_connectors() {
    let rt = runtime();
    let err = rt
        .load(definition(
            "rapport-plugin-email",
            PluginKind::ChannelConnector,
            &[Capability::Config],
        ))
        .unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::ImportNotGranted {
                capability: Capability::OutboundSmtp,
                ..
            }
        ),
        "{err}"
    );
    let err = rt
        .load(definition(
            "test-scorer",
            PluginKind::ScoringRule,
            &[Capability::Config, Capability::Log, Capability::OutboundSmtp],
        ))
        .unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::CapabilityNotForKind {
                capability: Capability::OutboundSmtp,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn smtp_tls_is_never_downgraded_and_untrusted_certificates_fail() {
    if !python_module_available("aiosmtpd", "RAPPORT_REQUIRE_AIOSMTPD") {
        return;
    }
    let services = fixture();
    let config = |port: &str, tls: &str| {
        serde_json::json!({
            "smtp_host": "127.0.0.1", "smtp_port": port.parse::<u16>().unwrap(), "tls": tls,
            "from": "shop@acme.example",
        })
        .to_string()
    };

    // STARTTLS required, but the server does not offer it: refused, and
    // the message is not sent in plain text instead.
    let plain_dir = tempfile::tempdir().unwrap();
    let (_plain, port) = python(SMTP_SERVER, &[&plain_dir.path().display().to_string()]);
    let plugin = runtime().load(email_definition(&format!("127.0.0.1:{port}"))).unwrap();
    let (result, _) = plugin
        .deliver(
            ctx(ACME, &config(&port, "starttls"), &services),
            &email_message("m-1", "ann@example.org", "{}"),
        )
        .await;
    match result.unwrap_err() {
        CallError::Guest(PluginErrorKind::DeliveryRetryable, m) => {
            assert!(m.starts_with("connection failed: "), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_dir(plain_dir.path()).unwrap().count(), 0);

    // Implicit TLS with a self-signed certificate: the handshake fails.
    let tls_dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(tls_dir.path());
    let out = tls_dir.path().join("mail");
    std::fs::create_dir(&out).unwrap();
    let (_tls, port) = python(SMTP_SERVER, &[&out.display().to_string(), &cert, &key]);
    let plugin = runtime().load(email_definition(&format!("127.0.0.1:{port}"))).unwrap();
    let (result, _) = plugin
        .deliver(
            ctx(ACME, &config(&port, "implicit"), &services),
            &email_message("m-2", "ann@example.org", "{}"),
        )
        .await;
    match result.unwrap_err() {
        CallError::Guest(PluginErrorKind::DeliveryRetryable, m) => {
            eprintln!("reported: {m}");
            assert!(m.starts_with("connection failed: "), "{m}");
            assert!(m.to_ascii_lowercase().contains("certificate"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}

#[tokio::test]
async fn a_silent_smtp_server_times_out_as_a_retryable_failure() {
    // Accepts connections and never says a word (no 220 greeting).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
    let mut def = email_definition(&format!("127.0.0.1:{port}"));
    def.limits.smtp_timeout_ms = 300;
    let plugin = runtime().load(def).unwrap();
    let services = fixture();
    let config = serde_json::json!({
        "smtp_host": "127.0.0.1", "smtp_port": port, "tls": "none", "from": "shop@acme.example",
    })
    .to_string();
    let (result, _) = plugin
        .deliver(
            ctx(ACME, &config, &services),
            &email_message("m-1", "ann@example.org", "{}"),
        )
        .await;
    assert_eq!(
        result.unwrap_err(),
        CallError::Guest(PluginErrorKind::DeliveryRetryable, "timeout".into())
    );
    // The connection was made (and held) before the timeout.
    assert!(held.join().unwrap().is_ok());
}

/// The webhook connector in the app, for tenant `acme` only, with the test
/// secret in its per-tenant configuration.
fn webhook_manifest(dir: &Path) -> std::path::PathBuf {
    let mut text = support::plugin_manifest_entry(
        "webhook",
        "rapport-plugin-webhook",
        "channel-connector",
        &["config", "outbound-http"],
        "timeout_ms = 2000",
    )
    .replace(
        "[plugin.limits]",
        "channels = [\"webhook\"]\nallowed_hosts = [\"127.0.0.1:9\"]\n[plugin.limits]",
    );
    text += &format!(
        "[[tenant]]\nid = \"acme\"\n[[tenant.plugin]]\nid = \"webhook\"\nconfig = {{ secret = {WEBHOOK_SECRET:?} }}\n\n"
    );
    let path = dir.join("plugins.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn post_signed(
    app: &support::TestApp,
    key: &str,
    headers: &[(String, String)],
    body: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut request = app
        .client
        .post(app.url("/v1/channels/webhook/inbound"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn webhook_events_are_ingested_once_through_the_inbound_endpoint(backend: support::Backend) {
    if !python_module_available("standardwebhooks", "RAPPORT_REQUIRE_STANDARDWEBHOOKS") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = rapport::config::Config::default();
    config.plugins.manifest = Some(webhook_manifest(dir.path()));
    config.plugins.cache_dir = Some(dir.path().join("cache"));
    config.plugins.rescore_interval_ms = Some(0);
    let app = support::TestApp::start_with(backend, config).await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;

    let now = now_ms() / 1000;
    let body = r#"{"id":"evt_api_1","type":"opened","customer":"EXT-API-1","message_id":"msg_1","at":"2026-01-02T03:04:05Z","data":{"client":"mail-app"}}"#;
    let headers = reference_headers("msg_in_api", now, body);
    let (status, first) = post_signed(&app, &acme.write, &headers, body).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["events"][0]["status"], "created", "{first}");
    assert_eq!(first["events"][0]["kind"], "message_opened", "{first}");
    assert_eq!(first["events"][0]["customer_external_id"], "EXT-API-1", "{first}");
    let interaction = first["events"][0]["interaction_id"].as_str().unwrap().to_owned();

    // The provider retries the same request: the same interaction.
    let (status, again) = post_signed(&app, &acme.write, &headers, body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["events"][0]["status"], "replayed", "{again}");
    assert_eq!(again["events"][0]["interaction_id"], interaction.as_str());

    let (status, customer) = app.get("/v1/customers/by-external-id/EXT-API-1", &acme.read).await;
    assert_eq!(status, 200, "{customer}");
    let customer = customer["id"].as_str().unwrap().to_owned();
    let (status, timeline) = app
        .get(&format!("/v1/customers/{customer}/interactions"), &acme.read)
        .await;
    assert_eq!(status, 200, "{timeline}");
    let items = timeline["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{timeline}");
    assert_eq!(items[0]["kind"], "message_opened");
    assert_eq!(items[0]["occurred_at"], "2026-01-02T03:04:05Z");
    assert_eq!(items[0]["payload"]["data"]["client"], "mail-app");

    // Tampered body, or a stale timestamp: 401, nothing stored.
    let tampered = body.replace("EXT-API-1", "EXT-API-2");
    let (status, response) = post_signed(&app, &acme.write, &headers, &tampered).await;
    support::assert_error(status, &response, 401, "signature_rejected");
    let stale = reference_headers("msg_in_old", now - 600, &tampered);
    let (status, response) = post_signed(&app, &acme.write, &stale, &tampered).await;
    support::assert_error(status, &response, 401, "signature_rejected");
    let (status, _) = app.get("/v1/customers/by-external-id/EXT-API-2", &acme.read).await;
    assert_eq!(status, 404);

    // Another tenant has no such connector.
    let (status, response) = post_signed(&app, &globex.write, &headers, body).await;
    support::assert_error(status, &response, 404, "not_found");
}

both_backends!(webhook_events_are_ingested_once_through_the_inbound_endpoint);

#[test]
fn the_manifest_grants_outbound_smtp_to_connectors_with_allowed_hosts_only() {
    use rapport::manifest::Manifest;
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("email.wasm");
    std::fs::write(&wasm, b"\0asm email").unwrap();
    let digest = sha256(b"\0asm email");
    let load = |kind: &str, extra: &str| {
        let text = format!(
            "[[plugin]]\nid = \"email\"\nkind = {kind:?}\nversion = \"0.1.0\"\ncontract = \"rapport:crm@0.1.0\"\n\
             artifact = \"email.wasm\"\nsha256 = {digest:?}\ncapabilities = [\"config\", \"outbound-smtp\"]\n{extra}"
        );
        let path = dir.path().join("plugins.toml");
        std::fs::write(&path, text).unwrap();
        Manifest::load(&path)
    };
    let manifest = load(
        "channel-connector",
        "channels = [\"email\"]\nallowed_hosts = [\"smtp.example.com\"]\n",
    )
    .unwrap();
    let spec = &manifest.plugins[0];
    assert!(spec.capabilities.contains(&Capability::OutboundSmtp));
    assert_eq!(spec.allowed_hosts.len(), 1);

    let err = load("channel-connector", "channels = [\"email\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("outbound-smtp needs at least one allowed_hosts entry"),
        "{err}"
    );
    let err = load("scoring-rule", "allowed_hosts = [\"smtp.example.com\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("outbound-smtp is only granted to channel-connector plugins"),
        "{err}"
    );
}

/// Polls a message through the API until `done` holds (or fails after 30 s).
async fn wait_for_message(
    app: &support::TestApp,
    key: &str,
    id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, m) = app.get(&format!("/v1/messages/{id}"), key).await;
        assert_eq!(status, 200, "{m}");
        if done(&m) {
            return m;
        }
        assert!(std::time::Instant::now() < deadline, "message stuck: {m}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Both first-party connectors in the app for tenant `acme`: `webhook` to
/// the receiver on `http_port`, `email` to the SMTP server on `smtp_port`.
fn outbound_manifest(dir: &Path, http_port: &str, smtp_port: &str) -> std::path::PathBuf {
    let webhook = support::plugin_manifest_entry(
        "webhook",
        "rapport-plugin-webhook",
        "channel-connector",
        &["config", "outbound-http"],
        "timeout_ms = 5000",
    )
    .replace(
        "[plugin.limits]",
        &format!("channels = [\"webhook\"]\nallowed_hosts = [\"127.0.0.1:{http_port}\"]\n[plugin.limits]"),
    );
    let email = support::plugin_manifest_entry(
        "email",
        "rapport-plugin-email",
        "channel-connector",
        &["config", "outbound-smtp"],
        "timeout_ms = 5000",
    )
    .replace(
        "[plugin.limits]",
        &format!("channels = [\"email\"]\nallowed_hosts = [\"127.0.0.1:{smtp_port}\"]\n[plugin.limits]"),
    );
    let delivery = "[plugin.delivery]\nmax_attempts = 4\nbackoff_initial_ms = 20\nbackoff_max_ms = 100\n\n";
    let text = format!(
        "{webhook}{delivery}{email}{delivery}\
         [[tenant]]\nid = \"acme\"\nmessage_rate_per_second = 1000\n\
         [[tenant.plugin]]\nid = \"webhook\"\n\
         config = {{ url = \"http://127.0.0.1:{http_port}/hooks\", secret = {WEBHOOK_SECRET:?} }}\n\
         [[tenant.plugin]]\nid = \"email\"\n\
         config = {{ smtp_host = \"127.0.0.1\", smtp_port = {smtp_port}, tls = \"none\", from = \"Acme <shop@acme.example>\" }}\n"
    );
    let path = dir.join("plugins.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn messages_are_delivered_through_both_connectors(backend: support::Backend) {
    if !python_module_available("standardwebhooks", "RAPPORT_REQUIRE_STANDARDWEBHOOKS")
        || !python_module_available("aiosmtpd", "RAPPORT_REQUIRE_AIOSMTPD")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("received.jsonl");
    let (_receiver, http_port) = python(RECEIVER, &[WEBHOOK_SECRET, &log.display().to_string()]);
    let mail = dir.path().join("mail");
    std::fs::create_dir(&mail).unwrap();
    let (_smtp, smtp_port) = python(SMTP_SERVER, &[&mail.display().to_string()]);
    let mut config = rapport::config::Config::default();
    config.plugins.manifest = Some(outbound_manifest(dir.path(), &http_port, &smtp_port));
    config.plugins.cache_dir = Some(dir.path().join("cache"));
    config.plugins.rescore_interval_ms = Some(0);
    config.delivery.poll_ms = 20;
    let app = support::TestApp::start_with(backend, config).await;
    let acme = app.tenant_with_id("acme").await;
    let (status, customer) = app
        .post(
            "/v1/customers",
            &acme.write,
            serde_json::json!({"external_id": "C1", "name": "Ada", "email": "ada@example.org"}),
        )
        .await;
    assert_eq!(status, 201, "{customer}");
    let cid = customer["id"].as_str().unwrap().to_owned();
    let post = |body: serde_json::Value| {
        let app = &app;
        let key = acme.write.clone();
        async move {
            let (status, m) = app.post("/v1/messages", &key, body).await;
            assert_eq!(status, 202, "{m}");
            m["id"].as_str().unwrap().to_owned()
        }
    };

    // Webhook, to the configured url (the address is not a URL): delivered
    // once, verified by the reference library, webhook-id = message id.
    let id = post(serde_json::json!({
        "customer_id": cid, "channel": "webhook", "to": "ada@example.org",
        "subject": "Hello", "body": "hello Ada", "metadata": {"campaign": "spring"}, "idempotency_key": "w-1",
    }))
    .await;
    let m = wait_for_message(&app, &acme.read, &id, |m| m["status"] == "delivered").await;
    assert_eq!(m["connector"], "webhook");
    let got = received(&log);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["verified"], true, "{}", got[0]);
    assert_eq!(got[0]["path"], "/hooks");
    assert_eq!(got[0]["headers"]["webhook-id"], id.as_str());
    assert_eq!(got[0]["payload"]["data"]["body"], "hello Ada");
    assert_eq!(got[0]["payload"]["data"]["customer_id"], cid.as_str());

    // A receiver failing twice (503): retried with the same webhook-id and a
    // fresh signature each time, then delivered.
    let id = post(serde_json::json!({
        "customer_id": cid, "channel": "webhook", "to": format!("http://127.0.0.1:{http_port}/flaky/2"),
        "body": "again", "idempotency_key": "w-2",
    }))
    .await;
    let m = wait_for_message(&app, &acme.read, &id, |m| m["status"] == "delivered").await;
    assert_eq!(m["attempts"], 3, "{m}");
    let flaky: Vec<_> = received(&log)
        .into_iter()
        .filter(|r| r["headers"]["webhook-id"] == id.as_str())
        .collect();
    assert_eq!(flaky.len(), 3);
    assert!(flaky.iter().all(|r| r["verified"] == true), "{flaky:?}");
    let statuses: Vec<_> = flaky.iter().map(|r| r["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [503, 503, 204]);
    let attempts: Vec<_> = flaky
        .iter()
        .map(|r| r["payload"]["data"]["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3]);

    // E-mail: delivered to the SMTP server with a Message-ID from the id.
    let id = post(serde_json::json!({
        "customer_id": cid, "channel": "email", "to": "Ada <ada@example.org>",
        "subject": "Your points", "body": "You have 120 points.", "idempotency_key": "e-1",
    }))
    .await;
    let m = wait_for_message(&app, &acme.read, &id, |m| m["status"] == "delivered").await;
    assert_eq!(m["connector"], "email");
    let got: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(mail.join("0.json")).unwrap()).unwrap();
    assert_eq!(got["rcpt_tos"], serde_json::json!(["ada@example.org"]));
    let data = got["data"].as_str().unwrap();
    assert!(
        data.contains(&format!("Message-ID: <rapport.{id}@acme.example>")),
        "{data}"
    );
    assert!(data.contains("Subject: Your points"), "{data}");

    // A 550: dead after one attempt (permanent), the server's words logged.
    let id = post(serde_json::json!({
        "customer_id": cid, "channel": "email", "to": "reject@example.org", "body": "x", "idempotency_key": "e-2",
    }))
    .await;
    let m = wait_for_message(&app, &acme.read, &id, |m| m["status"] == "dead").await;
    assert_eq!(m["attempts"], 1, "{m}");
    assert_eq!(m["attempts_log"][0]["outcome"], "failed", "{m}");
    assert_eq!(
        m["last_error"], "SMTP 550 5.1.1 <reject@example.org>: mailbox unavailable",
        "{m}"
    );
}

both_backends!(messages_are_delivered_through_both_connectors);

/// A plain HTTP receiver: answers every POST 200 with a body of N bytes for
/// `/size/N`, and appends each request's path to `<file>`.
const SIZED_RECEIVER: &str = r#"
import http.server, sys
out = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        with open(out, "a") as f:
            f.write(self.path + "\n")
        body = b"x" * int(self.path.rsplit("/", 1)[1])
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1])
srv.serve_forever()
"#;

/// `http_max_response_bytes` set in the manifest reaches the runtime: with
/// 1024, a receiver answering 2048 bytes (well inside the 1 MiB default)
/// fails the attempt as `response too large` (one attempt allowed: dead),
/// while a 512-byte answer is delivered.
async fn manifest_http_max_response_bytes_is_enforced(backend: support::Backend) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.txt");
    let (_receiver, port) = python(SIZED_RECEIVER, &[&log.display().to_string()]);
    let webhook = support::plugin_manifest_entry(
        "webhook",
        "rapport-plugin-webhook",
        "channel-connector",
        &["config", "outbound-http"],
        "timeout_ms = 5000\nhttp_timeout_ms = 4000\nhttp_max_response_bytes = 1024",
    )
    .replace(
        "[plugin.limits]",
        &format!("channels = [\"webhook\"]\nallowed_hosts = [\"127.0.0.1:{port}\"]\n[plugin.limits]"),
    );
    let manifest = dir.path().join("plugins.toml");
    std::fs::write(
        &manifest,
        format!(
            "{webhook}[plugin.delivery]\nmax_attempts = 1\n\n\
             [[tenant]]\nid = \"acme\"\n[[tenant.plugin]]\nid = \"webhook\"\n\
             config = {{ url = \"http://127.0.0.1:{port}/size/0\", secret = {WEBHOOK_SECRET:?} }}\n"
        ),
    )
    .unwrap();
    let mut config = rapport::config::Config::default();
    config.plugins.manifest = Some(manifest);
    config.plugins.cache_dir = Some(dir.path().join("cache"));
    config.plugins.rescore_interval_ms = Some(0);
    config.delivery.poll_ms = 20;
    let app = support::TestApp::start_with(backend, config).await;
    let acme = app.tenant_with_id("acme").await;
    let (status, customer) = app
        .post("/v1/customers", &acme.write, serde_json::json!({"external_id": "C1"}))
        .await;
    assert_eq!(status, 201, "{customer}");
    let cid = customer["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for size in [2048, 512] {
        let (status, m) = app
            .post(
                "/v1/messages",
                &acme.write,
                serde_json::json!({
                    "customer_id": cid, "channel": "webhook", "body": "hi",
                    "to": format!("http://127.0.0.1:{port}/size/{size}"), "idempotency_key": format!("k-{size}"),
                }),
            )
            .await;
        assert_eq!(status, 202, "{m}");
        ids.push(m["id"].as_str().unwrap().to_owned());
    }

    let big = wait_for_message(&app, &acme.read, &ids[0], |m| m["status"] == "dead").await;
    assert_eq!(big["attempts"], 1, "{big}");
    assert_eq!(big["attempts_log"][0]["outcome"], "retryable", "{big}");
    assert_eq!(big["last_error"], "response too large", "{big}");
    let small = wait_for_message(&app, &acme.read, &ids[1], |m| m["status"] == "delivered").await;
    assert_eq!(small["attempts"], 1, "{small}");
    // Both requests reached the receiver: the limit is on the answer.
    let mut paths: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    paths.sort();
    assert_eq!(paths, ["/size/2048", "/size/512"]);
}

both_backends!(manifest_http_max_response_bytes_is_enforced);
