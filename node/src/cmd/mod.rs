//! One module per subcommand; [`run()`] dispatches.

/// `println!` that returns the write's error (`?`) instead of panicking, so
/// that output piped into a reader that stops early (`| head`) ends the
/// command quietly, with the exit status of a command stopped by SIGPIPE.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err($crate::cmd::Output)?
    }};
}

/// Writing to standard output failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output: {0}")]
pub(crate) struct Output(pub(crate) std::io::Error);

impl Output {
    /// Whether the reader of the output went away (`| head`): nothing to
    /// report, but not a success (the output, or the verdict after it, was
    /// lost).
    pub(crate) fn reader_gone(error: &anyhow::Error) -> bool {
        error
            .downcast_ref::<Output>()
            .is_some_and(|o| o.0.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

mod audit;
mod bundle;
mod devnet;
mod genesis;
mod init;
mod publish;
mod read;
mod registry;
mod run;

use std::time::Duration;

use anyhow::{Result, bail};

use crate::cli::Command;

pub(crate) fn run(command: Command) -> Result<()> {
    match command {
        Command::Devnet(args) => devnet::run(args),
        Command::Init(args) => init::init(args),
        Command::Genesis(command) => genesis::run(command),
        Command::Testnet(args) => init::testnet(args),
        Command::Run(args) => run::run(args),
        Command::Publish(args) => publish::run(*args),
        Command::List(args) => read::list(args),
        Command::Show(args) => read::show(args),
        Command::Watch(args) => read::watch(args),
        Command::Status(args) => read::status(args),
        Command::Registry(command) => registry::run(command),
        Command::Export(args) => bundle::export(args),
        Command::Import(args) => bundle::import(args),
        Command::Audit(args) => audit::run(args),
    }
}

/// A tokio runtime for the commands that need one.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
/// The members the running node's registry lists (`removed` too, or current
/// ones only), with their names.
fn members_of(
    client: &crate::client::Client,
    removed: bool,
) -> Result<Vec<(herald_protocol::MemberId, String)>> {
    Ok(client
        .get::<herald_node::view::RegistryView>("/v1/registry", &[])?
        .members
        .into_iter()
        .filter(|m| removed || m.removed_at.is_none())
        .map(|m| (m.id, m.name))
        .collect())
}

/// The member whose name is `name` (letter case aside), for `flag`; says
/// which names there are when none is.
fn member_named(
    flag: &str,
    name: &str,
    members: &[(herald_protocol::MemberId, String)],
) -> Result<herald_protocol::MemberId> {
    let named: Vec<herald_protocol::MemberId> = members
        .iter()
        .filter(|(_, n)| n.eq_ignore_ascii_case(name))
        .map(|(id, _)| *id)
        .collect();
    match named[..] {
        [id] => Ok(id),
        [] => {
            let names: Vec<&str> = members.iter().map(|(_, n)| n.as_str()).collect();
            bail!(
                "{flag} {name:?}: no member has this name, and it is not a member id (64 hexadecimal characters); the members are: {}",
                names.join(", ")
            )
        }
        _ => bail!(
            "{flag} {name:?}: more than one member has this name; give the member id (herald registry show)"
        ),
    }
}

/// The member `text` names for `flag`: a member id, or a name looked up in
/// the registry (the running node's, or `offline`'s when none runs); removed
/// members count, as their bulletins are still held.
fn member_arg(
    flag: &str,
    text: &str,
    client: &crate::client::Client,
    offline: Option<&herald_keys::Registry>,
) -> Result<herald_protocol::MemberId> {
    if let Ok(id) = text.parse::<herald_protocol::MemberId>() {
        return Ok(id);
    }
    let members: Vec<(herald_protocol::MemberId, String)> = match offline {
        Some(registry) => registry
            .current()
            .members()
            .map(|m| (m.id, m.name.clone()))
            .collect(),
        None => members_of(client, true)?,
    };
    member_named(flag, text, &members)
}

/// Parses a duration like `90s`, `30m`, `12h` or `7d`.
fn parse_duration(text: &str) -> Result<Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = match number.parse() {
        Ok(n) => n,
        Err(_) => bail!("{text:?} is not a duration like 90s, 30m, 12h or 7d"),
    };
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => bail!("{text:?} is not a duration like 90s, 30m, 12h or 7d"),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_or_explain() {
        assert_eq!(parse_duration("90s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("7d").ok(), Some(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("7 days").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("h").is_err());
    }
}
