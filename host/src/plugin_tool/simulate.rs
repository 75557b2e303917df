//! `rapport plugin simulate`: runs a simulation on a running server (`POST
//! /v1/plugins/{id}/simulate`, then `GET /v1/simulations/{id}` until it
//! ends) and prints its report. A client of the API rather than a local run,
//! so it uses the server's manifest, uploads and data exactly as the
//! tenant's calls do, and needs only a tenant admin key.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::SimulateArgs;

/// Runs the simulation; exit 0 when it succeeded, 1 when it failed, 2 when
/// it could not be started or followed.
pub async fn main(args: SimulateArgs) -> ExitCode {
    match simulate(&args).await {
        Ok(sim) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&sim).unwrap_or_else(|_| sim.to_string())
            );
            if sim["status"] == "succeeded" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn simulate(args: &SimulateArgs) -> anyhow::Result<Value> {
    let base = args.server.trim_end_matches('/');
    let client = reqwest::Client::new();
    let mut body = json!({ "version": args.version });
    if let Some(sample) = args.sample {
        body["sample"] = json!(sample);
    }
    if let Some(as_of) = &args.as_of {
        body["as_of"] = json!(as_of);
    }
    let started = client
        .post(format!("{base}/v1/plugins/{}/simulate", args.plugin))
        .bearer_auth(&args.key)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    let status = started.status();
    let sim: Value = started.json().await.context("the server's answer is not JSON")?;
    if status.as_u16() != 202 {
        bail!(
            "{status}: {}",
            sim["error"]["message"].as_str().unwrap_or("(no message)")
        );
    }
    let id = sim["id"]
        .as_str()
        .context("the answer has no simulation id")?
        .to_owned();
    loop {
        let resp = client
            .get(format!("{base}/v1/simulations/{id}"))
            .bearer_auth(&args.key)
            .send()
            .await
            .with_context(|| format!("cannot reach {base}"))?;
        let status = resp.status();
        let sim: Value = resp.json().await.context("the server's answer is not JSON")?;
        if !status.is_success() {
            bail!(
                "{status}: {}",
                sim["error"]["message"].as_str().unwrap_or("(no message)")
            );
        }
        if sim["status"] != "running" {
            return Ok(sim);
        }
        eprintln!("simulating: {}/{} customers", sim["done"], sim["total"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
