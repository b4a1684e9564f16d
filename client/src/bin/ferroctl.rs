//! ferroctl: the command-line client for a ferrokv cluster.
//!
//! A thin shell over `ferrokv_client::Client`: `cli` parses the command line, `request`
//! sends the request, `output` renders the answer for `--write-out`, and `main` maps
//! the outcome to an exit code (documented in `ferroctl --help`). `txn_text` parses
//! the transaction text of `ferroctl txn`; `duration` the timeout flags.

// The binary's root is a file, so its modules are found by path.
#[path = "ferroctl/cli.rs"]
mod cli;
#[path = "ferroctl/duration.rs"]
mod duration;
#[path = "ferroctl/output.rs"]
mod output;
#[path = "ferroctl/txn_text.rs"]
mod txn_text;

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use ferrokv_client::{
    AddLearnerRequest, Client, Error, PutOptions, ReadOptions, ScanOptions, ScanRange,
};

use cli::{
    Cli, Command, EndpointCommand, GlobalArgs, LeaderCommand, MemberCommand, RequestCommand,
    ScanArgs, WriteOut,
};

/// Exit code: the key does not exist (get), or an endpoint failed (endpoint status/health).
const EXIT_NOT_FOUND_OR_UNHEALTHY: u8 = 1;
/// Exit code: bad usage (clap uses 2 for its own errors too).
const EXIT_USAGE: u8 = 2;
/// Exit code: the request failed.
const EXIT_FAILED: u8 = 3;
/// Exit code: a write's outcome is unknown.
const EXIT_AMBIGUOUS: u8 = 4;

/// What a command printed and how it ended.
struct Outcome {
    stdout: Vec<u8>,
    /// One line for stderr, printed as `Error: …`, when the command ends badly
    /// without failing outright (an endpoint down in `endpoint status`).
    warning: Option<String>,
    exit: u8,
}

impl Outcome {
    fn ok(stdout: Vec<u8>) -> Outcome {
        Outcome {
            stdout,
            warning: None,
            exit: 0,
        }
    }

    /// A per-endpoint report: exit 1 with a warning when `bad` of `total` endpoints
    /// `failed` (or were `unhealthy`).
    fn with_failures(stdout: Vec<u8>, bad: usize, total: usize, what: &str) -> Outcome {
        Outcome {
            stdout,
            warning: (bad > 0).then(|| format!("{bad} of {total} endpoints {what}")),
            exit: if bad > 0 {
                EXIT_NOT_FOUND_OR_UNHEALTHY
            } else {
                0
            },
        }
    }
}

/// Why a command failed.
#[derive(Debug)]
enum Failure {
    Client(Error),
    Usage(String),
    Io(String),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Client(Error::Ambiguous(_)) => EXIT_AMBIGUOUS,
            Failure::Client(Error::InvalidEndpoint { .. } | Error::NoEndpoints) => EXIT_USAGE,
            Failure::Usage(_) => EXIT_USAGE,
            Failure::Client(_) | Failure::Io(_) => EXIT_FAILED,
        }
    }

    /// The one line printed after `Error: `.
    fn message(&self) -> String {
        let message = match self {
            Failure::Client(err) => err.to_string(),
            Failure::Usage(message) | Failure::Io(message) => message.clone(),
        };
        one_line(&message)
    }
}

impl From<Error> for Failure {
    fn from(err: Error) -> Failure {
        Failure::Client(err)
    }
}

/// Joins a multi-line message into one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Clap prints usage errors itself and exits 2; --help and --version exit 0.
    let cli = Cli::parse();
    let outcome = run(cli).await;
    let mut stdout = std::io::stdout().lock();
    let code = match outcome {
        Ok(outcome) => {
            if let Err(err) = stdout
                .write_all(&outcome.stdout)
                .and_then(|()| stdout.flush())
            {
                // A reader that went away (`ferroctl scan … | head`) is not an error.
                if err.kind() != std::io::ErrorKind::BrokenPipe {
                    eprintln!("Error: writing the output: {err}");
                    return ExitCode::from(EXIT_FAILED);
                }
            }
            if let Some(warning) = outcome.warning {
                eprintln!("Error: {}", one_line(&warning));
            }
            outcome.exit
        }
        Err(failure) => {
            eprintln!("Error: {}", failure.message());
            failure.exit_code()
        }
    };
    ExitCode::from(code)
}

async fn run(cli: Cli) -> Result<Outcome, Failure> {
    match cli.command {
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ferroctl", &mut script);
            Ok(Outcome::ok(script))
        }
        Command::Request(command) => {
            let client = connect(&cli.global)?;
            request(&client, command, cli.global.write_out).await
        }
    }
}

async fn request(
    client: &Client,
    command: RequestCommand,
    mode: WriteOut,
) -> Result<Outcome, Failure> {
    match command {
        RequestCommand::Put {
            key,
            value,
            prev_kv,
        } => {
            let value = match value {
                Some(value) => value.into_encoded_bytes(),
                None => read_stdin()?,
            };
            let options = PutOptions { prev_kv };
            let size = value.len();
            let response = client
                .put(key.into_encoded_bytes(), value, options)
                .await
                .map_err(|err| explain_too_large(err, size))?;
            Ok(Outcome::ok(output::put(&response, mode)))
        }
        RequestCommand::Get { key, serializable } => {
            let (_, kv) = client
                .get(key.into_encoded_bytes(), ReadOptions { serializable })
                .await?;
            Ok(match kv {
                Some(kv) => Outcome::ok(output::get(&kv, mode)),
                None => Outcome {
                    stdout: Vec::new(),
                    warning: None,
                    exit: EXIT_NOT_FOUND_OR_UNHEALTHY,
                },
            })
        }
        RequestCommand::Del { key, prev_kv } => {
            let response = client.delete(key.into_encoded_bytes(), prev_kv).await?;
            Ok(Outcome::ok(output::delete(&response, mode)))
        }
        RequestCommand::Scan(args) => scan(client, args, mode).await,
        RequestCommand::Txn => {
            let text = read_txn_text()?;
            let request =
                txn_text::parse_txn(&text).map_err(|err| Failure::Usage(err.to_string()))?;
            let response = client.txn(request).await?;
            Ok(Outcome::ok(output::txn(&response, mode)))
        }
        RequestCommand::Member(MemberCommand::List) => {
            let response = client.member_list().await?;
            Ok(Outcome::ok(output::members(&response, mode)))
        }
        RequestCommand::Member(MemberCommand::Add {
            id,
            peer_addr,
            client_addr,
            name,
            wait,
        }) => {
            let request = AddLearnerRequest {
                id,
                name,
                peer_addr,
                client_addr,
                wait_caught_up: wait,
            };
            let response = client.member_add(request).await?;
            Ok(Outcome::ok(output::member_change(
                "added as a learner",
                id,
                response.header.as_ref(),
                &response.members,
                mode,
            )))
        }
        RequestCommand::Member(MemberCommand::Promote { id }) => {
            let response = client.member_promote(id).await?;
            Ok(Outcome::ok(output::member_change(
                "promoted to voter",
                id,
                response.header.as_ref(),
                &response.members,
                mode,
            )))
        }
        RequestCommand::Member(MemberCommand::Remove { id }) => {
            let response = client.member_remove(id).await?;
            Ok(Outcome::ok(output::member_change(
                "removed",
                id,
                response.header.as_ref(),
                &response.members,
                mode,
            )))
        }
        RequestCommand::Leader(LeaderCommand::Transfer { id }) => {
            let response = client.transfer_leader(id).await?;
            Ok(Outcome::ok(output::leader_transfer(&response, mode)))
        }
        RequestCommand::Endpoint(EndpointCommand::Status { cluster }) => {
            // As etcdctl: the given endpoints, or with --cluster every member's advertised
            // address (which a client outside the cluster's network may not reach).
            let statuses = if cluster {
                client.status_members().await
            } else {
                client.status_all().await
            };
            let failed = statuses.iter().filter(|s| s.status.is_err()).count();
            Ok(Outcome::with_failures(
                output::statuses(&statuses, mode),
                failed,
                statuses.len(),
                "failed",
            ))
        }
        RequestCommand::Endpoint(EndpointCommand::Health { cluster }) => {
            let statuses = if cluster {
                client.status_members().await
            } else {
                client.status_all().await
            };
            let unhealthy = statuses
                .iter()
                .filter(|s| output::health(&s.status).is_err())
                .count();
            Ok(Outcome::with_failures(
                output::healths(&statuses, mode),
                unhealthy,
                statuses.len(),
                "unhealthy",
            ))
        }
    }
}

/// The server refuses a request over its message limit before reading the value, so
/// its message names the message limit, not the value limit a person set or must
/// know: add both the value's size and the value limit's default.
fn explain_too_large(err: Error, value_bytes: usize) -> Error {
    match err {
        Error::ResourceExhausted(message) => Error::ResourceExhausted(format!(
            "{message} (the value is {value_bytes} bytes; values are limited to \
             --max-value-bytes on the server, 1048576 bytes = 1 MiB by default)"
        )),
        other => other,
    }
}

fn connect(global: &GlobalArgs) -> Result<Client, Failure> {
    let endpoints: Vec<&str> = global
        .endpoints
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .collect();
    // One command, one process: no background member-list refresh. Writes still go
    // to the leader named in response headers, and `endpoint status|health` ask the
    // member list themselves.
    let client = Client::builder(endpoints)
        .dial_timeout(global.dial_timeout)
        .request_timeout(global.command_timeout)
        .member_refresh_interval(None)
        .connect()?;
    Ok(client)
}

async fn scan(client: &Client, args: ScanArgs, mode: WriteOut) -> Result<Outcome, Failure> {
    let range = match (args.prefix, args.from) {
        (Some(prefix), _) => ScanRange::prefix(prefix.into_encoded_bytes()),
        (None, Some(from)) => ScanRange::range(
            from.into_encoded_bytes(),
            args.to
                .map(|to| to.into_encoded_bytes())
                .unwrap_or_default(),
        ),
        (None, None) => return Err(Failure::Usage("scan needs --prefix or --from".into())),
    };
    let options = ScanOptions {
        limit: args.limit.unwrap_or(0),
        keys_only: args.keys_only,
        read: ReadOptions {
            serializable: args.serializable,
        },
        ..ScanOptions::default()
    };
    let kvs = match args.limit {
        // An explicit limit is one request, like etcdctl's --limit.
        Some(_) => client.scan_page(&range, &options).await?.kvs,
        None => client.scan_all(range, options).await?.1,
    };
    Ok(Outcome::ok(output::scan(&kvs, args.keys_only, mode)))
}

fn read_stdin() -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|err| Failure::Io(format!("reading the value from standard input: {err}")))?;
    Ok(bytes)
}

/// Reads the transaction text. From a terminal, prompts for each section on stderr and
/// stops after the third blank line (like etcdctl's interactive txn); from a pipe or
/// file, reads to the end.
fn read_txn_text() -> Result<String, Failure> {
    let stdin = std::io::stdin();
    let io_error =
        |err: std::io::Error| Failure::Io(format!("reading the txn from standard input: {err}"));
    if !stdin.is_terminal() {
        let mut text = String::new();
        stdin.lock().read_to_string(&mut text).map_err(io_error)?;
        return Ok(text);
    }
    let prompts = [
        "compares:",
        "success requests (put, del, get):",
        "failure requests (put, del, get):",
    ];
    let mut text = String::new();
    let mut blank_lines = 0;
    eprintln!("{}", prompts[0]);
    for line in stdin.lines() {
        let line = line.map_err(io_error)?;
        text.push_str(&line);
        text.push('\n');
        if line.trim().is_empty() {
            blank_lines += 1;
            if blank_lines == txn_text::SECTIONS {
                break;
            }
            eprintln!("\n{}", prompts[blank_lines]);
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_by_failure() {
        assert_eq!(Failure::Client(Error::Ambiguous("x".into())).exit_code(), 4);
        assert_eq!(
            Failure::Client(Error::SessionExpired("x".into())).exit_code(),
            3
        );
        assert_eq!(
            Failure::Client(Error::Unavailable("x".into())).exit_code(),
            3
        );
        assert_eq!(
            Failure::Client(Error::InvalidArgument("x".into())).exit_code(),
            3
        );
        assert_eq!(Failure::Client(Error::NoEndpoints).exit_code(), 2);
        assert_eq!(Failure::Usage("x".into()).exit_code(), 2);
        assert_eq!(Failure::Io("x".into()).exit_code(), 3);
    }

    #[test]
    fn an_oversized_put_names_the_value_limit() {
        let err = explain_too_large(Error::ResourceExhausted("too large".into()), 2 << 20);
        let message = err.to_string();
        assert!(
            message.contains("2097152 bytes") && message.contains("1048576"),
            "{message}"
        );
        let other = explain_too_large(Error::Unavailable("x".into()), 1);
        assert_eq!(other, Error::Unavailable("x".into()));
    }

    #[test]
    fn error_messages_are_one_line() {
        let failure = Failure::Usage("txn line 2:\n  bad  operator\n".into());
        assert_eq!(failure.message(), "txn line 2: bad  operator");
    }

    #[tokio::test]
    async fn blank_endpoints_are_dropped_and_none_left_is_a_usage_error() {
        let global = GlobalArgs {
            endpoints: vec![" ".into(), String::new()],
            write_out: WriteOut::Simple,
            dial_timeout: std::time::Duration::from_secs(1),
            command_timeout: std::time::Duration::from_secs(1),
        };
        let failure = connect(&global).err().map(|f| f.exit_code());
        assert_eq!(failure, Some(EXIT_USAGE));
    }
}
