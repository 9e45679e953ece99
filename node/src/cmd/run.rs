//! `herald run`: the node and its local API, until Ctrl-C or SIGTERM.

use std::sync::Arc;

use anyhow::{Context, Result};
use herald_node::{Node, api, setup};

use crate::cli::DirArgs;

pub(crate) fn run(args: DirArgs) -> Result<()> {
    let (config, settings) = setup::load_node_settings(&args.dir)?;
    super::runtime()?.block_on(async move {
        // Listening for the signals before anything starts: one that comes
        // while the node starts stops it cleanly once started, rather than
        // killing the process mid-way.
        let signals = Signals::listen()?;
        let node = Arc::new(Node::start(settings).await?);
        let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let token = api::write_token(&args.dir).with_context(|| {
            format!(
                "cannot write the API token to {}",
                args.dir.join(api::TOKEN_FILE).display()
            )
        })?;
        let metrics_token = api::write_metrics_token(&args.dir).with_context(|| {
            format!(
                "cannot write the metrics token to {}",
                args.dir.join(api::METRICS_TOKEN_FILE).display()
            )
        })?;
        let (addr, api_task) = api::serve(
            config.api.listen,
            token,
            Some(metrics_token),
            Arc::clone(&node),
            async {
                let _ = api_stopped.await;
            },
        )
        .await
        .with_context(|| {
            format!(
                "cannot serve the local API on {} (is another node running?)",
                config.api.listen
            )
        })?;
        tracing::info!(
            member = %config.node.member,
            peer = %node.peer_id(),
            api = %addr,
            page = %format!("http://{addr}/"),
            "herald is running; Ctrl-C to stop"
        );
        signals.wait().await;
        tracing::info!("stopping");
        let _ = stop_api.send(());
        // Answers still being written end within the API's write limit (a
        // client that takes nothing is dropped); this bounds the wait whatever
        // else a connection does.
        if tokio::time::timeout(API_STOP_WAIT, api_task).await.is_err() {
            tracing::warn!(
                waited = ?API_STOP_WAIT,
                "API connections still open; stopping without waiting for them"
            );
        }
        match Arc::into_inner(node) {
            Some(node) => node.shutdown().await,
            None => tracing::warn!("API requests still running; stopping without waiting for them"),
        }
        Ok(())
    })
}

/// Longest the stop waits for the API's open connections.
const API_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Ctrl-C (SIGINT) and SIGTERM, listened for from creation on.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    /// Until either comes (or came since [`Signals::listen`]).
    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
