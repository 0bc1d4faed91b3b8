//! `nexus`: the command-line tool of the Nexus metadata store. The binary
//! is `main.rs`; this library holds the argument parser ([`Cli`]) and the
//! commands, so that tests and fuzzers can reach them.

mod list;
mod output;
mod scan;
mod sync_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use nexus_core::{DynStore, Error, MigrationStatus, NewFile, Store, Timestamp};
use serde_json::{Value, json};

use crate::output::Out;

/// Record and query file metadata in a Nexus store (a SQLite-format file).
#[derive(Debug, Parser)]
#[command(name = "nexus", version, about, max_term_width = 100)]
pub struct Cli {
    /// The store: a file path (`sqlite:` prefix optional) or a
    /// `postgresql://` URL. Default: $NEXUS_DB, else $NEXUS_DATABASE_URL,
    /// else the config file's `url`, else ./nexus.db.
    #[arg(long, global = true)]
    db: Option<String>,
    /// The tenant every command works in (default: $NEXUS_TENANT, the config file, `default`).
    #[arg(long, global = true, env = "NEXUS_TENANT")]
    tenant: Option<String>,
    /// Settings file (default: ./nexus.toml when it exists). Flags and
    /// environment variables override it.
    #[arg(long, global = true, env = "NEXUS_CONFIG")]
    config: Option<PathBuf>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for another process that holds the database, or for
    /// a pooled PostgreSQL connection (default: the config file, else 30).
    #[arg(
        long,
        allow_negative_numbers = true,
        global = true,
        env = "NEXUS_BUSY_TIMEOUT"
    )]
    busy_timeout: Option<f64>,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Parses `args` (the first is the program name) without printing or
    /// exiting; a usage error comes back as its message.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        <Cli as Parser>::try_parse_from(args).map_err(|e| e.to_string())
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database (if needed) and bring its schema to the newest version.
    Init,
    /// Record a file (create or update).
    Put(PutArgs),
    /// Show one file.
    Get {
        /// The file's path.
        path: String,
    },
    /// List files under a prefix, sorted by path.
    Ls(LsArgs),
    /// Delete a file (soft: history is kept).
    Rm {
        /// The file's path.
        path: String,
    },
    /// Rename a file or a directory with everything below it.
    Mv {
        /// The current path.
        old: String,
        /// The new path.
        new: String,
    },
    /// Key/value metadata of a file; values are JSON.
    #[command(subcommand)]
    Meta(MetaCommand),
    /// Find files by metadata: `KEY` or `KEY=JSON` (or `--key KEY [--value
    /// JSON]`, for a key that holds `=`).
    #[command(group(clap::ArgGroup::new("what").required(true).args(["query", "key"])))]
    Find {
        /// `KEY`, or `KEY=JSON` to match a value (split at the first `=`).
        query: Option<String>,
        /// The key, taken whole (it may hold `=`).
        #[arg(long, conflicts_with = "query")]
        key: Option<String>,
        /// The value to match, as JSON (with `--key`).
        #[arg(long, requires = "key")]
        value: Option<String>,
    },
    /// A file's versions, newest first.
    Versions {
        /// The file's path.
        path: String,
    },
    /// Make an earlier version current again (as a new version).
    Rollback {
        /// The file's path.
        path: String,
        /// The version to restore.
        #[arg(allow_negative_numbers = true)]
        version: u32,
    },
    /// Record every file of a folder; re-scanning updates only what changed
    /// and removes records of files that are gone.
    Scan {
        /// The folder to scan.
        dir: PathBuf,
        /// Where its files go in the store (default: `/` + the folder's name).
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Schema migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Counts for the tenant; with a PREFIX, the files and bytes below it
    /// and in each of its subdirectories (as `du -d1`).
    Stats(StatsArgs),
    /// Push the store's changes (all tenants) into PostgreSQL or a sync
    /// server (`push` is the same command): a bulk load the first time,
    /// then only what changed; safe to interrupt and re-run. Conflicts
    /// with other sources are resolved (conflict copies) and reported,
    /// never fatal. With --with, push and then pull; with --from-changes,
    /// apply a change file instead (no --db needed).
    #[command(visible_alias = "push")]
    Sync {
        /// The database to push into (default: $NEXUS_DATABASE_URL).
        #[arg(
            long,
            env = "NEXUS_DATABASE_URL",
            hide_env_values = true,
            required_unless_present = "with"
        )]
        to: Option<String>,
        /// Sync both ways with this database: push, then pull.
        #[arg(long, value_name = "URL", conflicts_with_all = ["dry_run", "from_changes"])]
        with: Option<String>,
        /// Report what would be sent and every value that would not convert; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply this change file (`-` for stdin) to the target, exactly once
        /// per source and in order, instead of syncing the store.
        #[arg(long, value_name = "FILE", conflicts_with = "dry_run")]
        from_changes: Option<String>,
        /// Rows read per window per table (memory bound).
        #[arg(long, allow_negative_numbers = true, default_value_t = 10_000)]
        window: usize,
        /// The bearer token for a sync server (`http(s)://` URLs).
        #[arg(long, env = "NEXUS_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// With --with: keep syncing, after local changes and every
        /// --interval seconds, until interrupted.
        #[arg(long, requires = "with")]
        watch: bool,
        /// Seconds between syncs of --watch.
        #[arg(
            long,
            allow_negative_numbers = true,
            default_value_t = 10.0,
            requires = "watch"
        )]
        interval: f64,
    },
    /// Bring in every change that PostgreSQL (or a sync server, for the
    /// token's tenant) has and this store has not (other sources' pushes,
    /// writes made on the database), exactly once.
    Pull {
        /// The database or sync server to pull from (default: $NEXUS_DATABASE_URL).
        #[arg(long, env = "NEXUS_DATABASE_URL", hide_env_values = true)]
        from: String,
        /// Rows per page of the database's change feed (memory bound).
        #[arg(long, allow_negative_numbers = true, default_value_t = 10_000)]
        window: usize,
        /// The bearer token for a sync server (`http(s)://` URLs).
        #[arg(long, env = "NEXUS_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Run the sync server: stores that cannot reach PostgreSQL (browsers,
    /// apps) push and pull through it, with bearer tokens per tenant. The
    /// database is --db (a `postgresql://` URL). Settings also from the
    /// config file's [serve] section.
    Serve(ServeArgs),
    /// Write the store's changes (all tenants) after change --since as a
    /// change file, for `import-changes` or `sync --from-changes`.
    ExportChanges {
        /// Only changes after this change sequence number (0: everything).
        #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
        since: i64,
        /// Write the file here (default: stdout).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Apply a change file of another store (`-` for stdin) to this
    /// embedded store, exactly once per source and in order, all or nothing.
    ImportChanges {
        /// The change file.
        file: String,
    },
    /// Compare the store with a PostgreSQL copy, table by table.
    Verify {
        /// The target database (default: $NEXUS_DATABASE_URL).
        #[arg(long, env = "NEXUS_DATABASE_URL", hide_env_values = true)]
        to: String,
    },
}

impl Command {
    /// Whether the command works on records that must be there already (it
    /// reads them, or changes or removes one): run on an embedded store
    /// that does not exist (a mistyped `--db`, another folder), it says so
    /// instead of making an empty store there.
    fn needs_a_store(&self) -> bool {
        matches!(
            self,
            Command::Get { .. }
                | Command::Ls(_)
                | Command::Rm { .. }
                | Command::Mv { .. }
                | Command::Meta(_)
                | Command::Find { .. }
                | Command::Versions { .. }
                | Command::Rollback { .. }
                | Command::Stats(_)
                | Command::ExportChanges { .. }
                | Command::Verify { .. }
                | Command::Migrate {
                    action: MigrateAction::Status | MigrateAction::Down { .. }
                }
                | Command::Sync {
                    with: None,
                    from_changes: None,
                    ..
                }
        )
    }
}

/// Arguments of `put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The file's virtual path.
    path: String,
    /// The storage backend (`local`, `s3`, ...).
    #[arg(long)]
    backend: String,
    /// Where the backend keeps the content.
    #[arg(long)]
    physical: String,
    /// Size in bytes.
    #[arg(long, allow_negative_numbers = true)]
    size: i64,
    /// Content hash; a new one makes a new version.
    #[arg(long)]
    etag: Option<String>,
    /// MIME type.
    #[arg(long)]
    mime: Option<String>,
}

/// Arguments of `ls`. `-h` is `--human-readable`, as in `ls`; help is `--help`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct LsArgs {
    /// A directory, or any path prefix (default `/`).
    prefix: Option<String>,
    /// Everything below, not only direct children (files only, as `find -type f`).
    #[arg(short, long, visible_short_alias = 'R')]
    recursive: bool,
    /// At most this many entries (1 to 10000); prints a cursor when there are more.
    #[arg(long, allow_negative_numbers = true)]
    limit: Option<usize>,
    /// Continue a listing from the cursor a previous page printed.
    #[arg(long)]
    cursor: Option<String>,
    /// Sizes in KiB, MiB, GiB (one decimal, rounded up, as `ls -h`).
    #[arg(short = 'h', long)]
    human_readable: bool,
    /// Paths only, one per line (directories end with `/`), as `ls -1`.
    #[arg(short = '1')]
    one_per_line: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

/// Arguments of `stats`. `-h` is `--human-readable`, as in `du`; help is `--help`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct StatsArgs {
    /// Sum the files below this directory or path prefix, and per subdirectory.
    prefix: Option<String>,
    /// Sizes in KiB, MiB, GiB (one decimal, rounded up, as `du -h`).
    #[arg(short = 'h', long)]
    human_readable: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

/// The `meta` subcommands.
#[derive(Debug, Subcommand)]
pub enum MetaCommand {
    /// Set KEY of PATH to a JSON value.
    Set {
        /// The file's path.
        path: String,
        /// The key.
        key: String,
        /// The value, as JSON (`"text"`, `42`, `["a"]`, `{"k": 1}`).
        value: String,
    },
    /// Print KEY of PATH.
    Get {
        /// The file's path.
        path: String,
        /// The key.
        key: String,
    },
    /// Remove KEY from PATH.
    Rm {
        /// The file's path.
        path: String,
        /// The key.
        key: String,
    },
    /// Print every key of PATH.
    Ls {
        /// The file's path.
        path: String,
    },
}

/// The `migrate` subcommands.
#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Show every migration and whether it is applied.
    Status,
    /// Apply pending migrations (up to --to, default all).
    Up {
        /// Stop at this version.
        #[arg(long, allow_negative_numbers = true)]
        to: Option<u32>,
    },
    /// Revert migrations down to --to (0 removes every table and all data).
    Down {
        /// Revert down to this version (default: the one before the current).
        #[arg(long, allow_negative_numbers = true)]
        to: Option<u32>,
    },
}

/// An error for the user: one line on stderr and an exit code; or, when
/// stdout's reader went away, nothing at all ([`Failure::stdout_closed`]).
#[derive(Debug)]
pub struct Failure {
    message: String,
    code: u8,
    quiet: bool,
}

impl Failure {
    /// Stdout was closed by its reader: stop, say nothing, exit 0 (see
    /// `output::stdout_failure` for why 0).
    pub(crate) fn stdout_closed() -> Failure {
        Failure {
            message: String::new(),
            code: 0,
            quiet: true,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        fail(one_line(&e))
    }
}

pub(crate) use nexus_core::one_line;

fn fail(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 1,
        quiet: false,
    }
}

/// Parses the process's arguments, runs the command, and reports a failure
/// as one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match pollster::block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.quiet {
                output::warn(f.message.replace('\n', " "));
            }
            ExitCode::from(f.code)
        }
    }
}

/// The store the command works on.
enum Opened {
    Embedded(Store),
    Postgres(nexus_pg::PgStore),
}

impl Opened {
    fn dyn_store(&self) -> DynStore {
        match self {
            Opened::Embedded(s) => std::sync::Arc::new(s.clone()),
            Opened::Postgres(s) => std::sync::Arc::new(s.clone()),
        }
    }
}

/// `nexus.toml`: the settings a deployment keeps in a file.
///
/// ```toml
/// [database]
/// url = "postgresql://nexus@db.internal/nexus"   # or a file path
/// tenant = "default"
/// pool_size = 16
/// wait_timeout_secs = 30        # waiting for a pooled connection, or for a busy file
/// statement_timeout_secs = 60
/// read_replica_url = "postgresql://nexus@replica.internal/nexus"
/// read_your_writes_secs = 5     # after a write, reads stay on the primary this long
/// max_replica_lag_secs = 5      # the staleness bound for replica reads
/// ```
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    database: DatabaseConfig,
    #[serde(default)]
    serve: ServeConfig,
}

/// The `[serve]` section: the settings of `nexus serve` (flags override).
///
/// ```toml
/// [serve]
/// listen = "127.0.0.1:8080"
/// jwt_public_key = "/etc/nexus/jwt.pem"   # or jwt_secret (or $NEXUS_JWT_SECRET)
/// tokens = "/etc/nexus/tokens"
/// tenant_claim = "tenant"
/// max_body_bytes = 67108864
/// max_push_bytes = 1073741824
/// request_timeout_secs = 60
/// max_applies_per_tenant = 2
/// max_applies = 8
/// max_page_rows = 10000
/// cors_origins = ["https://app.example.com"]
/// ```
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeConfig {
    listen: Option<std::net::SocketAddr>,
    jwt_secret: Option<String>,
    jwt_public_key: Option<PathBuf>,
    tokens: Option<PathBuf>,
    tenant_claim: Option<String>,
    max_body_bytes: Option<usize>,
    max_push_bytes: Option<u64>,
    request_timeout_secs: Option<f64>,
    max_applies_per_tenant: Option<usize>,
    max_applies: Option<usize>,
    max_page_rows: Option<usize>,
    cors_origins: Option<Vec<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseConfig {
    url: Option<String>,
    tenant: Option<String>,
    pool_size: Option<usize>,
    wait_timeout_secs: Option<f64>,
    statement_timeout_secs: Option<f64>,
    read_replica_url: Option<String>,
    read_your_writes_secs: Option<f64>,
    max_replica_lag_secs: Option<f64>,
}

fn secs(name: &str, v: f64) -> Result<Duration, Failure> {
    if v.is_finite() && v >= 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(fail(format!("{name} must be a number of seconds, got {v}")))
    }
}

/// `message` with each double-quoted value replaced by `"…"`: a config
/// error names the field (in backquotes) and the expected type, never the
/// value given.
fn without_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    out.push_str(parts.next().unwrap_or_default());
    let mut inside = true;
    for part in parts {
        if inside {
            out.push_str("\"…");
        } else {
            out.push('"');
            out.push_str(part);
        }
        inside = !inside;
    }
    out
}

impl Cli {
    fn config_file(&self) -> Result<DatabaseConfig, Failure> {
        Ok(self.read_config()?.database)
    }

    fn read_config(&self) -> Result<ConfigFile, Failure> {
        let (path, required) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from("nexus.toml"), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ConfigFile::default());
            }
            Err(e) => {
                return Err(fail(format!(
                    "cannot read the config file {}: {e}",
                    path.display()
                )));
            }
        };
        let parsed: ConfigFile = toml::from_str(&text).map_err(|e| {
            // The parser's own text quotes the offending line, which may
            // hold a secret (`jwt_secret`, a URL with a password): say where
            // and what, with any quoted value left out.
            let line = e
                .span()
                .map(|s| format!(", line {}", text[..s.start].matches('\n').count() + 1))
                .unwrap_or_default();
            fail(format!(
                "invalid config file {}{line}: {}",
                path.display(),
                without_quoted(e.message())
            ))
        })?;
        Ok(parsed)
    }

    /// Where the store is: `--db`, else $NEXUS_DB, else $NEXUS_DATABASE_URL,
    /// else the config file's `url`, else ./nexus.db.
    fn location(&self, config: &DatabaseConfig) -> String {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        self.db
            .clone()
            .or_else(|| env("NEXUS_DB"))
            .or_else(|| env("NEXUS_DATABASE_URL"))
            .or_else(|| config.url.clone())
            .unwrap_or_else(|| "nexus.db".to_string())
    }
}

async fn open(cli: &Cli, migrate: bool) -> Result<Opened, Failure> {
    let config = cli.config_file()?;
    let busy = secs(
        "--busy-timeout",
        cli.busy_timeout
            .or(config.wait_timeout_secs)
            .unwrap_or(30.0),
    )?;
    let tenant = cli
        .tenant
        .clone()
        .or_else(|| config.tenant.clone())
        .unwrap_or_else(|| nexus_core::DEFAULT_TENANT.to_string());
    let location = cli.location(&config);
    let path = match nexus_pg::Location::parse(&location) {
        nexus_pg::Location::Embedded(path) => path,
        nexus_pg::Location::Postgres(url) => {
            let defaults = nexus_pg::PgOptions::default();
            let options = nexus_pg::PgOptions {
                tenant,
                pool_size: config.pool_size.unwrap_or(defaults.pool_size),
                wait_timeout: busy.max(Duration::from_secs(1)),
                statement_timeout: match config.statement_timeout_secs {
                    Some(v) => secs("statement_timeout_secs", v)?,
                    None => defaults.statement_timeout,
                },
                read_replica_url: config.read_replica_url.clone(),
                read_your_writes: match config.read_your_writes_secs {
                    Some(v) => secs("read_your_writes_secs", v)?,
                    None => defaults.read_your_writes,
                },
                max_replica_lag: match config.max_replica_lag_secs {
                    Some(v) => secs("max_replica_lag_secs", v)?,
                    None => defaults.max_replica_lag,
                },
                migrate,
                ..defaults
            };
            return Ok(Opened::Postgres(
                nexus_pg::PgStore::connect(&url, options).await?,
            ));
        }
    };
    // (An error other than "not found", such as no permission, is left to
    // the open to report.)
    if cli.command.needs_a_store()
        && path != ":memory:"
        && matches!(Path::new(&path).try_exists(), Ok(false))
    {
        return Err(fail(format!(
            "no store at {path}: the file does not exist (`nexus init` makes one)"
        )));
    }
    Ok(Opened::Embedded(
        Store::builder()
            .path(path)
            .tenant(tenant)
            .busy_timeout(busy)
            .migrate(migrate)
            .open()
            .await?,
    ))
}

fn not_found(path: &str) -> Failure {
    Failure::from(Error::NotFound {
        path: path.to_string(),
    })
}

/// `nexus serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// HS256 secret of the JWTs (default: $NEXUS_JWT_SECRET).
    #[arg(long, env = "NEXUS_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// PEM public key of the JWTs: RSA (RS256) or P-256 (ES256).
    #[arg(long, value_name = "FILE")]
    jwt_public_key: Option<PathBuf>,
    /// Static tokens: a file of `TENANT SHA256-HEX` lines.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// The JWT claim that names the tenant (default `tenant`).
    #[arg(long)]
    tenant_claim: Option<String>,
    /// Largest request body in bytes (default 64 MiB).
    #[arg(long, allow_negative_numbers = true)]
    max_body_bytes: Option<usize>,
    /// Largest push in bytes when one transaction comes in parts (default
    /// 1 GiB; the server holds it whole while it applies it).
    #[arg(long, allow_negative_numbers = true)]
    max_push_bytes: Option<u64>,
    /// Seconds before a request is answered 408 (default 60).
    #[arg(long, allow_negative_numbers = true)]
    request_timeout: Option<f64>,
    /// Pushes applied at once per tenant (default 2).
    #[arg(long, allow_negative_numbers = true)]
    max_applies_per_tenant: Option<usize>,
    /// Pushes applied at once over all tenants (default 8; each is held in
    /// memory while it applies).
    #[arg(long, allow_negative_numbers = true)]
    max_applies: Option<usize>,
    /// Rows of a pull page at most (default 10,000).
    #[arg(long, allow_negative_numbers = true)]
    max_page_rows: Option<usize>,
    /// An origin whose pages may call the server (repeatable; `*`: any).
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let out = Out::new(cli.json);
    if let Command::Serve(args) = &cli.command {
        return serve(&cli, args);
    }
    if let Command::Migrate { action } = &cli.command {
        let opened = open(&cli, false).await?;
        return migrate(&opened, action, &out).await;
    }
    match &cli.command {
        Command::Sync {
            from_changes: Some(file),
            to,
            ..
        } => return sync_cmd::sync_from_changes(file, &target_of(to, &None)?, &out),
        Command::ImportChanges { .. } | Command::ExportChanges { .. }
            if matches!(
                nexus_pg::Location::parse(&cli.location(&cli.config_file()?)),
                nexus_pg::Location::Postgres(_)
            ) =>
        {
            return Err(fail(
                "import-changes and export-changes work on an embedded store (pass its file with --db); \
                 to apply a change file to PostgreSQL use `nexus sync --from-changes FILE --to URL`",
            ));
        }
        _ => {}
    }
    let opened = open(&cli, true).await?;
    let store = opened.dyn_store();
    match &cli.command {
        Command::Init => {
            let stats = store.stats().await?;
            let shown = nexus_pg::Location::parse(&cli.location(&cli.config_file()?)).redacted();
            out.value(
                &json!({"database": shown, "schema_version": stats.schema_version}),
                || {
                    format!(
                        "initialized {shown} (schema version {})",
                        stats.schema_version
                    )
                },
            )?;
        }
        Command::Put(a) => {
            let size = u64::try_from(a.size)
                .map_err(|_| fail(format!("invalid size {}: must be at least 0", a.size)))?;
            let mut file = NewFile::new(&a.path, &a.backend, &a.physical, size);
            file.etag = a.etag.clone();
            file.mime_type = a.mime.clone();
            let record = store.put(file).await?;
            out.record(&record)?;
        }
        Command::Get { path } => {
            let record = store.get(path).await?.ok_or_else(|| not_found(path))?;
            out.record(&record)?;
        }
        Command::Ls(a) => list::ls(&store, a, &out).await?,
        Command::Rm { path } => {
            let record = store.delete(path).await?.ok_or_else(|| not_found(path))?;
            out.value(&json!({"deleted": record}), || {
                format!("deleted {}", record.path)
            })?;
        }
        Command::Mv { old, new } => {
            let moved = store.rename(old, new).await?;
            out.value(&json!({"from": old, "to": new, "moved": moved}), || {
                format!(
                    "moved {old} -> {new} ({})",
                    output::count(moved as u64, "file")
                )
            })?;
        }
        Command::Meta(m) => meta(&store, m, &out).await?,
        Command::Find { query, key, value } => {
            let (key, value) = match (query, key) {
                (Some(query), _) => match query.split_once('=') {
                    Some((k, v)) => (k, Some(v)),
                    None => (query.as_str(), None),
                },
                (None, key) => (key.as_deref().unwrap_or_default(), value.as_deref()),
            };
            let value = value.map(|v| parse_json(key, v)).transpose()?;
            let found = store.find_by_metadata(key, value.as_ref()).await?;
            let items: Vec<Value> = found
                .iter()
                .map(|(p, v)| json!({"path": p, "value": v}))
                .collect();
            out.value(&json!({"items": items}), || {
                found
                    .iter()
                    .map(|(p, v)| format!("{p}\t{v}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
        }
        Command::Versions { path } => {
            let versions = store.list_versions(path).await?;
            out.versions(&versions)?;
        }
        Command::Rollback { path, version } => {
            let record = store.rollback(path, *version).await?;
            out.record(&record)?;
        }
        Command::Scan { dir, prefix } => {
            let own = match &opened {
                Opened::Embedded(s) => scan::own_files(Path::new(s.location())),
                Opened::Postgres(_) => Vec::new(),
            };
            let summary = scan::scan(&store, dir, prefix.as_deref(), !cli.json, &own).await?;
            out.value(
                &serde_json::to_value(&summary).expect("serializable"),
                || summary.to_string(),
            )?;
        }
        Command::Stats(a) => list::stats(&store, a, &out).await?,
        Command::ExportChanges { since, output } => {
            sync_cmd::export_changes(embedded(&opened)?, *since, output.as_deref(), &out).await?;
        }
        Command::ImportChanges { file } => {
            sync_cmd::import_changes(embedded(&opened)?, file, &out).await?;
        }
        Command::Sync {
            to: _,
            with: Some(url),
            window,
            token,
            watch,
            interval,
            ..
        } => {
            let remote = sync_cmd::remote(url, token)?;
            if *watch {
                sync_cmd::watch(embedded(&opened)?, &remote, *window, *interval, &out)?;
            } else {
                sync_cmd::sync_with(embedded(&opened)?, &remote, *window, &out)?;
            }
        }
        Command::Sync {
            to,
            with: None,
            dry_run,
            window,
            token,
            ..
        } => {
            sync_cmd::sync(
                embedded(&opened)?,
                &sync_cmd::remote(&target_of(to, &None)?, token)?,
                *dry_run,
                *window,
                &out,
            )?;
        }
        Command::Pull {
            from,
            window,
            token,
        } => sync_cmd::pull(
            embedded(&opened)?,
            &sync_cmd::remote(from, token)?,
            *window,
            &out,
        )?,
        Command::Serve(_) => unreachable!("handled above"),
        Command::Verify { to } => sync_cmd::verify(embedded(&opened)?, to, &out)?,
        Command::Migrate { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// `nexus serve`: settings from flags, else the config file, else defaults.
fn serve(cli: &Cli, a: &ServeArgs) -> Result<(), Failure> {
    let config = cli.read_config()?;
    let c = &config.serve;
    let location = cli.location(&config.database);
    let db = match nexus_pg::Location::parse(&location) {
        nexus_pg::Location::Postgres(url) => {
            nexus_sync::PgUrl::parse(&url).map_err(|e| fail(crate::one_line(&e)))?
        }
        nexus_pg::Location::Embedded(_) => {
            return Err(fail(
                "nexus serve needs a PostgreSQL database: pass --db postgresql://... (or $NEXUS_DATABASE_URL)",
            ));
        }
    };
    let listen = a
        .listen
        .or(c.listen)
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8080)));
    let mut settings = nexus_server::Config::new(db, listen);
    if let Some(n) = a.max_body_bytes.or(c.max_body_bytes) {
        settings.max_body_bytes = n;
    }
    if let Some(n) = a.max_push_bytes.or(c.max_push_bytes) {
        settings.max_push_bytes = n;
    }
    if let Some(t) = a.request_timeout.or(c.request_timeout_secs) {
        settings.request_timeout = secs("--request-timeout", t)?;
    }
    if let Some(n) = a.max_applies_per_tenant.or(c.max_applies_per_tenant) {
        settings.max_applies_per_tenant = n;
    }
    if let Some(n) = a.max_applies.or(c.max_applies) {
        settings.max_applies = n;
    }
    if let Some(n) = a.max_page_rows.or(c.max_page_rows) {
        settings.max_page_rows = n;
    }
    settings.cors_origins = if a.cors_origins.is_empty() {
        c.cors_origins.clone().unwrap_or_default()
    } else {
        a.cors_origins.clone()
    };
    let auth = nexus_server::Auth::new(&nexus_server::AuthSettings {
        jwt_secret: a.jwt_secret.clone().or_else(|| c.jwt_secret.clone()),
        jwt_public_key: a
            .jwt_public_key
            .clone()
            .or_else(|| c.jwt_public_key.clone()),
        tokens: a.tokens.clone().or_else(|| c.tokens.clone()),
        tenant_claim: a.tenant_claim.clone().or_else(|| c.tenant_claim.clone()),
    })
    .map_err(|e| fail(e.to_string()))?;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let db_shown = settings.db.to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        let server = nexus_server::Server::bind(settings, auth)
            .await
            .map_err(|e| fail(crate::one_line(&e)))?;
        tracing::info!(addr = %server.local_addr(), db = %db_shown, "nexus serve listening");
        // The address on stdout too, for whoever started the server with
        // port 0 (tests, scripts). A closed stdout does not stop a server:
        // nobody reading the line is no reason to refuse requests.
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on http://{}", server.local_addr());
            let _ = out.flush();
        }
        server
            .serve(nexus_server::shutdown_signal())
            .await
            .map_err(|e| fail(format!("the server stopped: {e}")))
    })
}

/// The database of `sync`: --to (or $NEXUS_DATABASE_URL), else --with.
fn target_of(to: &Option<String>, with: &Option<String>) -> Result<String, Failure> {
    to.clone().or_else(|| with.clone()).ok_or_else(|| {
        fail("give the database with --to URL (push) or --with URL (push, then pull)")
    })
}

fn parse_json(key: &str, text: &str) -> Result<Value, Failure> {
    serde_json::from_str(text).map_err(|e| {
        fail(format!(
            "the value for {key:?} is not valid JSON ({e}): {text}; quote strings, as in '\"text\"'"
        ))
    })
}

/// Sync reads an embedded store.
fn embedded(opened: &Opened) -> Result<&Store, Failure> {
    match opened {
        Opened::Embedded(s) => Ok(s),
        Opened::Postgres(_) => Err(fail(
            "sync and verify copy an embedded store into PostgreSQL: pass the store file with --db",
        )),
    }
}

async fn meta(store: &DynStore, m: &MetaCommand, out: &Out) -> Result<(), Failure> {
    match m {
        MetaCommand::Set { path, key, value } => {
            let value = parse_json(key, value)?;
            store.set_metadata(path, key, &value).await?;
            out.value(&json!({"path": path, "key": key, "value": value}), || {
                format!("{path}: {key} = {value}")
            })?;
        }
        MetaCommand::Get { path, key } => {
            let value = store
                .get_metadata(path, key)
                .await?
                .ok_or_else(|| fail(format!("{path} has no metadata key {key:?}")))?;
            out.value(&json!({"path": path, "key": key, "value": value}), || {
                value.to_string()
            })?;
        }
        MetaCommand::Rm { path, key } => {
            if !store.delete_metadata(path, key).await? {
                return Err(fail(format!("{path} has no metadata key {key:?}")));
            }
            out.value(&json!({"path": path, "key": key, "deleted": true}), || {
                format!("{path}: removed {key}")
            })?;
        }
        MetaCommand::Ls { path } => {
            let all = store.list_metadata(path).await?;
            out.value(&json!({"path": path, "metadata": all}), || {
                all.iter()
                    .map(|(k, v)| format!("{k}\t{v}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
        }
    }
    Ok(())
}

async fn migrate(opened: &Opened, action: &MigrateAction, out: &Out) -> Result<(), Failure> {
    let status = async || -> Result<Vec<MigrationStatus>, Failure> {
        Ok(match opened {
            Opened::Embedded(s) => s.migration_status().await?,
            Opened::Postgres(s) => s.migration_status().await?,
        })
    };
    match action {
        MigrateAction::Status => {
            let status = status().await?;
            let rows: Vec<Value> = status.iter().map(status_json).collect();
            out.value(&json!({"migrations": rows}), || {
                status
                    .iter()
                    .map(|s| {
                        let v = status_json(s);
                        format!(
                            "{:>4}  {:<24} {:<8} {}",
                            v["version"],
                            v["name"].as_str().unwrap_or(""),
                            v["state"].as_str().unwrap_or(""),
                            v["applied_at"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
        }
        MigrateAction::Up { to } => {
            let done = match opened {
                Opened::Embedded(s) => s.migrate_up(*to).await?,
                Opened::Postgres(s) => s.migrate_up(*to).await?,
            };
            out.value(&json!({"applied": done}), || match done.as_slice() {
                [] => "nothing to apply".to_string(),
                d => format!("applied {d:?}"),
            })?;
        }
        MigrateAction::Down { to } => {
            let current = status()
                .await?
                .iter()
                .filter_map(|s| match s {
                    MigrationStatus::Applied { migration, .. }
                    | MigrationStatus::Modified { migration, .. } => Some(migration.version),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            let target = to.unwrap_or(current.saturating_sub(1));
            let done = match opened {
                Opened::Embedded(s) => s.migrate_down(target).await?,
                Opened::Postgres(s) => s.migrate_down(target).await?,
            };
            out.value(&json!({"reverted": done}), || match done.as_slice() {
                [] => "nothing to revert".to_string(),
                d => format!("reverted {d:?}"),
            })?;
        }
    }
    Ok(())
}

fn status_json(s: &MigrationStatus) -> Value {
    match s {
        MigrationStatus::Applied {
            migration,
            applied_at,
        } => json!({
            "version": migration.version, "name": migration.name, "state": "applied",
            "applied_at": Timestamp::from_micros(*applied_at).to_string(),
        }),
        MigrationStatus::Modified { migration, .. } => json!({
            "version": migration.version, "name": migration.name, "state": "modified",
        }),
        MigrationStatus::Pending { migration } => json!({
            "version": migration.version, "name": migration.name, "state": "pending",
        }),
        MigrationStatus::Unknown { applied } => json!({
            "version": applied.version, "name": applied.name, "state": "unknown",
            "applied_at": Timestamp::from_micros(applied.applied_at).to_string(),
        }),
    }
}
