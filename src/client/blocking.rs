//! A blocking face of the client for programs without async: each call runs the async client
//! on a runtime this client owns.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use drover_graph::{Graph, Handle};
use serde::de::DeserializeOwned;

use super::{ClientError, ClientOptions, Report, RunEvent};

/// A blocking connection to a scheduler.
pub struct BlockingClient {
    rt: Arc<tokio::runtime::Runtime>,
    inner: super::Client,
}

impl std::fmt::Debug for BlockingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl BlockingClient {
    /// Connects using an `access.json` file, with default options.
    pub fn connect(access_file: impl AsRef<Path>) -> Result<BlockingClient, ClientError> {
        BlockingClient::connect_with_options(access_file, ClientOptions::default())
    }

    /// Connects using an `access.json` file and `options`.
    pub fn connect_with_options(
        access_file: impl AsRef<Path>,
        options: ClientOptions,
    ) -> Result<BlockingClient, ClientError> {
        let access = drover_protocol::AccessFile::load(access_file.as_ref())
            .map_err(|e| ClientError::Access(e.to_string()))?;
        let rt = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| {
                    ClientError::Access(format!(
                        "cannot start a runtime for the blocking client: {e}"
                    ))
                })?,
        );
        let inner = rt.block_on(super::Client::connect_with_options(&access, options))?;
        Ok(BlockingClient { rt, inner })
    }

    /// Submits `graph`, keeping its sinks' outputs.
    pub fn submit(&self, graph: &Graph) -> Result<BlockingRun, ClientError> {
        let run = self.rt.block_on(self.inner.submit(graph))?;
        Ok(BlockingRun {
            rt: self.rt.clone(),
            run,
        })
    }

    /// Submits a JSON graph, keeping the outputs of `wants`.
    pub fn submit_json(
        &self,
        graph_json: String,
        wants: &[String],
    ) -> Result<BlockingRun, ClientError> {
        let run = self
            .rt
            .block_on(self.inner.submit_json(graph_json, wants))?;
        Ok(BlockingRun {
            rt: self.rt.clone(),
            run,
        })
    }
}

/// A submitted graph, blocking.
pub struct BlockingRun {
    rt: Arc<tokio::runtime::Runtime>,
    run: super::Run,
}

impl std::fmt::Debug for BlockingRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.run.fmt(f)
    }
}

impl BlockingRun {
    /// The next event, or `None` once every task is done.
    pub fn next_event(&mut self) -> Option<RunEvent> {
        self.rt.block_on(self.run.next_event())
    }

    /// Waits for every task and returns the report.
    pub fn wait(&mut self) -> Result<Report, ClientError> {
        self.rt.block_on(self.run.wait())
    }

    /// Waits for `key` and fetches its output bytes.
    pub fn get_bytes(&mut self, key: &str) -> Result<Bytes, ClientError> {
        self.rt.block_on(self.run.get_bytes(key))
    }

    /// Waits for a typed task and decodes its output.
    pub fn get<T: DeserializeOwned>(
        &mut self,
        graph: &Graph,
        handle: Handle<T>,
    ) -> Result<T, ClientError> {
        self.rt.block_on(self.run.get(graph, handle))
    }
}
