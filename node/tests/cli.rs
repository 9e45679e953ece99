//! End to end through the `herald` binary: a local network made by
//! `herald testnet`, nodes started as separate `herald run` processes on
//! loopback, a bulletin published with `herald publish` and read back with
//! `herald show` and `herald list`, online and offline, then exported and
//! audited with `herald audit` from the genesis hash alone; and `herald
//! devnet`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const HERALD: &str = env!("CARGO_BIN_EXE_herald");
const WAIT: Duration = Duration::from_secs(60);

fn herald(args: &[&str]) -> Output {
    Command::new(HERALD)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run herald")
}

/// `herald testnet` of `nodes` member directories in `dir`, on free ports; returns the base port.
fn testnet(dir: &Path, nodes: u16) -> u16 {
    let base = free_base_port(nodes);
    let made = herald(&[
        "testnet",
        "--dir",
        dir.to_str().unwrap(),
        "--nodes",
        &nodes.to_string(),
        "--base-port",
        &base.to_string(),
    ]);
    assert!(made.status.success(), "{}", stderr(&made));
    base
}

/// `herald publish` of a low, TLP:CLEAR outreach bulletin titled `title`.
fn publish_outreach(dir: &str, title: &str) -> Output {
    herald(&[
        "publish",
        "--dir",
        dir,
        "--kind",
        "outreach",
        "--title",
        title,
        "--severity",
        "low",
        "--tlp",
        "clear",
    ])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A base port with `base+1..=base+n` and `base+101..=base+100+n` free now.
fn free_base_port(n: u16) -> u16 {
    // Tests in this process run in parallel: each call starts elsewhere.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let salt = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) * 7919;
    for attempt in 0..200u32 {
        // Below 32768, where Linux gives out the ports of outgoing
        // connections (other tests' dials could take a port checked free).
        let base = 20_000 + ((std::process::id() + salt + attempt * 397) % 12_000) as u16;
        let ports = (1..=n).flat_map(|i| [base + i, base + 100 + i]);
        let held: Vec<_> = ports.map(|p| TcpListener::bind(("127.0.0.1", p))).collect();
        if held.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no free port range on 127.0.0.1");
}

/// The local API of the node in `dir`, on `port`, answers only requests that
/// carry the token from its directory, which only its owner can read, and
/// refuses those that do not parse in its JSON error form.
fn api_refuses_bad_requests(dir: &Path, port: u16) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}/v1/status");
    let token = std::fs::read_to_string(dir.join("api.token")).unwrap();
    assert_eq!(token.trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("api.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is the owner's only");
    }
    let status = |authorization: Option<String>| {
        let mut request = agent.get(&url);
        if let Some(a) = authorization {
            request = request.header("Authorization", &a);
        }
        request.call().unwrap().status().as_u16()
    };
    assert_eq!(status(None), 401, "no token");
    assert_eq!(
        status(Some(format!("Bearer {}", "0".repeat(64)))),
        401,
        "a wrong token"
    );
    assert_eq!(
        status(Some(token.trim().to_string())),
        401,
        "a token without the Bearer scheme"
    );
    assert_eq!(status(Some(format!("Bearer {}", token.trim()))), 200);
    let listed = agent
        .get(format!("http://127.0.0.1:{port}/v1/bulletins"))
        .call()
        .unwrap();
    assert_eq!(listed.status().as_u16(), 401, "listing needs the token too");
    // Metrics for a scraper that sends the metrics token (readable by the node's group; it opens
    // nothing else).
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let metrics_token = std::fs::read_to_string(dir.join("metrics.token")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("metrics.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }
    assert_ne!(metrics_token.trim(), token.trim());
    assert_eq!(agent.get(&metrics).call().unwrap().status().as_u16(), 401);
    let with_metrics_token = agent
        .get(&url)
        .header("Authorization", &format!("Bearer {}", metrics_token.trim()))
        .call()
        .unwrap();
    assert_eq!(
        with_metrics_token.status().as_u16(),
        401,
        "the metrics token opens nothing else"
    );
    let with_api_token = agent
        .get(&metrics)
        .header("Authorization", &format!("Bearer {}", token.trim()))
        .call()
        .unwrap();
    assert_eq!(
        with_api_token.status().as_u16(),
        200,
        "the API token opens the metrics too"
    );
    let mut scraped = agent
        .get(&metrics)
        .header("Authorization", &format!("Bearer {}", metrics_token.trim()))
        .call()
        .unwrap();
    assert_eq!(scraped.status().as_u16(), 200);
    assert!(
        scraped
            .headers()
            .get("content-type")
            .is_some_and(|t| t.to_str().unwrap().starts_with("text/plain; version=0.0.4")),
        "{:?}",
        scraped.headers()
    );
    let text = scraped.body_mut().read_to_string().unwrap();
    assert!(
        text.contains("\nherald_peers 0\n")
            && text.contains("herald_bulletins_stored_total{origin=\"local\"}"),
        "{text}"
    );

    // Requests that do not parse are refused in the API's own JSON form, saying why.
    let bearer = format!("Bearer {}", token.trim());
    let refused = |mut response: ureq::http::Response<ureq::Body>| {
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap();
        let error: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
        (status, error["error"].as_str().unwrap_or_default().to_string())
    };
    // An export onto an existing file is refused unless asked, leaving the file as it was.
    let config_before = std::fs::read(dir.join("config.toml")).unwrap();
    let (status, error) = refused(
        agent
            .post(format!("http://127.0.0.1:{port}/v1/export"))
            .header("Authorization", &bearer)
            .send_json(serde_json::json!({ "path": dir.join("config.toml") }))
            .unwrap(),
    );
    assert_eq!(status, 409, "{error}");
    assert!(error.contains("exists"), "{error}");
    assert_eq!(std::fs::read(dir.join("config.toml")).unwrap(), config_before);
    let (status, error) = refused(
        agent
            .post(format!("http://127.0.0.1:{port}/v1/bulletins"))
            .header("Authorization", &bearer)
            .content_type("application/json")
            .send("{not json")
            .unwrap(),
    );
    assert_eq!(status, 400, "{error}");
    assert!(error.contains("not what this endpoint takes"), "{error}");
    let (status, error) = refused(
        agent
            .get(format!("http://127.0.0.1:{port}/v1/bulletins?limit=many"))
            .header("Authorization", &bearer)
            .call()
            .unwrap(),
    );
    assert_eq!(status, 400, "{error}");
    assert!(error.contains("query parameters do not parse"), "{error}");
    // One answer lists 10,000 at most (0, no limit, is not taken either).
    for limit in ["0", "10001"] {
        let (status, error) = refused(
            agent
                .get(format!("http://127.0.0.1:{port}/v1/bulletins?limit={limit}"))
                .header("Authorization", &bearer)
                .call()
                .unwrap(),
        );
        assert_eq!(status, 400, "{error}");
        assert!(
            error.contains("from 1 to 10000") && error.contains("export"),
            "{error}"
        );
    }
    // A watch checks its filters before it begins.
    let (status, error) = refused(
        agent
            .get(format!("http://127.0.0.1:{port}/v1/watch?kind=nope"))
            .header("Authorization", &bearer)
            .call()
            .unwrap(),
    );
    assert_eq!(status, 400, "{error}");
    assert!(error.contains("advisory"), "names the kinds: {error}");
    let unauthorised = agent
        .get(format!("http://127.0.0.1:{port}/v1/watch"))
        .call()
        .unwrap();
    assert_eq!(unauthorised.status().as_u16(), 401, "watching needs the token");
    let (status, error) = refused(
        agent
            .get(format!("http://127.0.0.1:{port}/v1/bulletins?kind=advisories"))
            .header("Authorization", &bearer)
            .call()
            .unwrap(),
    );
    assert_eq!(status, 400, "{error}");
    assert!(error.contains("no kind is named \"advisories\""), "{error}");
    let (status, error) = refused(
        agent
            .post(format!("http://127.0.0.1:{port}/v1/bulletins"))
            .header("Authorization", &bearer)
            .content_type("application/json")
            // Just over the limit: the node refuses it having read most of it, and the rest
            // fits the sockets' buffers, so its answer is read rather than a reset.
            .send(vec![
                b' ';
                2 * herald_protocol::MAX_REGISTRY_UPDATE_BYTES
                    + 64 * 1024
                    + 1024
            ])
            .unwrap(),
    );
    assert_eq!(status, 413, "{error}");
    assert!(
        error.contains("shorten it") && error.contains("a bulletin holds at most"),
        "{error}"
    );
    let (status, error) = refused(
        agent
            .post(format!("http://127.0.0.1:{port}/v1/registry"))
            .header("Authorization", &bearer)
            .content_type("application/json")
            .send(vec![
                b' ';
                2 * herald_protocol::MAX_REGISTRY_UPDATE_BYTES
                    + 64 * 1024
                    + 1024
            ])
            .unwrap(),
    );
    assert_eq!(status, 413, "{error}");
    assert!(error.contains("a signed registry update is at most"), "{error}");

    // The web page holds no data: it comes without the token, asks for it,
    // and may run only its own script.
    for (path, kind, mark) in [
        ("/", "text/html", "api.token"),
        ("/app.js", "text/javascript", "Authorization"),
        ("/style.css", "text/css", "body"),
    ] {
        let mut page = agent
            .get(format!("http://127.0.0.1:{port}{path}"))
            .call()
            .unwrap();
        assert_eq!(page.status().as_u16(), 200, "{path}");
        let header = |name: &str| {
            page.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        let body = page.body_mut().read_to_string().unwrap();
        assert!(body.contains(mark), "{path}");
        assert!(!body.contains(token.trim()), "{path} must not carry the token");
    }
}

/// The lines a child process writes to `output`, as they come (until it closes).
fn lines_of(output: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    lines
}

/// A running `herald run` whose log lines arrive on a channel.
struct RunningNode {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Lines read while waiting for another: a later wait may want them (a
    /// node can log "peer connected" before "herald is running").
    backlog: std::cell::RefCell<std::collections::VecDeque<String>>,
}

impl RunningNode {
    fn start(dir: &Path) -> Self {
        let mut child = Command::new(HERALD)
            .args(["run", "--dir", dir.to_str().unwrap()])
            .env("NO_COLOR", "1")
            .env("HERALD_LOG", "info,herald_node=debug,libp2p=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start herald run");
        let lines = lines_of(child.stderr.take().unwrap());
        Self {
            child,
            lines,
            backlog: Default::default(),
        }
    }

    /// Waits (bounded) for a log line containing every one of `needles`,
    /// earliest first, that no earlier wait returned.
    fn wait_for(&self, needles: &[&str]) -> String {
        let matches = |line: &str| needles.iter().all(|n| line.contains(n));
        {
            let mut backlog = self.backlog.borrow_mut();
            if let Some(at) = backlog.iter().position(|l| matches(l)) {
                return backlog.remove(at).unwrap();
            }
        }
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return line,
                Ok(line) => self.backlog.borrow_mut().push_back(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let said: Vec<String> = self.backlog.borrow().iter().rev().take(5).cloned().collect();
                    panic!(
                        "herald run exited before logging {needles:?}; its last lines, latest first: {said:#?}"
                    )
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no log line with {needles:?} within {WAIT:?}")
                }
            }
        }
    }

    fn stop(mut self) {
        // SIGTERM: the node stops cleanly and releases its store.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "herald run exited with {status}");
    }
}

impl Drop for RunningNode {
    /// A test that fails before it stops its nodes leaves none running.
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

fn kill_if_running(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn separate_processes_exchange_a_bulletin_published_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let base = testnet(tmp.path(), 2);
    let one = tmp.path().join("member-1");
    let two = tmp.path().join("member-2");
    let (one_s, two_s) = (one.to_str().unwrap(), two.to_str().unwrap());
    // Each new signing key is marked new in its store folder: its chain may
    // start with no peer.
    let mark = |dir: &Path| {
        std::fs::read_dir(dir.join("store"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("unused-key-")
            })
    };
    assert!(mark(&one).is_some() && mark(&two).is_some());
    // As for a store lost and made again: the first node checks with a peer,
    // or is told the key is new, before numbering.
    std::fs::remove_file(mark(&one).unwrap()).unwrap();

    // No node runs yet: publishing says so and what to do.
    let refused = publish_outreach(one_s, "t");
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("herald run"), "{}", stderr(&refused));

    // Nor has any run yet: reading works (the installed genesis), finding nothing.
    let empty = herald(&["list", "--dir", one_s]);
    assert!(empty.status.success(), "{}", stderr(&empty));
    assert!(
        stdout(&empty).contains("No bulletins match"),
        "{}",
        stdout(&empty)
    );

    let first = RunningNode::start(&one);
    first.wait_for(&["herald is running"]);
    api_refuses_bad_requests(&one, base + 101);
    // Alone (the second node is not running yet), with no chain to check.
    let unchecked = publish_outreach(one_s, "t");
    assert!(!unchecked.status.success());
    assert!(
        stderr(&unchecked).contains("could not check its signing key's chain")
            && stderr(&unchecked).contains("--new-chain"),
        "{}",
        stderr(&unchecked)
    );

    let csaf = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bsi-2022-0001.json");
    let published = herald(&[
        "publish",
        "--dir",
        one_s,
        "--kind",
        "advisory",
        "--status",
        "confirmed",
        "--title",
        "CSAF advisory carried byte for byte",
        "--severity",
        "high",
        "--tlp",
        "green",
        "--cve",
        "CVE-2021-44228",
        "--body-file",
        csaf,
        "--audience",
        "MEMBER-2",
        "--new-chain",
    ]);
    assert!(published.status.success(), "{}", stderr(&published));
    let id = stdout(&published).trim().to_string();
    assert_eq!(id.len(), 64, "publish prints the id: {id:?}");

    // The second process gets it by sync as it connects (its log says so),
    // then serves it.
    let second = RunningNode::start(&two);
    second.wait_for(&["herald is running"]);
    second.wait_for(&["stored", &id[..10]]);
    let shown = herald(&["show", "--dir", two_s, &id, "--json"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let view: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(view["id"], id);
    assert_eq!(view["member_name"], "member-1");
    assert_eq!(view["content_type"], "application/csaf+json");
    assert_eq!(
        view["payload"].as_str().unwrap().as_bytes(),
        std::fs::read(csaf).unwrap()
    );
    // The node's status, as text and as JSON.
    let status = herald(&["status", "--dir", two_s]);
    assert!(status.status.success(), "{}", stderr(&status));
    let text = stdout(&status);
    assert!(
        text.contains("member       member-2 (")
            && text.contains("peers        1 connected")
            && text.contains("own chain    numbered up to 0, ")
            && text.contains("tree         sends to 1 peers in full and 0 by id; 1 send to it in full"),
        "{text}"
    );
    let status = herald(&["status", "--dir", two_s, "--json"]);
    let view: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(view["own_chain"]["numbered_up_to"], 0, "{view}");
    assert_eq!(view["tree"]["receives_from"], 1, "{view}");
    assert!(view["bulletins"].as_u64().unwrap() >= 1, "{view}");

    // By the start of its id, as `list` shows it, through the API.
    let by_prefix = herald(&["show", "--dir", two_s, &id[..10]]);
    assert!(by_prefix.status.success(), "{}", stderr(&by_prefix));
    assert!(stdout(&by_prefix).contains(&id), "{}", stdout(&by_prefix));
    assert!(
        stdout(&by_prefix).contains("  kind        vulnerability-advisory, status confirmed\n")
            && stdout(&by_prefix).contains("  for         member-2 ("),
        "{}",
        stdout(&by_prefix)
    );
    let confirmed = publish_outreach(two_s, "from a key marked new");
    assert!(confirmed.status.success(), "{}", stderr(&confirmed));
    assert!(mark(&two).is_none(), "the mark outlived the key's first bulletin");
    first.wait_for(&["stored", &stdout(&confirmed).trim()[..10]]);
    // What came in the last hour (both, whenever made).
    let arrived = |dir: &str, period: &str| -> Vec<String> {
        let listed = herald(&["list", "--dir", dir, "--json", "--arrived-since", period]);
        assert!(listed.status.success(), "{}", stderr(&listed));
        let views: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        let ids = views.as_array().unwrap().iter();
        ids.map(|v| v["id"].as_str().unwrap().to_string()).collect()
    };
    let came = arrived(two_s, "1h");
    assert_eq!(came, [stdout(&confirmed).trim(), &id], "latest arrival first");
    let bad = herald(&["list", "--dir", two_s, "--arrived-since", "yesterday"]);
    assert!(!bad.status.success() && stderr(&bad).contains("not a duration like"));

    first.stop();
    second.stop();
    assert_eq!(arrived(two_s, "1h"), came, "offline, from the store");

    // Offline, straight from the store.
    let listed = herald(&["list", "--dir", two_s, "--json", "--kind", "advisory"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let views: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(views.as_array().unwrap().len(), 1);
    assert_eq!(views[0]["id"], id);
    let missing = herald(&["show", "--dir", two_s, &"00".repeat(32)]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("no bulletin"), "{}", stderr(&missing));
    let by_prefix = herald(&["show", "--dir", two_s, &id[..9].to_uppercase(), "--json"]);
    assert!(by_prefix.status.success(), "{}", stderr(&by_prefix));
    let view: serde_json::Value = serde_json::from_slice(&by_prefix.stdout).unwrap();
    assert_eq!(view["id"], id);
    // A member by its name.
    let named = herald(&["list", "--dir", two_s, "--json", "--member", "MEMBER-1"]);
    assert!(named.status.success(), "{}", stderr(&named));
    let views: serde_json::Value = serde_json::from_slice(&named.stdout).unwrap();
    assert!(
        views.as_array().unwrap().iter().any(|v| v["id"] == id)
            && views
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v["member_name"] == "member-1"),
        "{views}"
    );
    let nobody = herald(&["list", "--dir", two_s, "--member", "nobody"]);
    assert!(!nobody.status.success());
    assert!(
        stderr(&nobody).contains("no member has this name") && stderr(&nobody).contains("member-2"),
        "{}",
        stderr(&nobody)
    );

    // An auditor with the bundle and the genesis hash alone.
    let bundle = tmp.path().join("audit.hbundle");
    let exported = herald(&["export", "--dir", two_s, "-o", bundle.to_str().unwrap()]);
    assert!(exported.status.success(), "{}", stderr(&exported));
    // An existing file is replaced only when asked; a member by its name.
    let again = herald(&["export", "--dir", two_s, "-o", bundle.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    let again = herald(&[
        "export",
        "--dir",
        two_s,
        "--force",
        "-o",
        bundle.to_str().unwrap(),
    ]);
    assert!(again.status.success(), "{}", stderr(&again));
    let one_member = tmp.path().join("member-1.hbundle");
    let by_name = herald(&[
        "export",
        "--dir",
        two_s,
        "--member",
        "member-1",
        "-o",
        one_member.to_str().unwrap(),
    ]);
    assert!(by_name.status.success(), "{}", stderr(&by_name));
    assert!(
        stdout(&by_name).starts_with("Wrote 1 bulletins"),
        "{}",
        stdout(&by_name)
    );
    // What came in the last hour: both; in the future: none.
    for (period, count) in [("1h", 2), ("0s", 0)] {
        let arrived = herald(&[
            "export",
            "--dir",
            two_s,
            "--force",
            "--arrived-since",
            period,
            "-o",
            one_member.to_str().unwrap(),
        ]);
        assert!(arrived.status.success(), "{}", stderr(&arrived));
        assert!(
            stdout(&arrived).starts_with(&format!("Wrote {count} bulletins")),
            "{}",
            stdout(&arrived)
        );
    }
    let config = std::fs::read_to_string(two.join("config.toml")).unwrap();
    let genesis = config
        .lines()
        .find_map(|l| l.strip_prefix("genesis_hash = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("genesis_hash in config.toml");
    let provenance = tmp.path().join("provenance.jsonl");
    let audited = herald(&[
        "audit",
        bundle.to_str().unwrap(),
        "--genesis-hash",
        genesis,
        "--provenance",
        provenance.to_str().unwrap(),
    ]);
    assert!(audited.status.success(), "{}", stderr(&audited));
    assert!(
        stdout(&audited).contains("Verified 2 bulletins"),
        "{}",
        stdout(&audited)
    );
    let lines = std::fs::read_to_string(&provenance).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&provenance).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the provenance report is its owner's only");
    }
    let record: serde_json::Value = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["id"].as_str() == Some(id.as_str()))
        .expect("the advisory's provenance");
    assert_eq!(
        (record["id"].as_str(), record["member_name"].as_str()),
        (Some(id.as_str()), Some("member-1"))
    );
    let wrong = herald(&[
        "audit",
        bundle.to_str().unwrap(),
        "--genesis-hash",
        &"11".repeat(32),
    ]);
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("check the genesis hash"),
        "{}",
        stderr(&wrong)
    );

    // An audit that cannot finish leaves the provenance file as it was, and
    // no temporary file beside it.
    let before = std::fs::read(&provenance).unwrap();
    let wrong = herald(&[
        "audit",
        bundle.to_str().unwrap(),
        "--genesis-hash",
        &"11".repeat(32),
        "--provenance",
        provenance.to_str().unwrap(),
    ]);
    assert!(!wrong.status.success());
    assert_eq!(std::fs::read(&provenance).unwrap(), before);
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("provenance"))
        .collect();
    assert_eq!(names, ["provenance.jsonl"]);
    // `-` is standard output.
    let to_stdout = herald(&[
        "audit",
        bundle.to_str().unwrap(),
        "--genesis-hash",
        genesis,
        "--provenance",
        "-",
        "--json",
    ]);
    assert!(to_stdout.status.success(), "{}", stderr(&to_stdout));
    assert!(
        stdout(&to_stdout).contains(&format!("\"id\":\"{id}\"")),
        "{}",
        stdout(&to_stdout)
    );
    // The bundle named as its own provenance file is refused, unchanged.
    let bundle_bytes = std::fs::read(&bundle).unwrap();
    let itself = herald(&[
        "audit",
        bundle.to_str().unwrap(),
        "--genesis-hash",
        genesis,
        "--provenance",
        bundle.to_str().unwrap(),
    ]);
    assert!(!itself.status.success());
    assert!(
        stderr(&itself).contains("is the bundle being audited"),
        "{}",
        stderr(&itself)
    );
    assert_eq!(std::fs::read(&bundle).unwrap(), bundle_bytes);
}

/// A `herald watch` process: its standard output's lines, as they come.
struct Watching {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Watching {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(HERALD)
            .arg("watch")
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start herald watch");
        let lines = lines_of(child.stdout.take().unwrap());
        Self { child, lines }
    }

    /// The next line printed (bounded wait).
    fn next(&self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("herald watch printed no line within {WAIT:?}: {e}"))
    }

    /// Waits (bounded) for it to end; what it wrote to standard error, and
    /// whether it succeeded.
    fn ended(mut self) -> (String, bool) {
        match self.lines.recv_timeout(WAIT) {
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
            other => panic!("herald watch did not end: {other:?}"),
        }
        let status = self.child.wait().unwrap();
        let mut error = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut error).unwrap();
        (error, status.success())
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

/// `herald watch --reconnect` carries on after a feed the node ended on a failure it reports
/// (its store could not be read), from where that feed got to; after three such failures in a
/// minute it stops, saying so. The node here is a stand-in on the API's address that answers
/// every feed so.
#[test]
fn a_reconnecting_watch_carries_on_after_a_failure_the_node_reports() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    testnet(tmp.path(), 1);
    let dir = tmp.path().join("member-1");
    let listen = herald_node::config::Config::load(&dir).unwrap().api.listen;
    let listener = TcpListener::bind(listen).unwrap();
    std::fs::write(dir.join(herald_node::api::TOKEN_FILE), "ab".repeat(32)).unwrap();
    let (asked, feeds) = mpsc::channel();
    std::thread::spawn(move || {
        let mut served = 0u64;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            head.read_line(&mut request).unwrap();
            let mut line = String::new();
            while head.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let target = request.split_whitespace().nth(1).unwrap_or_default().to_string();
            let body = if target.starts_with("/v1/watch") {
                served += 1;
                let _ = asked.send(target);
                format!(
                    "{{\"resume\":{}}}\n{{\"error\":\"the node could not read its store: a test\",\"fell_behind\":false}}\n",
                    1000 + served
                )
            } else {
                "{}".to_string()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let watching = Watching::start(&["--dir", dir.to_str().unwrap(), "--reconnect"]);
    let (error, success) = watching.ended();
    assert!(!success, "{error}");
    assert!(
        error.contains("could not read its store: a test (3 times in a minute: the watch stops"),
        "{error}"
    );
    assert_eq!(error.matches("(watching again)").count(), 2, "{error}");
    let targets: Vec<String> = feeds.try_iter().collect();
    assert_eq!(targets.len(), 3, "{targets:?}");
    // Each feed again from where the one before got to.
    assert!(
        targets[1].contains("resume=1001") && targets[2].contains("resume=1002"),
        "{targets:?}"
    );
}

#[test]
fn watch_prints_each_new_bulletin_that_passes_its_filters_as_it_arrives() {
    let tmp = tempfile::tempdir().unwrap();
    let base = testnet(tmp.path(), 2);
    let one = tmp.path().join("member-1");
    let two = tmp.path().join("member-2");
    let (one_s, two_s) = (one.to_str().unwrap(), two.to_str().unwrap());
    // No node runs: a clear error.
    let (error, ok) = Watching::start(&["--dir", two_s]).ended();
    assert!(!ok && error.contains("herald run"), "{error}");

    let first = RunningNode::start(&one);
    first.wait_for(&["herald is running"]);
    let second = RunningNode::start(&two);
    second.wait_for(&["herald is running"]);
    let before = publish_outreach(one_s, "published before the watch");
    assert!(before.status.success(), "{}", stderr(&before));
    let before = stdout(&before).trim().to_string();
    second.wait_for(&["stored", &before[..10]]);

    // Advisories only, as JSON; and everything, from the last hour first.
    let advisories = Watching::start(&["--dir", two_s, "--json", "--kind", "advisory"]);
    second.wait_for(&["a watch began"]);
    let everything = Watching::start(&["--dir", two_s, "--since", "1h"]);
    second.wait_for(&["a watch began"]);
    // Counted as open, for the metrics.
    let metrics = ureq::get(format!("http://127.0.0.1:{}/metrics", base + 102))
        .header(
            "Authorization",
            &format!(
                "Bearer {}",
                std::fs::read_to_string(two.join("api.token")).unwrap().trim()
            ),
        )
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(metrics.contains("herald_watches_open 2\n"), "{metrics}");
    let line = everything.next();
    assert!(
        line.contains("published before the watch") && line.contains(&before[..10]),
        "{line}"
    );

    let skipped = publish_outreach(one_s, "not an advisory");
    assert!(skipped.status.success(), "{}", stderr(&skipped));
    let advisory = |dir: &str, title: &str| {
        let published = herald(&[
            "publish",
            "--dir",
            dir,
            "--kind",
            "advisory",
            "--title",
            title,
            "--severity",
            "high",
            "--tlp",
            "green",
        ]);
        assert!(published.status.success(), "{}", stderr(&published));
        stdout(&published).trim().to_string()
    };
    // By gossip from the other node, then (once the watched node has it, so
    // that the two arrive in this order) published by the watched node itself.
    let printed = |id: &str, title: &str, member: &str| {
        let view: serde_json::Value = serde_json::from_str(&advisories.next()).unwrap();
        assert_eq!(
            (
                view["id"].as_str(),
                view["title"].as_str(),
                view["member_name"].as_str()
            ),
            (Some(id), Some(title), Some(member)),
            "{view}"
        );
    };
    let received = advisory(one_s, "an advisory from member-1");
    printed(&received, "an advisory from member-1", "member-1");
    let own = advisory(two_s, "an advisory from member-2");
    printed(&own, "an advisory from member-2", "member-2");
    let titles: Vec<String> = (0..3).map(|_| everything.next()).collect();
    for title in [
        "not an advisory",
        "an advisory from member-1",
        "an advisory from member-2",
    ] {
        assert!(titles.iter().any(|l| l.contains(title)), "{title} in {titles:?}");
    }

    // What came in the last hour, whenever made, oldest arrival first.
    let came = Watching::start(&[
        "--dir",
        two_s,
        "--json",
        "--kind",
        "advisory",
        "--arrived-since",
        "1h",
    ]);
    for id in [&received, &own] {
        let view: serde_json::Value = serde_json::from_str(&came.next()).unwrap();
        assert_eq!(view["id"].as_str(), Some(id.as_str()), "{view}");
    }

    // The node stops (its watches do not hold it up): each watch says so and fails.
    second.stop();
    for watching in [advisories, everything, came] {
        let (error, ok) = watching.ended();
        assert!(!ok && error.contains("the node stopped"), "{error}");
    }
    first.stop();
}

#[test]
fn watch_with_reconnect_carries_on_across_a_restart_of_the_node() {
    let tmp = tempfile::tempdir().unwrap();
    testnet(tmp.path(), 1);
    let dir = tmp.path().join("member-1");
    let dir_s = dir.to_str().unwrap();
    let published = |title: &str| {
        let out = publish_outreach(dir_s, title);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    let id_of = |line: String| {
        let view: serde_json::Value = serde_json::from_str(&line).unwrap();
        view["id"].as_str().unwrap().to_string()
    };
    // Begun before the node runs: it waits for it, and prints what the node
    // takes in from then on, even before its feed begins.
    let watching = Watching::start(&["--dir", dir_s, "--json", "--reconnect"]);
    let node = RunningNode::start(&dir);
    node.wait_for(&["herald is running"]);
    let first = published("before the restart");
    assert_eq!(id_of(watching.next()), first);
    node.wait_for(&["a watch began"]);

    node.stop();
    let node = RunningNode::start(&dir);
    node.wait_for(&["herald is running"]);
    // Published before or after the watch is back: printed all the same;
    // what it printed before (listed again) is not printed twice.
    let meanwhile = published("while the watch comes back");
    node.wait_for(&["a watch began", "resume=Some"]);
    let after = published("after the restart");
    assert_eq!(
        [id_of(watching.next()), id_of(watching.next())],
        [meanwhile, after]
    );
    node.stop();
}

/// A CSAF document gives its bulletin its title, TLP label, severity and CVE ids unless the
/// command line gives them, and is never published under a label less strict than its own.
#[test]
fn a_csaf_document_names_its_own_title_label_and_severity() {
    let tmp = tempfile::tempdir().unwrap();
    testnet(tmp.path(), 1);
    let dir = tmp.path().join("member-1");
    let dir_s = dir.to_str().unwrap();
    let node = RunningNode::start(&dir);
    node.wait_for(&["herald is running"]);
    let csaf = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bsi-2022-0001.json");

    let published = herald(&["publish", "--dir", dir_s, "--body-file", csaf]);
    assert!(published.status.success(), "{}", stderr(&published));
    let id = stdout(&published).trim().to_string();
    let shown = herald(&["show", "--dir", dir_s, &id, "--json"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let view: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(
        view["title"], "CVRF-CSAF-Converter: XML External Entities Vulnerability",
        "{view}"
    );
    // The document is TLP:WHITE (CLEAR) and scores 6.1 (CVSS v3: medium).
    assert_eq!(
        (&view["tlp"], &view["severity"]),
        (&"CLEAR".into(), &"medium".into()),
        "{view}"
    );
    assert!(
        view.to_string().contains("CVE-2022-27193") && view.to_string().contains("vulnerability-advisory"),
        "{view}"
    );
    assert_eq!(
        view["payload"].as_str().unwrap().as_bytes(),
        std::fs::read(csaf).unwrap(),
        "byte for byte"
    );

    // What answers it is shown with it.
    let follow_up = herald(&[
        "publish",
        "--dir",
        dir_s,
        "--kind",
        "follow-up",
        "--on",
        &id,
        "--title",
        "seen",
        "--severity",
        "low",
        "--tlp",
        "clear",
    ]);
    assert!(follow_up.status.success(), "{}", stderr(&follow_up));
    let newer = herald(&[
        "publish",
        "--dir",
        dir_s,
        "--body-file",
        csaf,
        "--supersedes",
        &id,
    ]);
    assert!(newer.status.success(), "{}", stderr(&newer));
    let shown = stdout(&herald(&["show", "--dir", dir_s, &id]));
    assert!(
        shown.contains(&format!("  superseded by {}", stdout(&newer).trim()))
            && shown.contains(&format!("  follow-up   {}", stdout(&follow_up).trim())),
        "{shown}"
    );

    // Marked RED: refused under a wider label, by the command line and by the node's API.
    let red_text =
        std::fs::read_to_string(csaf)
            .unwrap()
            .replacen("\"label\": \"WHITE\"", "\"label\": \"RED\"", 1);
    assert!(red_text.contains("\"RED\""), "the sample's label was found");
    let red = tmp.path().join("red.json");
    std::fs::write(&red, &red_text).unwrap();
    let red_s = red.to_str().unwrap();
    let wider = herald(&["publish", "--dir", dir_s, "--body-file", red_s, "--tlp", "amber"]);
    assert!(!wider.status.success());
    assert!(
        stderr(&wider).contains("marked TLP:RED") && stderr(&wider).contains("more widely"),
        "{}",
        stderr(&wider)
    );
    // Straight to the API (as the web page's form publishes): the node checks it too.
    let draft = herald_node::Draft {
        kind: herald_protocol::Kind::Outreach,
        tlp: herald_protocol::Tlp::Green,
        severity: herald_protocol::Severity::Low,
        title: "t".into(),
        references: Vec::new(),
        supersedes: None,
        expires: None,
        audience: Vec::new(),
        payload: herald_protocol::Payload {
            content_type: "application/json".into(),
            bytes: red_text.clone().into_bytes(),
        },
        created: None,
    };
    let token = std::fs::read_to_string(dir.join("api.token")).unwrap();
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    let api = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("listen = \"127.0.0.1:"))
        .and_then(|l| l.strip_suffix('"'))
        .filter(|port| port.parse::<u16>().is_ok_and(|p| p > 0))
        .expect("the API's listen address");
    let mut answer = ureq::Agent::from(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    )
    .post(format!("http://127.0.0.1:{api}/v1/bulletins"))
    .header("Authorization", &format!("Bearer {}", token.trim()))
    .send_json(&draft)
    .unwrap();
    let body = answer.body_mut().read_to_string().unwrap();
    assert_eq!(answer.status().as_u16(), 400, "{body}");
    assert!(body.contains("more widely"), "{body}");
    let as_red = herald(&[
        "publish",
        "--dir",
        dir_s,
        "--body-file",
        red_s,
        "--severity",
        "critical",
    ]);
    assert!(as_red.status.success(), "{}", stderr(&as_red));
    let view: serde_json::Value =
        serde_json::from_slice(&herald(&["show", "--dir", dir_s, stdout(&as_red).trim(), "--json"]).stdout)
            .unwrap();
    assert_eq!(
        (&view["tlp"], &view["severity"]),
        (&"RED".into(), &"critical".into()),
        "{view}"
    );

    // A document title a bulletin cannot carry: the command line asks for one.
    let long = tmp.path().join("long.json");
    std::fs::write(
        &long,
        std::fs::read_to_string(csaf).unwrap().replacen(
            "CVRF-CSAF-Converter: XML External Entities Vulnerability",
            &"a very long title ".repeat(20),
            1,
        ),
    )
    .unwrap();
    let too_long = herald(&["publish", "--dir", dir_s, "--body-file", long.to_str().unwrap()]);
    assert!(!too_long.status.success());
    assert!(
        stderr(&too_long).contains("CSAF document's title") && stderr(&too_long).contains("--title"),
        "{}",
        stderr(&too_long)
    );

    // Searched for: the three that carry the CVE id (the document's), not the follow-up.
    let searched = herald(&["list", "--dir", dir_s, "--json", "--text", "cve-2022-27193"]);
    assert!(searched.status.success(), "{}", stderr(&searched));
    let views: serde_json::Value = serde_json::from_slice(&searched.stdout).unwrap();
    assert_eq!(views.as_array().unwrap().len(), 3, "{views}");

    // Exported through the running node, by member name.
    let bundle = tmp.path().join("member-1.hbundle");
    let exported = herald(&[
        "export",
        "--dir",
        dir_s,
        "--member",
        "Member-1",
        "-o",
        bundle.to_str().unwrap(),
    ]);
    assert!(exported.status.success(), "{}", stderr(&exported));
    assert!(
        stdout(&exported).starts_with("Wrote 4 bulletins"),
        "{}",
        stdout(&exported)
    );
    let again = herald(&["export", "--dir", dir_s, "-o", bundle.to_str().unwrap()]);
    assert!(
        !again.status.success() && stderr(&again).contains("--force"),
        "{}",
        stderr(&again)
    );

    // Plain content names nothing: the command line asks for what it needs.
    let bare = herald(&["publish", "--dir", dir_s, "--body", "a note"]);
    assert!(!bare.status.success());
    assert!(stderr(&bare).contains("--tlp"), "{}", stderr(&bare));
    node.stop();
}

/// A bulletin's content is another member's text: `herald show` prints its
/// escape sequences (clear the screen, set the clipboard by OSC 52) and
/// bidirectional controls as `\u{..}` escapes, and writes it exact to a file.
#[test]
fn show_prints_the_controls_of_a_content_as_escapes() {
    let tmp = tempfile::tempdir().unwrap();
    testnet(tmp.path(), 1);
    let dir = tmp.path().join("member-1");
    let dir_s = dir.to_str().unwrap();
    let content =
        "before\u{1b}]52;c;ZXZpbA==\u{7}\u{1b}[2J\u{9b}31m\u{7f}\u{202e}txt.exe\r\nsecond line\tend\n";
    let body = tmp.path().join("hostile.txt");
    std::fs::write(&body, content).unwrap();
    let node = RunningNode::start(&dir);
    node.wait_for(&["herald is running"]);
    let published = herald(&[
        "publish",
        "--dir",
        dir_s,
        "--kind",
        "outreach",
        "--title",
        "controls in the content",
        "--severity",
        "low",
        "--tlp",
        "clear",
        "--body-file",
        body.to_str().unwrap(),
        "--new-chain",
    ]);
    assert!(published.status.success(), "{}", stderr(&published));
    let id = stdout(&published).trim().to_string();

    // To a pipe (or a terminal): every control is visible, none acts.
    let shown = herald(&["show", "--dir", dir_s, &id]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let text = stdout(&shown);
    assert!(
        text.ends_with(
            "\nbefore\\u{1b}]52;c;ZXZpbA==\\u{7}\\u{1b}[2J\\u{9b}31m\\u{7f}\\u{202e}txt.exe\r\nsecond line\tend\n\n"
        ),
        "{text:?}"
    );
    for c in ['\u{1b}', '\u{7}', '\u{9b}', '\u{7f}', '\u{202e}'] {
        assert!(!text.contains(c), "{c:?} printed as it is: {text:?}");
    }

    // To a file: the content exact.
    let saved = tmp.path().join("shown.txt");
    let file = std::fs::File::create(&saved).unwrap();
    let status = Command::new(HERALD)
        .args(["show", "--dir", dir_s, &id])
        .stdout(file)
        .status()
        .unwrap();
    assert!(status.success());
    let written = std::fs::read_to_string(&saved).unwrap();
    assert!(written.ends_with(&format!("\n{content}\n")), "{written:?}");
    node.stop();
}

#[test]
fn bad_command_line_input_gets_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let no_config = herald(&["run", "--dir", dir]);
    assert!(!no_config.status.success());
    assert!(
        stderr(&no_config).contains("herald init"),
        "{}",
        stderr(&no_config)
    );

    // A name no registry would take is refused before anything is written.
    let unnamed = tmp.path().join("unnamed");
    for name in ["", "CERT\u{202e}X", "X".repeat(129).as_str()] {
        let refused = herald(&["init", "--dir", unnamed.to_str().unwrap(), "--member", name]);
        assert!(!refused.status.success(), "{name:?} was taken");
        assert!(
            stderr(&refused).contains("member name must be 1 to 128 bytes"),
            "{}",
            stderr(&refused)
        );
        assert!(!unnamed.exists(), "{name:?}: something was written");
    }

    // Names a registry takes (a combining accent, a soft hyphen, a zero-width
    // space) make a configuration that every later command reads.
    for (i, name) in ["Jose\u{301}", "soft\u{ad}hyphen", "zero\u{200b}width"]
        .into_iter()
        .enumerate()
    {
        let named = tmp.path().join(format!("named-{i}"));
        let named_s = named.to_str().unwrap();
        let made = herald(&["init", "--dir", named_s, "--member", name]);
        assert!(made.status.success(), "{name:?}: {}", stderr(&made));
        // It reads the configuration, and stops only at the missing genesis.
        let later = herald(&["list", "--dir", named_s]);
        assert!(
            stderr(&later).contains("herald genesis install"),
            "{name:?}: {}",
            stderr(&later)
        );
    }

    // A local network whose ports would run past 65535 is refused before
    // anything is written, saying which base port works.
    let high = tmp.path().join("high");
    for (nodes, base, highest) in [("64", "65400", "65371"), ("3", "65500", "65432")] {
        let refused = herald(&[
            "testnet",
            "--dir",
            high.to_str().unwrap(),
            "--nodes",
            nodes,
            "--base-port",
            base,
        ]);
        assert!(!refused.status.success(), "{nodes} nodes from {base} were made");
        assert!(
            stderr(&refused).contains(&format!("choose a base port of at most {highest}")),
            "{}",
            stderr(&refused)
        );
        assert!(!high.exists(), "{nodes} nodes from {base}: something was written");
    }

    let made = herald(&["init", "--dir", dir, "--member", "CERT-X"]);
    assert!(made.status.success(), "{}", stderr(&made));
    // What the node holds is for its user alone, whatever the umask.
    let private = tmp.path().join("private");
    let made_private = herald(&["init", "--dir", private.to_str().unwrap(), "--member", "CERT-P"]);
    assert!(made_private.status.success(), "{}", stderr(&made_private));
    for held in [&private, &private.join("store"), &private.join("keys")] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(held).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", held.display());
    }
    let again = herald(&["init", "--dir", dir, "--member", "CERT-X"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already holds"), "{}", stderr(&again));
    // Keys without a configuration (an init stopped part way, keys put back by hand): refused,
    // and every one of them left where it was.
    let keys_only = tmp.path().join("keys-only");
    let made = herald(&["init", "--dir", keys_only.to_str().unwrap(), "--member", "CERT-K"]);
    assert!(made.status.success(), "{}", stderr(&made));
    std::fs::remove_file(keys_only.join("config.toml")).unwrap();
    let key_files = [
        "keys/member.key",
        "keys/signing.key",
        "keys/node.key",
        "member.json",
    ];
    let before: Vec<Vec<u8>> = key_files
        .iter()
        .map(|f| std::fs::read(keys_only.join(f)).unwrap())
        .collect();
    let refused = herald(&["init", "--dir", keys_only.to_str().unwrap(), "--member", "CERT-K"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("already exists"),
        "{}",
        stderr(&refused)
    );
    for (file, bytes) in key_files.iter().zip(&before) {
        assert_eq!(&std::fs::read(keys_only.join(file)).unwrap(), bytes, "{file}");
    }

    let no_genesis = herald(&["run", "--dir", dir]);
    assert!(!no_genesis.status.success());
    assert!(stderr(&no_genesis).contains("genesis"), "{}", stderr(&no_genesis));
    let no_genesis = herald(&["list", "--dir", dir]);
    assert!(!no_genesis.status.success());
    assert!(
        stderr(&no_genesis).contains("herald genesis install"),
        "{}",
        stderr(&no_genesis)
    );

    // Output to a reader that has gone (`| head`): the command ends quietly, with the status of
    // a command stopped by SIGPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let other = tmp.path().join("other");
    let closed = Command::new(HERALD)
        .args(["init", "--dir", other.to_str().unwrap(), "--member", "CERT-Y"])
        .stdout(writer)
        .output()
        .expect("run herald");
    assert_eq!(closed.status.code(), Some(141), "{}", stderr(&closed));
    assert!(stderr(&closed).is_empty(), "{}", stderr(&closed));
    assert!(other.join("member.json").exists());

    // A genesis the founders' approvals could never make valid is refused at once.
    let descriptor = tmp.path().join("member.json");
    let descriptor = descriptor.to_str().unwrap();
    let proposal = tmp.path().join("genesis.proposal");
    for (args, says) in [
        (vec!["--threshold", "0", descriptor], "must be above half"),
        (
            vec!["--threshold", "1", descriptor, descriptor],
            "already in the registry",
        ),
    ] {
        let mut all = vec!["genesis", "propose", "--out", proposal.to_str().unwrap()];
        all.extend(args);
        let refused = herald(&all);
        assert!(!refused.status.success(), "{all:?} was proposed");
        assert!(stderr(&refused).contains(says), "{}", stderr(&refused));
        assert!(!proposal.exists(), "{all:?} wrote a proposal");
    }

    // A content file too large for any bulletin is refused before the node is asked.
    let big = tmp.path().join("big.txt");
    std::fs::write(&big, vec![b'x'; 300_000]).unwrap();
    let too_big = herald(&[
        "publish",
        "--dir",
        dir,
        "--kind",
        "advisory",
        "--title",
        "t",
        "--severity",
        "high",
        "--tlp",
        "clear",
        "--body-file",
        big.to_str().unwrap(),
    ]);
    assert!(!too_big.status.success());
    assert!(
        stderr(&too_big).contains("a bulletin holds at most 262144 bytes"),
        "{}",
        stderr(&too_big)
    );

    // A genesis some founders have not approved yet says who they are.
    let both = tmp.path().join("both.proposal");
    let both_s = both.to_str().unwrap();
    let other_descriptor = other.join("member.json");
    let proposed = herald(&[
        "genesis",
        "propose",
        "--threshold",
        "2",
        "--out",
        both_s,
        descriptor,
        other_descriptor.to_str().unwrap(),
    ]);
    assert!(proposed.status.success(), "{}", stderr(&proposed));
    let approved = herald(&["genesis", "approve", "--dir", dir, both_s]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    assert!(
        stdout(&approved).contains("still to approve it: CERT-Y ("),
        "{}",
        stdout(&approved)
    );
    for verb in ["verify", "install"] {
        let mut args = vec!["genesis", verb];
        if verb == "install" {
            args.extend(["--dir", dir]);
        }
        args.push(both_s);
        let incomplete = herald(&args);
        assert!(!incomplete.status.success(), "{verb} took an incomplete genesis");
        assert!(
            stderr(&incomplete).contains("still to approve it: CERT-Y"),
            "{verb}: {}",
            stderr(&incomplete)
        );
    }

    let bad_id = herald(&["show", "--dir", dir, "not-an-id"]);
    assert!(!bad_id.status.success());
    assert!(stderr(&bad_id).contains("bulletin id"), "{}", stderr(&bad_id));
}

/// Invariant 9: a bulletin the API acknowledged is on disk. Publish through the
/// API from several threads, kill the node with SIGKILL mid-stream, restart:
/// every acknowledged id is there, the store opens, and the node's chain goes
/// on without a number used twice or skipped.
#[test]
fn nothing_acknowledged_is_lost_when_the_node_is_killed() {
    use std::sync::{Arc, Mutex};
    let tmp = tempfile::tempdir().unwrap();
    let base = testnet(tmp.path(), 1);
    let dir = tmp.path().join("member-1");
    let api = format!("http://127.0.0.1:{}/v1/bulletins", base + 101);
    for round in 0..3 {
        let node = RunningNode::start(&dir);
        node.wait_for(&["herald is running"]);
        let token = std::fs::read_to_string(dir.join("api.token")).unwrap();
        let acked: Arc<Mutex<Vec<String>>> = Arc::default();
        let (first_acks, enough) = mpsc::channel::<()>();
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let (api, acked, first_acks) = (api.clone(), Arc::clone(&acked), first_acks.clone());
                let authorization = format!("Bearer {token}");
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .timeout_global(Some(Duration::from_secs(5)))
                        .build()
                        .into();
                    for i in 0.. {
                        let draft = serde_json::json!({
                            "kind": {"type": "outreach"},
                            "tlp": "CLEAR",
                            "severity": "low",
                            "title": format!("round {round} writer {t} number {i}"),
                            "payload": {"content_type": "text/plain", "bytes": "6869"},
                        });
                        let Ok(mut response) = agent
                            .post(&api)
                            .header("Authorization", &authorization)
                            .send_json(&draft)
                        else {
                            return;
                        };
                        let Ok(body) = response.body_mut().read_json::<serde_json::Value>() else {
                            return;
                        };
                        let id = body["id"].as_str().unwrap().to_string();
                        let mut acked = acked.lock().unwrap();
                        acked.push(id);
                        if acked.len() == 40 {
                            let _ = first_acks.send(());
                        }
                    }
                })
            })
            .collect();
        enough.recv_timeout(WAIT).expect("40 acknowledgements");
        let mut node = node;
        node.child.kill().unwrap();
        node.child.wait().unwrap();
        for w in writers {
            w.join().unwrap();
        }
        let acked = acked.lock().unwrap().clone();
        assert!(acked.len() >= 40);
        // Offline, straight from the store: every acknowledged id is there.
        let listed = herald(&[
            "list",
            "--dir",
            dir.to_str().unwrap(),
            "--json",
            "--limit",
            "10000",
        ]);
        assert!(listed.status.success(), "round {round}: {}", stderr(&listed));
        let refused = herald(&["list", "--dir", dir.to_str().unwrap(), "--limit", "0"]);
        assert!(
            !refused.status.success() && stderr(&refused).contains("from 1 to 10000"),
            "{}",
            stderr(&refused)
        );
        let views: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        let held: std::collections::HashSet<&str> = views
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["id"].as_str().unwrap())
            .collect();
        for id in &acked {
            assert!(
                held.contains(id.as_str()),
                "round {round}: acknowledged {id} lost"
            );
        }
        // One chain, numbered 1, 2, 3... across every kill: no number used
        // twice (equivocation), none skipped.
        let mut numbers: Vec<u64> = views
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["seq"].as_u64().unwrap())
            .collect();
        numbers.sort_unstable();
        let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
        assert_eq!(numbers, expected, "round {round}: the node's chain");
    }
}

/// Before a node's first run, a registry change submitted there is stored after the installed
/// genesis: every command reads the store after it, and the node starts on it.
#[test]
fn a_change_submitted_before_the_first_run_leaves_a_store_that_opens() {
    let tmp = tempfile::tempdir().unwrap();
    testnet(tmp.path(), 2);
    let dir = tmp.path().join("member-1");
    let one = dir.to_str().unwrap();
    let update = tmp.path().join("rotation.update");
    let u = update.to_str().unwrap();
    let new_key = dir.join("keys/signing-2.key");
    for args in [
        vec![
            "registry",
            "propose",
            "--dir",
            one,
            "--new-signing-key",
            new_key.to_str().unwrap(),
            "-o",
            u,
        ],
        vec!["registry", "approve", "--dir", one, u],
        vec!["registry", "submit", "--dir", one, u],
    ] {
        let done = herald(&args);
        assert!(done.status.success(), "{args:?}: {}", stderr(&done));
    }
    let listed = herald(&["list", "--dir", one]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let shown = herald(&["registry", "show", "--dir", one, "--json"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let view: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(view["version"], 2);
    let node = RunningNode::start(&dir);
    node.wait_for(&["herald is running"]);
    node.stop();
}

/// A proposal to remove a member says that removal goes by time, which a holder of its keys can
/// backdate, and how to cut each of its signing keys off by number as well.
#[test]
fn a_removal_proposal_says_how_to_cut_the_members_keys_off_by_number() {
    let tmp = tempfile::tempdir().unwrap();
    testnet(tmp.path(), 3);
    let one = tmp.path().join("member-1");
    let one = one.to_str().unwrap();
    let shown = herald(&["registry", "show", "--dir", one, "--json"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let view: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let third = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "member-3")
        .expect("member-3 is listed");
    let (id, key) = (
        third["id"].as_str().unwrap(),
        third["signing_keys"][0][0].as_str().unwrap(),
    );
    let out = tmp.path().join("removal.update");
    let proposed = herald(&[
        "registry",
        "propose",
        "--dir",
        one,
        "--remove-member",
        id,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(proposed.status.success(), "{}", stderr(&proposed));
    let said = stdout(&proposed);
    assert!(
        said.contains("member-3 is removed by time")
            && said.contains("--revoke-signing-key KEY --from-seq N")
            && said.contains(key),
        "{said}"
    );
}

/// The members change the registry together: a member adds a signing key on
/// its own authority; two of three members revoke it; each change is submitted
/// at one running node and reaches the other by gossip.
#[test]
fn members_change_the_registry_and_the_change_spreads() {
    let tmp = tempfile::tempdir().unwrap();
    testnet(tmp.path(), 3);
    let dir = |i: u32| tmp.path().join(format!("member-{i}"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (one, two, three) = (s(&dir(1)), s(&dir(2)), s(&dir(3)));
    let first = RunningNode::start(&dir(1));
    first.wait_for(&["herald is running"]);
    let second = RunningNode::start(&dir(2));
    second.wait_for(&["herald is running"]);
    second.wait_for(&["peer connected"]);

    // A change the registry would refuse is refused before it goes round, with nothing written.
    let refused_file = tmp.path().join("refused.update");
    for (change, says) in [
        (vec!["--threshold", "9"], "must be above half of them"),
        (vec!["--add-member", "DESCRIPTOR"], "already in the registry"),
        (
            vec!["--remove-member", &"ab".repeat(32)],
            "no current member has this id",
        ),
    ] {
        let descriptor = s(&dir(2).join("member.json"));
        let change: Vec<&str> = change
            .into_iter()
            .map(|a| if a == "DESCRIPTOR" { descriptor.as_str() } else { a })
            .collect();
        let refused_path = s(&refused_file);
        let mut args = vec!["registry", "propose", "--dir", &one, "-o", &refused_path];
        args.extend(change);
        let refused = herald(&args);
        assert!(!refused.status.success(), "{args:?} was proposed");
        assert!(stderr(&refused).contains(says), "{}", stderr(&refused));
        assert!(!refused_file.exists(), "{args:?} wrote a proposal");
    }

    // A new key whose proposal cannot be written is not left behind, nor its mark.
    let marks = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir(1).join("store"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("unused-key-"))
            .collect();
        names.sort();
        names
    };
    let marks_before = marks();
    let lost_key = tmp.path().join("lost.key");
    let nowhere = tmp.path().join("no-such-folder/rotation.update");
    let refused = herald(&[
        "registry",
        "propose",
        "--dir",
        &one,
        "--new-signing-key",
        &s(&lost_key),
        "-o",
        &s(&nowhere),
    ]);
    assert!(!refused.status.success(), "a proposal was written nowhere");
    assert!(!lost_key.exists(), "the new key outlived its failed proposal");
    assert_eq!(
        marks(),
        marks_before,
        "the new key's mark outlived its failed proposal"
    );

    // Member 1 adds a second signing key: its own key suffices.
    let rotation = tmp.path().join("rotation.update");
    let new_key = dir(1).join("keys/signing-2.key");
    let r = s(&rotation);
    let proposed = herald(&[
        "registry",
        "propose",
        "--dir",
        &one,
        "--new-signing-key",
        &s(&new_key),
        "-o",
        &r,
    ]);
    assert!(proposed.status.success(), "{}", stderr(&proposed));
    let approved = herald(&["registry", "approve", "--dir", &one, &r]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    assert!(
        stdout(&approved).contains("Members approving so far: member-1 (")
            && stdout(&approved).contains("Enough to submit"),
        "{}",
        stdout(&approved)
    );
    // Meanwhile member 3, its node stopped at version 1, adds a key of its own: another
    // version 2, made before it heard of member 1's.
    let concurrent = tmp.path().join("concurrent.update");
    let c = s(&concurrent);
    let proposed = herald(&[
        "registry",
        "propose",
        "--dir",
        &three,
        "--new-signing-key",
        &s(&dir(3).join("keys/signing-2.key")),
        "-o",
        &c,
    ]);
    assert!(proposed.status.success(), "{}", stderr(&proposed));
    let approved = herald(&["registry", "approve", "--dir", &three, &c]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    let submitted = herald(&["registry", "submit", "--dir", &one, &r]);
    assert!(submitted.status.success(), "{}", stderr(&submitted));
    second.wait_for(&["registry advanced"]);
    // Member 3's version 2 is refused where member 1's is held, and the node's status says
    // that the registry has forked.
    let forked = herald(&["registry", "submit", "--dir", &one, &c]);
    assert!(!forked.status.success(), "a second version 2 was taken");
    assert!(stderr(&forked).contains("fork"), "{}", stderr(&forked));
    let status = herald(&["status", "--dir", &one]);
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(
        stdout(&status).contains("FORKED: another approved update than this node's is known for 1 version"),
        "{}",
        stdout(&status)
    );
    let shown = herald(&["registry", "show", "--dir", &two, "--json"]);
    let view: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(view["version"], 2);
    let member_one = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "member-1")
        .unwrap();
    let keys = member_one["signing_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let new_id = keys
        .iter()
        .map(|k| k[0].as_str().unwrap().to_string())
        .find(|k| {
            let (_, public) = herald_keys::keyfile::read_public_key(&new_key).unwrap();
            *k == public.id().to_string()
        })
        .expect("the new key is listed");

    // Revoking it takes two of the three members: one is not enough. Restating the
    // threshold makes it a change that needs the threshold whoever approves it, which no
    // member's own change displaces (docs/SECURITY.md).
    let revocation = tmp.path().join("revocation.update");
    let v = s(&revocation);
    let proposed = herald(&[
        "registry",
        "propose",
        "--dir",
        &two,
        "--revoke-signing-key",
        &new_id,
        "--from-seq",
        "1",
        "--threshold",
        "2",
        "-o",
        &v,
    ]);
    assert!(proposed.status.success(), "{}", stderr(&proposed));
    let first_approval = herald(&["registry", "approve", "--dir", &two, &v]);
    assert!(first_approval.status.success(), "{}", stderr(&first_approval));
    assert!(
        !stdout(&first_approval).contains("Enough to submit"),
        "{}",
        stdout(&first_approval)
    );
    let alone = herald(&["registry", "submit", "--dir", &two, &v]);
    assert!(!alone.status.success());
    assert!(stderr(&alone).contains("approved"), "{}", stderr(&alone));
    let second_approval = herald(&["registry", "approve", "--dir", &three, &v]);
    assert!(second_approval.status.success(), "{}", stderr(&second_approval));
    assert!(
        stdout(&second_approval).contains("Enough to submit"),
        "{}",
        stdout(&second_approval)
    );
    let submitted = herald(&["registry", "submit", "--dir", &two, &v]);
    assert!(submitted.status.success(), "{}", stderr(&submitted));
    first.wait_for(&["registry advanced"]);
    let shown = herald(&["registry", "show", "--dir", &one]);
    assert!(stdout(&shown).contains("revoked from #1"), "{}", stdout(&shown));

    // Member 3 takes its own version 2 in at its stopped node. Started, the node finds that
    // the others' branch holds a change that needs the threshold (version 3), and its own
    // change gives way to that branch: the split settles by the branch rule.
    let offline = herald(&["registry", "submit", "--dir", &three, &c]);
    assert!(offline.status.success(), "{}", stderr(&offline));
    assert!(
        stdout(&offline).contains("The registry is at version 2"),
        "{}",
        stdout(&offline)
    );
    let third = RunningNode::start(&dir(3));
    third.wait_for(&["a member's own change that gave way", "version=2"]);
    third.wait_for(&["registry switched to the peer's branch"]);
    let hash_at = |d: &str| {
        let shown = herald(&["registry", "show", "--dir", d, "--json"]);
        assert!(shown.status.success(), "{}", stderr(&shown));
        let view: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
        (
            view["version"].as_u64(),
            view["hash"].as_str().map(str::to_string),
        )
    };
    assert_eq!(hash_at(&three), hash_at(&one));
    assert_eq!(hash_at(&three).0, Some(3));
    // The change that gave way is kept as evidence, settled: this branch holds version 3.
    // So is member 3's version 2 at the first node, now that version 3 is held there too.
    for d in [&three, &one] {
        let status = herald(&["status", "--dir", d]);
        let said = stdout(&status);
        assert!(
            said.contains("forks settled at 1 version(s)") && !said.contains("FORKED"),
            "{said}"
        );
        assert_eq!(
            said.contains("took another branch 1 time(s)"),
            d == &three,
            "{said}"
        );
    }

    third.stop();
    first.stop();
    second.stop();
}

/// `herald devnet`, the first thing a new user runs: nodes on loopback, sample bulletins, and
/// each one seen reaching every node. With `--count` it stops by itself once every bulletin has
/// reached every node (or fails, naming how many did, after its own deadline).
#[test]
fn the_devnet_serves_the_first_members_web_page_and_api() {
    let mut devnet = Command::new(HERALD)
        .args(["devnet", "--nodes", "2", "--count", "40", "--interval-ms", "100"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start herald devnet");
    let lines = lines_of(devnet.stdout.take().unwrap());
    let line = loop {
        let line = lines
            .recv_timeout(WAIT)
            .expect("the devnet prints its web page's address");
        if line.starts_with("Web page of member-1: ") {
            break line;
        }
    };
    // "Web page of member-1: http://127.0.0.1:PORT/ (token TOKEN); ..."
    let url = line.split_whitespace().nth(4).unwrap().to_string();
    let token = line
        .split("(token ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && token.len() == 64,
        "{line}"
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let page = agent.get(&url).call().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let mut status = agent
        .get(format!("{url}v1/status"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(status.status().as_u16(), 200);
    let view: serde_json::Value = serde_json::from_str(&status.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(
        (
            view["registry_version"].as_u64(),
            view["connected_peers"].as_array().map(Vec::len)
        ),
        (Some(1), Some(1)),
        "a node of the devnet: {view}"
    );
    // It ends by itself, cleanly, with its API.
    while lines.recv_timeout(WAIT).is_ok() {}
    let ended = devnet.wait().unwrap();
    assert!(ended.success(), "{ended}");
}

#[test]
fn the_devnet_shows_every_bulletin_reaching_every_node() {
    let out = herald(&["devnet", "--nodes", "3", "--count", "4", "--interval-ms", "100"]);
    let text = stdout(&out);
    assert!(out.status.success(), "devnet failed: {}\n{text}", stderr(&out));
    assert_eq!(
        text.matches("reached all 3 nodes in").count(),
        4,
        "every bulletin reached every node:\n{text}"
    );
    assert!(text.contains("4 bulletins reached every node."), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.contains(" -> ") && l.ends_with("/3)"))
            .count(),
        8,
        "one arrival line per bulletin and node other than its publisher:\n{text}"
    );
    // Each bulletin's time to reach every node is that of its slowest arrival, whatever
    // order the arrivals were heard of in.
    let mut slowest: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [id, "->", _, ms, "ms", _] = words[..] {
            let ms: f64 = ms.parse().unwrap();
            let entry = slowest.entry(id).or_insert(0.0);
            *entry = entry.max(ms);
        } else if let [id, "reached", "all", _, "nodes", "in", ms, "ms"] = words[..] {
            assert_eq!(ms.parse::<f64>().unwrap(), slowest[id], "{line}\n{text}");
        }
    }
}
