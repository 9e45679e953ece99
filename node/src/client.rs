//! The command line's client for a running node's local API.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use herald_node::api::ApiError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A client for the API at one address.
pub(crate) struct Client {
    base: String,
    agent: ureq::Agent,
    /// `Bearer <token>`, from the node directory (empty if there is none).
    authorization: String,
}

impl Client {
    /// A client of the node whose directory is `dir`, at `addr`.
    pub(crate) fn new(addr: SocketAddr, dir: &Path) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            base: format!("http://{addr}"),
            agent,
            authorization: format!("Bearer {}", herald_node::api::read_token(dir).unwrap_or_default()),
        }
    }

    /// Whether a node answers at all.
    pub(crate) fn is_up(&self) -> bool {
        self.agent.get(format!("{}/v1/status", self.base)).call().is_ok()
    }

    pub(crate) fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        Self::decode(self.call_get(path, query)?)
    }

    fn call_get(&self, path: &str, query: &[(&str, String)]) -> Result<ureq::http::Response<ureq::Body>> {
        let mut request = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", &self.authorization);
        for (k, v) in query {
            request = request.query(*k, v);
        }
        request.call().map_err(|e| self.unreachable(e))
    }

    /// [`Client::get`], with the value of the answer's header `header`.
    pub(crate) fn get_with_header<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        header: &str,
    ) -> Result<(T, Option<String>)> {
        let response = self.call_get(path, query)?;
        let value = response
            .headers()
            .get(header)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((Self::decode(response)?, value))
    }

    /// A `GET` whose answer is read as it comes, line by line (a live feed),
    /// with the values of the answer's headers `headers`. No time limit once
    /// the answer has begun.
    pub(crate) fn get_lines(
        &self,
        path: &str,
        query: &[(&str, String)],
        headers: &[&str],
    ) -> Result<(impl std::io::BufRead + use<>, Vec<Option<String>>)> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut request = agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", &self.authorization);
        for (k, v) in query {
            request = request.query(*k, v);
        }
        let response = request.call().map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(Self::decode::<serde_json::Value>(response)
                .err()
                .unwrap_or_else(|| anyhow!("the node refused the request")));
        }
        let values = headers
            .iter()
            .map(|h| {
                response
                    .headers()
                    .get(*h)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
            .collect();
        Ok((
            std::io::BufReader::new(response.into_body().into_reader()),
            values,
        ))
    }

    pub(crate) fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let response = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", &self.authorization)
            .send_json(body)
            .map_err(|e| self.unreachable(e))?;
        Self::decode(response)
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        anyhow!(
            "no node answers at {} ({e}); start it with `herald run --dir DIR`",
            self.base
        )
    }

    fn decode<T: DeserializeOwned>(mut response: ureq::http::Response<ureq::Body>) -> Result<T> {
        let status = response.status();
        let body = response
            .body_mut()
            .read_to_vec()
            .context("reading the node's answer")?;
        if status.is_success() {
            return serde_json::from_slice(&body).context("the node's answer is not the expected JSON");
        }
        match serde_json::from_slice::<ApiError>(&body) {
            Ok(e) => Err(anyhow!("{}", e.error)),
            Err(_) if status == ureq::http::StatusCode::PAYLOAD_TOO_LARGE => Err(anyhow!(
                "the node refused the request as too large (413): a bulletin holds at most {} bytes in all; shorten it",
                herald_protocol::MAX_BULLETIN_BYTES
            )),
            Err(_) => Err(anyhow!("the node answered {status}")),
        }
    }
}
