//! ferroctl's command line: flags, commands and their help (clap derive).

use std::ffi::OsString;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::duration::parse_duration;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  get: the key does not exist (nothing is printed);
     endpoint status / health: an endpoint failed or is unhealthy
  2  usage error: bad flags, endpoints, durations or txn text
  3  the request failed: rejected by the server, no leader, timeout, unreachable
  4  outcome unknown: a write (put, del, txn, member add/promote/remove) may or
     may not have been applied; read it back before retrying. Writes are resent
     within a client session until decided, so this only happens when the
     command timeout ran out first.

Durations (--dial-timeout, --command-timeout): a number with a unit, ms, s or m
(500ms, 5s, 1.5s, 2m); a bare number is seconds.";

/// ferroctl: command-line client for a ferrokv cluster.
#[derive(Debug, Parser)]
#[command(name = "ferroctl", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes (before or after the command name).
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Cluster endpoints, host:port, comma-separated; requests fail over between them.
    #[arg(
        long,
        global = true,
        env = "FERROCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379",
        value_name = "H:P[,H:P...]"
    )]
    pub endpoints: Vec<String>,

    /// Output format.
    #[arg(short = 'w', long, global = true, value_enum, default_value_t = WriteOut::Simple)]
    pub write_out: WriteOut,

    /// How long connecting to one endpoint may take before trying the next.
    #[arg(long, global = true, default_value = "3s", value_parser = parse_duration, value_name = "DURATION")]
    pub dial_timeout: Duration,

    /// Time budget of the whole command's request, failover and retries included.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub command_timeout: Duration,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WriteOut {
    /// Plain values, one per line (raw bytes for keys and values).
    Simple,
    /// JSON (keys and values as UTF-8, invalid bytes replaced).
    Json,
    /// Tables for people.
    Table,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Request(RequestCommand),
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// The commands that talk to the cluster.
#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Write a value; prints OK.
    Put {
        /// The key.
        key: OsString,
        /// The value; read from standard input (raw bytes) when omitted.
        value: Option<OsString>,
        /// Also print the key's previous value.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Print a key's value; exits 1 (printing nothing) if the key does not exist.
    Get {
        /// The key.
        key: OsString,
        /// Read this replica's applied state, possibly stale, without a leader.
        #[arg(long)]
        serializable: bool,
    },
    /// Delete a key; prints how many keys were deleted (0 or 1).
    Del {
        /// The key.
        key: OsString,
        /// Also print the deleted key and value.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Print the keys of a prefix or a range: key line, then value line, per key.
    Scan(ScanArgs),
    /// Run a transaction read from standard input.
    ///
    /// Three sections separated by a blank line: compares, success ops, failure ops.
    /// Compares: value("k") = "v", version("k") > 3, mod("k") = 5, create("k") = 0,
    /// exists("k") = true; operators =, !=, >, <. Ops: put k v, del k, get k. Keys and
    /// values may be "double-quoted" with \" \\ \n \t \xHH escapes. Lines starting
    /// with # are ignored. Prints SUCCESS or FAILURE, then each op's result.
    Txn,
    /// Cluster membership.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Leadership.
    #[command(subcommand)]
    Leader(LeaderCommand),
    /// Status and health of every member (from the member list; the configured
    /// endpoints when no member list can be had).
    #[command(subcommand)]
    Endpoint(EndpointCommand),
}

#[derive(Debug, Args)]
#[group(skip)]
#[command(group = ArgGroup::new("range").required(true).args(["prefix", "from"]))]
pub struct ScanArgs {
    /// Every key starting with this prefix.
    #[arg(long)]
    pub prefix: Option<OsString>,
    /// First key of a range, inclusive.
    #[arg(long)]
    pub from: Option<OsString>,
    /// End of the range, exclusive; no upper bound when omitted.
    #[arg(long, requires = "from")]
    pub to: Option<OsString>,
    /// At most this many keys (one request); without it, every key, page by page.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Print keys only.
    #[arg(long)]
    pub keys_only: bool,
    /// Read this replica's applied state, possibly stale, without a leader.
    #[arg(long)]
    pub serializable: bool,
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the members: ID, NAME, PEER ADDR, CLIENT ADDR, LEARNER.
    List,
    /// Add a learner (a non-voting member that receives the log); then promote it.
    Add {
        /// The new member's Raft node id (never reused).
        id: u64,
        /// Its peer address, host:port, as the other members reach it.
        #[arg(long, value_name = "H:P")]
        peer_addr: String,
        /// Its client address, host:port (the node publishes its own when omitted).
        #[arg(long, value_name = "H:P", default_value = "")]
        client_addr: String,
        /// Its name in member lists.
        #[arg(long, default_value = "")]
        name: String,
        /// Answer only once the learner has caught up with the leader's log.
        #[arg(long)]
        wait: bool,
    },
    /// Make a learner a voter.
    Promote {
        /// The learner's id.
        id: u64,
    },
    /// Remove a member (voter or learner) from the cluster.
    Remove {
        /// The member's id.
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeaderCommand {
    /// Hand leadership to a voter and wait until it leads.
    Transfer {
        /// The voter's id.
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Each endpoint's own view: role, leader, term, log indexes, DB size, keys.
    Status {
        /// Ask every member of the cluster (from the member list), not only --endpoints.
        #[arg(long)]
        cluster: bool,
    },
    /// Whether each endpoint answers and knows a leader.
    Health {
        /// Ask every member of the cluster (from the member list), not only --endpoints.
        #[arg(long)]
        cluster: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_parse_after_the_command() {
        let cli = Cli::try_parse_from([
            "ferroctl",
            "get",
            "k",
            "--endpoints",
            "a:1,b:2",
            "-w",
            "json",
            "--command-timeout",
            "500ms",
        ])
        .expect("parses");
        assert_eq!(cli.global.endpoints, ["a:1", "b:2"]);
        assert_eq!(cli.global.write_out, WriteOut::Json);
        assert_eq!(cli.global.command_timeout, Duration::from_millis(500));
        assert_eq!(cli.global.dial_timeout, Duration::from_secs(3));
    }

    #[test]
    fn scan_needs_exactly_one_of_prefix_and_from() {
        assert!(Cli::try_parse_from(["ferroctl", "scan"]).is_err());
        assert!(Cli::try_parse_from(["ferroctl", "scan", "--prefix", "a", "--from", "b"]).is_err());
        assert!(Cli::try_parse_from(["ferroctl", "scan", "--to", "b"]).is_err());
        assert!(Cli::try_parse_from(["ferroctl", "scan", "--from", "a", "--to", "b"]).is_ok());
        assert!(
            Cli::try_parse_from(["ferroctl", "scan", "--prefix", "a", "--limit", "0"]).is_err()
        );
    }

    #[test]
    fn member_and_leader_commands_parse() {
        let cli = Cli::try_parse_from([
            "ferroctl",
            "member",
            "add",
            "4",
            "--peer-addr",
            "h:2380",
            "--wait",
        ])
        .expect("parses");
        assert!(matches!(
            cli.command,
            Command::Request(RequestCommand::Member(MemberCommand::Add {
                id: 4,
                wait: true,
                ..
            }))
        ));
        assert!(
            Cli::try_parse_from(["ferroctl", "member", "add", "4"]).is_err(),
            "peer addr"
        );
        let cli = Cli::try_parse_from(["ferroctl", "leader", "transfer", "2"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Request(RequestCommand::Leader(LeaderCommand::Transfer { id: 2 }))
        ));
    }

    #[test]
    fn bad_duration_is_a_usage_error() {
        let err = Cli::try_parse_from(["ferroctl", "--dial-timeout", "soon", "get", "k"])
            .expect_err("rejected");
        assert_eq!(err.exit_code(), 2);
    }
}
