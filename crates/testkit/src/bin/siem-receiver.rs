//! A local stand-in for a SIEM, for the demo: generic HTTP NDJSON at `/ingest` (the shape of
//! Panther's HTTP source) and Elasticsearch `_bulk`, as strict as the tests' receivers (it is
//! the same code), appending every record it accepts to `--out`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Parser;

use oprelay_testkit::receivers::{es_receiver, http_receiver, Recv};

#[derive(Parser)]
#[command(
    name = "siem-receiver",
    about = "A local SIEM stand-in for the oprelay demo"
)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:9480")]
    listen: SocketAddr,
    /// Every accepted record is appended here, one JSON object per line.
    #[arg(long)]
    out: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cli.out)
        .with_context(|| format!("cannot open {}", cli.out.display()))?;
    let state = Arc::new(Mutex::new(Recv {
        tee: Some(file),
        ..Default::default()
    }));
    let app = http_receiver(state.clone(), None).merge(es_receiver(state));
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    eprintln!(
        "siem-receiver: POST http://{}/ingest (NDJSON) or /_bulk (Elasticsearch) → {}",
        cli.listen,
        cli.out.display()
    );
    axum::serve(listener, app).await.context("serving")?;
    Ok(())
}
