//! `onceledger account`, `charge` (or authorize, with `--no-capture`), `capture`, `void`,
//! `refund` and `transfer`: one logical operation through the retrying client. The answer's body
//! goes to stdout, a summary line (key, attempts, status) to stderr.
//!
//! Exit status: 0 for a 2xx; 4 for a final refusal (a stored decline such as 402 or
//! charge-state-invalid, or a request the server refuses as written: 400, 422, ...), its body on
//! stdout; 1 when the client gave up (the operation may have run: run again with the printed
//! `--idempotency-key` to find out), and also when a transfer is refused before sending (its
//! legs or metadata break API.md's limits; nothing was sent).
//!
//! `onceledger client list PATH` walks a list (`list.rs`) and prints one JSON line per item as
//! pages come; the summary (items, pages, whether the list goes on) goes to stderr. Same exit
//! statuses, except that a refusal's body goes to stderr, stdout being the items.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::{
    ATTEMPT_TIMEOUT_DEFAULT, ATTEMPTS_DEFAULT, ATTEMPTS_MAX, Backoff, BodyError, ChargeId, Client,
    ClientConfig, ClientError, Leg, ListError, ListRequest, NewAccount, NewAuthorization,
    NewCapture, NewCharge, NewRefund, NewTransfer, NewVoid, Operation, RetryBudget, Transcript,
};
use crate::body::AMOUNT_MAX;
use crate::lifecycle::{EXPIRES_IN_SECS_MAX, EXPIRES_IN_SECS_MIN};
use crate::token::{TokenError, TokenSecret};

/// `--timeout`'s default, as the flag spells it.
const _: () = assert!(ATTEMPT_TIMEOUT_DEFAULT.as_secs() == 10);

/// Exit status of a final answer that is not a 2xx (2 is clap's usage error, 3 bench's check).
const EXIT_REFUSED: u8 = 4;

/// How to reach the server and how to retry; shared by every command that POSTs.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Idempotency key of the operation [default: a new UUIDv4]. Give the key an earlier run
    /// printed to learn what became of that operation without running it twice.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// How to reach the server and how to retry, for every command (a GET has no idempotency key).
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// Base URL of the server (http:// or https://).
    #[arg(long, env = "ONCELEDGER_URL", default_value = "http://127.0.0.1:7070")]
    pub url: String,
    #[command(flatten)]
    pub credentials: Credentials,
    /// Attempts at most, the first included (1 = never retry).
    #[arg(long, default_value_t = ATTEMPTS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=i64::from(ATTEMPTS_MAX)))]
    pub attempts: u32,
    /// Backoff base: the first retry waits uniform(0, base); each later window doubles.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub backoff_base: Duration,
    /// Backoff cap: no window grows beyond it (a server's Retry-After may still ask for more).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub backoff_cap: Duration,
    /// How long one attempt (connect, send, whole answer) may take.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Write one JSON line per attempt to FILE (operation, key, attempt, status, Retry-After
    /// seen, delay chosen, decision).
    #[arg(long, value_name = "FILE")]
    pub transcript: Option<PathBuf>,
}

/// How a command authenticates: a token (flag, environment or file) and, for https, a CA file.
/// Without `--token` or `--token-file` it reads `admin.token` of the data directory
/// (`$ONCELEDGER_DATA_DIR` or `./onceledger-data`) if there is one, as the quick start does.
/// `Debug` hides the token.
#[derive(clap::Args, Clone)]
pub struct Credentials {
    /// The API token (sent as Authorization: Bearer).
    #[arg(
        long,
        env = "ONCELEDGER_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// A file whose first line is the API token.
    #[arg(long, env = "ONCELEDGER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificates to trust for an https:// URL (default: the system's roots).
    #[arg(long, env = "ONCELEDGER_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("token_file", &self.token_file)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl Credentials {
    pub fn token(&self) -> Result<Option<TokenSecret>, TokenError> {
        let data_dir = std::env::var_os("ONCELEDGER_DATA_DIR")
            .map_or_else(|| PathBuf::from("./onceledger-data"), PathBuf::from);
        let fallback = data_dir.join(crate::token::ADMIN_TOKEN_FILE_NAME);
        TokenSecret::for_client(
            self.token.as_deref(),
            self.token_file.as_deref(),
            Some(&fallback),
        )
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct AccountArgs {
    /// The account id (`^[A-Za-z0-9_.:-]{1,64}$`).
    pub id: String,
    /// Its currency, three upper-case letters (one per account).
    #[arg(long)]
    pub currency: String,
    /// How far below zero the balance may go, in minor units, or `none` for no limit
    /// (settlement and funding accounts).
    #[arg(long, default_value = "0", value_parser = overdraft_limit)]
    pub overdraft_limit: OverdraftLimit,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ChargeArgs {
    /// The account debited.
    #[arg(long, visible_alias = "from")]
    pub source: String,
    /// The account credited.
    #[arg(long, visible_alias = "to")]
    pub destination: String,
    /// Amount in minor units (cents), 1 to 2^63-1.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=AMOUNT_MAX))]
    pub amount: u64,
    /// Currency, three upper-case letters; must be both accounts' currency.
    #[arg(long)]
    pub currency: String,
    /// A metadata pair KEY=VALUE (repeat for more; at most 16).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = metadata_pair)]
    pub metadata: Vec<(String, String)>,
    /// Authorize only: hold the amount (status `authorized`) until `capture`, `void` or expiry.
    #[arg(long)]
    pub no_capture: bool,
    /// With --no-capture: seconds until the authorization expires, 60 to 2592000 (30 days)
    /// [default: the server's --authorization-ttl, 7 days].
    #[arg(long, value_name = "SECS", requires = "no_capture",
          value_parser = clap::value_parser!(u32).range(i64::from(EXPIRES_IN_SECS_MIN)..=i64::from(EXPIRES_IN_SECS_MAX)))]
    pub expires_in: Option<u32>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CaptureArgs {
    /// The id of the authorization (`ch_...`, as `charge --no-capture` printed it).
    #[arg(value_name = "ID")]
    pub id: ChargeId,
    /// Capture only this much, in minor units (1 to the authorized amount); the rest of the hold
    /// is released [default: the authorized amount].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=AMOUNT_MAX))]
    pub amount: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct VoidArgs {
    /// The id of the authorization to cancel (its hold is released).
    #[arg(value_name = "ID")]
    pub id: ChargeId,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RefundArgs {
    /// The id of the succeeded charge to refund.
    #[arg(value_name = "CHARGE_ID")]
    pub charge: ChargeId,
    /// Refund only this much, in minor units [default: all that is left to refund].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=AMOUNT_MAX))]
    pub amount: Option<u64>,
    /// A metadata pair KEY=VALUE (repeat for more; at most 16).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = metadata_pair)]
    pub metadata: Vec<(String, String)>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct TransferArgs {
    /// Currency of every leg, three upper-case letters.
    #[arg(long)]
    pub currency: String,
    /// A leg SRC:DST:AMOUNT (amount in minor units); repeat for up to 16 legs, posted in order,
    /// all or none.
    #[arg(long = "leg", value_name = "SRC:DST:AMOUNT", required = true)]
    pub legs: Vec<Leg>,
    /// A metadata pair KEY=VALUE (repeat for more; at most 16).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = metadata_pair)]
    pub metadata: Vec<(String, String)>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `Some(n)` minor units, or `None`: no limit.
#[derive(Debug, Clone, Copy)]
pub struct OverdraftLimit(pub Option<u64>);

fn overdraft_limit(text: &str) -> Result<OverdraftLimit, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(OverdraftLimit(None));
    }
    text.parse()
        .map(|n| OverdraftLimit(Some(n)))
        .map_err(|_| format!("{text:?} is neither a number of minor units nor `none`"))
}

fn metadata_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

pub fn run_account(args: AccountArgs) -> Result<ExitCode, CliError> {
    let body = NewAccount {
        id: args.id,
        currency: args.currency,
        overdraft_limit: args.overdraft_limit.0,
    };
    run(&args.client, Operation::CreateAccount, &body)
}

pub fn run_charge(args: ChargeArgs) -> Result<ExitCode, CliError> {
    let charge = NewCharge {
        source: args.source,
        destination: args.destination,
        amount: args.amount,
        currency: args.currency,
        metadata: args.metadata.into_iter().collect::<BTreeMap<_, _>>(),
    };
    if !args.no_capture {
        return run(&args.client, Operation::CreateCharge, &charge);
    }
    let authorization = NewAuthorization::new(charge, args.expires_in).map_err(CliError::Body)?;
    run(&args.client, Operation::CreateCharge, &authorization)
}

pub fn run_capture(args: CaptureArgs) -> Result<ExitCode, CliError> {
    let body = NewCapture {
        amount: args.amount,
    };
    run(&args.client, Operation::CaptureCharge(args.id), &body)
}

pub fn run_void(args: VoidArgs) -> Result<ExitCode, CliError> {
    run(&args.client, Operation::VoidCharge(args.id), &NewVoid {})
}

pub fn run_refund(args: RefundArgs) -> Result<ExitCode, CliError> {
    let body = NewRefund {
        charge: args.charge,
        amount: args.amount,
        metadata: args.metadata.into_iter().collect(),
    };
    run(&args.client, Operation::CreateRefund, &body)
}

pub fn run_transfer(args: TransferArgs) -> Result<ExitCode, CliError> {
    let metadata = args.metadata.into_iter().collect();
    let body = NewTransfer::new(args.currency, args.legs, metadata).map_err(CliError::Body)?;
    run(&args.client, Operation::CreateTransfer, &body)
}

/// The client commands without a ledger operation of their own (`onceledger client ...`).
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ClientCommand {
    /// Walk a list (GET PATH, following has_more) and print each item as one JSON line; exit 0
    /// once the list (or --max) is done, 4 on a refusal (400 for an unknown cursor), 1 when a
    /// page gave up.
    List(ListArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ListArgs {
    /// The list's path, such as /v1/accounts or /v1/accounts/ID/postings (its query goes in
    /// --limit, --order and --param).
    #[arg(value_name = "PATH")]
    pub path: String,
    /// Items per page, 1 to 100 [default: the server's, 10].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=crate::list::LIMIT_MAX as i64))]
    pub limit: Option<u16>,
    /// asc (oldest first) or desc (newest first) [default: the server's, desc].
    #[arg(long, value_parser = ["asc", "desc"])]
    pub order: Option<String>,
    /// A query parameter K=V: a filter (status=succeeded, account=ID, created_gte=...), or a
    /// cursor to start from (starting_after=ID; ending_before=ID walks backward, nearest the
    /// cursor first). Repeat for more.
    #[arg(long = "param", value_name = "K=V", value_parser = metadata_pair)]
    pub params: Vec<(String, String)>,
    /// Stop after this many items [default: the whole list].
    #[arg(long, value_name = "N")]
    pub max: Option<usize>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

pub fn run_client(command: ClientCommand) -> Result<ExitCode, CliError> {
    match command {
        ClientCommand::List(args) => run_list(args),
    }
}

fn run_list(args: ListArgs) -> Result<ExitCode, CliError> {
    let mut params = args.params;
    if let Some(limit) = args.limit {
        params.push(("limit".into(), limit.to_string()));
    }
    if let Some(order) = args.order {
        params.push(("order".into(), order));
    }
    let request = ListRequest {
        path: args.path.clone(),
        params,
        max: args.max,
    };
    let config = client_config(&args.connection)?;
    let runtime = runtime()?;
    runtime.block_on(async {
        let client = Client::new(&args.connection.url, config).map_err(CliError::Client)?;
        let mut pages = client.list(request).map_err(CliError::List)?;
        let stopped = loop {
            match pages.next_page().await {
                Ok(Some(items)) => {
                    // One line per item, written as its page comes: a long list streams.
                    let mut out = std::io::stdout().lock();
                    for item in items {
                        writeln!(out, "{item}").map_err(CliError::Output)?;
                    }
                    out.flush().map_err(CliError::Output)?;
                }
                Ok(None) => break None,
                Err(error) => break Some(error),
            }
        };
        let summary = format!(
            "list {} items={} pages={} has_more={}",
            args.path,
            pages.items(),
            pages.pages(),
            pages.has_more()
        );
        match stopped {
            None => {
                eprintln!("{summary}");
                Ok(ExitCode::SUCCESS)
            }
            Some(error @ ListError::Refused { .. }) => {
                eprintln!("onceledger client list: {error} ({summary})");
                Ok(ExitCode::from(EXIT_REFUSED))
            }
            Some(ListError::Client(error @ ClientError::GaveUp { .. })) => {
                eprintln!("onceledger client list: {error} ({summary})");
                Ok(ExitCode::FAILURE)
            }
            Some(ListError::Client(error)) => Err(CliError::Client(error)),
            Some(error) => Err(CliError::List(error)),
        }
    })
}

fn run(
    args: &ClientArgs,
    operation: Operation,
    body: &impl serde::Serialize,
) -> Result<ExitCode, CliError> {
    let config = client_config(&args.connection)?;
    let key = args.idempotency_key.clone().unwrap_or_else(Client::new_key);
    let name = operation.name();
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        let client = Client::new(&args.connection.url, config)?;
        client.send_json(operation, &key, body).await
    });
    match result {
        Ok(answer) => {
            println!("{}", String::from_utf8_lossy(&answer.body));
            eprintln!(
                "{name} idempotency-key={} attempts={} status={}{}",
                answer.key,
                answer.attempts,
                answer.status,
                if answer.replayed { " replayed" } else { "" }
            );
            Ok(if answer.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_REFUSED)
            })
        }
        Err(error @ ClientError::GaveUp { .. }) => {
            eprintln!("onceledger {name}: {error}");
            Ok(ExitCode::FAILURE)
        }
        Err(error) => Err(CliError::Client(error)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

fn client_config(args: &ConnectionArgs) -> Result<ClientConfig, CliError> {
    let transcript = match &args.transcript {
        Some(path) => Some(
            Transcript::create(path).map_err(|source| CliError::Transcript {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    Ok(ClientConfig {
        backoff: Backoff {
            base: args.backoff_base,
            cap: args.backoff_cap,
        },
        attempts_max: args.attempts,
        attempt_timeout: args.timeout,
        budget: Arc::new(RetryBudget::default()),
        transcript,
        token: args.credentials.token().map_err(CliError::Token)?,
        ca_file: args.credentials.ca_file.clone(),
        ..ClientConfig::default()
    })
}

/// Why a command could not run its operation (a client that gave up is not an
/// error: it has its own exit status). Each message is one sentence for the operator.
#[derive(Debug)]
#[non_exhaustive]
pub enum CliError {
    /// `--transcript FILE` cannot be created.
    Transcript {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The token cannot be read (shown as the token error says it).
    Token(TokenError),
    /// The tokio runtime did not start.
    Runtime(std::io::Error),
    /// The client cannot be set up or the request not built (shown as the client says it).
    Client(ClientError),
    /// The request breaks a limit of API.md (a transfer's legs, an expiry); nothing was sent.
    Body(BodyError),
    /// A list cannot be walked: not a list request (nothing sent), or a page that is not one.
    List(ListError),
    /// The items cannot be written to stdout.
    Output(std::io::Error),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Transcript { path, source } => {
                write!(
                    f,
                    "cannot create the transcript {}: {source}",
                    path.display()
                )
            }
            CliError::Token(error) => error.fmt(f),
            CliError::Runtime(source) => write!(f, "cannot start the runtime: {source}"),
            CliError::Client(error) => error.fmt(f),
            CliError::Body(error) => write!(f, "not sent: {error}"),
            CliError::List(error) => error.fmt(f),
            CliError::Output(source) => write!(f, "cannot write to stdout: {source}"),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::Transcript { source, .. }
            | CliError::Runtime(source)
            | CliError::Output(source) => Some(source),
            CliError::List(error) => std::error::Error::source(error),
            // Transparent: the message is the wrapped error's, so the source is its own.
            CliError::Token(error) => std::error::Error::source(error),
            CliError::Client(error) => std::error::Error::source(error),
            CliError::Body(error) => Some(error),
        }
    }
}

/// A duration such as `50ms`, `10s` or `30d` (humantime), for command-line flags.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(text).map_err(|source| DurationError::NotADuration {
        text: text.to_owned(),
        source,
    })
}

/// Why a flag's value is not a duration. Clap shows the message after the flag's name.
#[derive(Debug)]
#[non_exhaustive]
pub enum DurationError {
    NotADuration {
        text: String,
        source: humantime::DurationError,
    },
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::NotADuration { text, source } => {
                write!(f, "{text:?} is not a duration: {source}")
            }
        }
    }
}

impl std::error::Error for DurationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DurationError::NotADuration { source, .. } => Some(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The commands as the binary nests them, so flags parse as they do for an operator.
    #[derive(clap::Parser, Debug)]
    #[command(name = "onceledger")]
    enum Commands {
        Charge(ChargeArgs),
        Capture(CaptureArgs),
        Void(VoidArgs),
        Refund(RefundArgs),
        Transfer(TransferArgs),
        #[command(subcommand)]
        Client(ClientCommand),
    }

    fn parse(words: &str) -> Result<Commands, clap::Error> {
        Commands::try_parse_from(std::iter::once("onceledger").chain(words.split_whitespace()))
    }

    /// Guards `charge --no-capture [--expires-in SECS]`: the expiry needs --no-capture and
    /// API.md's range, and the body sent is an authorization.
    #[test]
    fn charge_no_capture_builds_an_authorization() {
        let base = "charge --source a --destination b --amount 5 --currency EUR";
        let Ok(Commands::Charge(args)) = parse(&format!("{base} --no-capture --expires-in 60"))
        else {
            panic!("an authorization with an expiry parses");
        };
        assert!(args.no_capture);
        assert_eq!(args.expires_in, Some(EXPIRES_IN_SECS_MIN));
        let without = parse(&format!("{base} --expires-in 60")).map(|_| ());
        assert_eq!(
            without.map_err(|e| e.kind()),
            Err(clap::error::ErrorKind::MissingRequiredArgument)
        );
        assert!(parse(&format!("{base} --no-capture --expires-in 59")).is_err());
        assert!(parse(&format!("{base} --no-capture --expires-in 2592001")).is_err());
    }

    /// Guards the id arguments of capture, void and refund: a charge id that is not one plain
    /// path segment is a usage error, not a request to some other path.
    #[test]
    fn capture_void_and_refund_take_a_plain_charge_id() {
        match parse("capture ch_1 --amount 3") {
            Ok(Commands::Capture(args)) => {
                assert_eq!(args.id.as_str(), "ch_1");
                assert_eq!(args.amount, Some(3));
            }
            other => panic!("capture with an amount: {other:?}"),
        }
        assert!(matches!(parse("void ch_2"), Ok(Commands::Void(a)) if a.id.as_str() == "ch_2"));
        match parse("refund ch_3 --metadata reason=damaged") {
            Ok(Commands::Refund(args)) => {
                assert_eq!(args.amount, None);
                assert_eq!(args.metadata, vec![("reason".into(), "damaged".into())]);
            }
            other => panic!("refund with metadata: {other:?}"),
        }
        for bad in ["capture ../accounts", "void ch/1", "refund ch_1 --amount 0"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    /// Guards `transfer --leg SRC:DST:AMOUNT`: repeated legs keep their order, at least one is
    /// required.
    #[test]
    fn transfer_legs_repeat_in_order() {
        match parse("transfer --currency EUR --leg c:m:100 --leg m:p:3") {
            Ok(Commands::Transfer(args)) => {
                let legs: Vec<_> = args.legs.iter().map(|l| l.amount).collect();
                assert_eq!(legs, [100, 3]);
            }
            other => panic!("a two-leg transfer: {other:?}"),
        }
        assert!(parse("transfer --currency EUR").is_err());
        assert!(parse("transfer --currency EUR --leg c:m").is_err());
    }

    /// Guards `client list PATH`: repeated --param keep their order, --limit and --order take
    /// only what API.md allows, and no idempotency key is taken (a GET has none).
    #[test]
    fn client_list_takes_params_limit_order_and_max() {
        let words = "client list /v1/charges --limit 7 --order asc --param status=succeeded \
                     --param created_gte=2026-01-01T00:00:00Z --max 30";
        match parse(words) {
            Ok(Commands::Client(ClientCommand::List(args))) => {
                assert_eq!(args.path, "/v1/charges");
                assert_eq!((args.limit, args.order.as_deref()), (Some(7), Some("asc")));
                assert_eq!(args.max, Some(30));
                let keys: Vec<&str> = args.params.iter().map(|(k, _)| k.as_str()).collect();
                assert_eq!(keys, ["status", "created_gte"]);
            }
            other => panic!("a list: {other:?}"),
        }
        for bad in [
            "client list /v1/accounts --limit 0",
            "client list /v1/accounts --limit 101",
            "client list /v1/accounts --order up",
            "client list /v1/accounts --param nokey",
            "client list /v1/accounts --idempotency-key k",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
