//! The `sql` connector: one parameterised statement against PostgreSQL, its rows as JSON.
//!
//! The connection URL is a tenant secret (`args.connection_secret`), never an argument;
//! it never appears in a log line or an error. Each call:
//!
//! * resolves the URL's host through the outbound guard and, unless the URL asks for
//!   `sslmode=verify-full`, connects to the address the guard checked (so a name that
//!   resolves to a private address a moment later is not reached; with `verify-full` the
//!   certificate check does that job and the name is kept for it);
//! * takes a connection from a small pool kept per tenant, secret and URL, and sets the
//!   session's `statement_timeout` to what is left of the step's deadline, so the server
//!   stops the statement when the step gives up on it;
//! * runs the statement as one prepared statement (so one statement, in its own
//!   transaction; BEGIN, COMMIT and the like are refused), binding `args.params` as `$1`,
//!   `$2`, …, and answers `{"rows": [...], "row_count": n, "rows_affected": n}` from one
//!   execution: `rows_affected` is the count in the server's command tag (rows inserted,
//!   updated or deleted; for a SELECT, the rows returned).
//!
//! Parameters are bound by their JSON type: booleans as `bool`, integers as `int8`, other
//! numbers as `float8`, strings as `text`, objects and arrays as `jsonb`; a string meant
//! as another type is cast in the statement (`$1::timestamptz`). A null is bound without
//! a type, so the server infers it from where it is used.
//!
//! Rows beyond `max_rows` fail the step (the rest is not read; for a data-modifying
//! statement with `RETURNING` the connection is closed mid-answer, so whether the change
//! took effect is then not known). Columns of types without an obvious JSON form fail the
//! step with a suggested cast rather than a guessed rendering.
//!
//! The driver (sqlx) fills unset connection options from the worker's `PG*` environment
//! variables; this connector overrides host, port, user, password, database, sslmode,
//! root certificates and application name, but `PGSSLCERT`, `PGSSLKEY` and `PGOPTIONS`
//! cannot be overridden and must not be set in a worker's environment (a warning is
//! logged at start if they are).

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use aiq_secrets::ExposeSecret;
use aiq_topics::{ErrorClass, TaskMessage, TaskOutcome, TenantId};
use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sqlx::encode::IsNull;
use sqlx::pool::PoolConnection;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{
    PgArgumentBuffer, PgColumn, PgConnectOptions, PgDatabaseError, PgPool, PgPoolOptions, PgRow,
    PgSslMode, PgTypeInfo,
};
use sqlx::{
    Column, ConnectOptions, Connection, Either, Executor, Postgres, Row, TypeInfo, ValueRef,
};
use tokio::time::Instant;
use url::Url;

use crate::call::{CallContext, CallFuture, Connector};
use crate::outcome::{fatal, parse_args, retryable};
use crate::settings::ConnectorSettings;

/// Connections per pool: steps are short and a tenant's database is not ours to crowd.
const POOL_MAX_CONNECTIONS: u32 = 4;
/// An idle pooled connection is closed after this.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The pool's own bound on waiting for a connection; a step's deadline usually cuts in
/// first (the whole call runs under it).
const POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlArgs {
    /// The tenant secret holding `postgres://user:password@host:port/database`.
    connection_secret: String,
    /// One statement; `$1`, `$2`, … refer to `params`.
    query: String,
    #[serde(default)]
    params: Vec<Value>,
    /// At most `connectors.sql_max_rows`, which is also the default.
    #[serde(default)]
    max_rows: Option<usize>,
}

pub struct SqlConnector {
    max_rows: usize,
    /// `connectors.extra_ca_files`, as PEM, trusted besides the Mozilla roots.
    extra_roots_pem: Vec<u8>,
    pools: Mutex<HashMap<PoolKey, CachedPool>>,
}

/// One pool per tenant and secret name; the URL's fingerprint and the address it was
/// pinned to are checked on every use, so a rotated secret or a moved host gets a new
/// pool (and the old one is closed).
type PoolKey = (TenantId, String);

struct CachedPool {
    fingerprint: u64,
    /// The address connections go to; None when the name is kept (`verify-full`).
    pinned: Option<IpAddr>,
    pool: PgPool,
}

impl SqlConnector {
    /// `extra_cas`: `connectors.extra_ca_files`, as `Connectors::builtin` read them.
    pub fn new(settings: &ConnectorSettings, extra_cas: &[CertificateDer<'static>]) -> Self {
        for var in ["PGSSLCERT", "PGSSLKEY", "PGOPTIONS"] {
            if std::env::var_os(var).is_some() {
                tracing::warn!(
                    var,
                    "set in this worker's environment: the sql connector's driver applies it \
                     to every tenant's PostgreSQL connection; unset it"
                );
            }
        }
        let extra_roots_pem = extra_cas
            .iter()
            .map(|c| pem_certificate(c))
            .collect::<String>()
            .into_bytes();
        Self {
            max_rows: settings.sql_max_rows,
            extra_roots_pem,
            pools: Mutex::new(HashMap::new()),
        }
    }

    async fn run(&self, task: &TaskMessage, ctx: &CallContext<'_>) -> TaskOutcome {
        let args: SqlArgs = match parse_args("sql", &task.args) {
            Ok(a) => a,
            Err(e) => return e,
        };
        let max_rows = match args.max_rows {
            Some(n) if n > self.max_rows => {
                return fatal(format!(
                    "sql connector: `args.max_rows`: {n} is more than connectors.sql_max_rows \
                     ({})",
                    self.max_rows
                ));
            }
            Some(n) => n,
            None => self.max_rows,
        };
        if let Err(e) = check_statement(&args.query) {
            return e;
        }
        let params = match args
            .params
            .iter()
            .enumerate()
            .map(|(i, v)| Param::from_json(i, v))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(p) => p,
            Err(e) => return e,
        };
        let secret = match ctx
            .secret("args.connection_secret", &args.connection_secret)
            .await
        {
            Ok(s) => s,
            Err(e) => return e,
        };
        let unusable = |reason: String| {
            fatal(format!(
                "sql connector: `args.connection_secret`: the value of secret {:?} is not a \
                 usable PostgreSQL URL: {reason}",
                args.connection_secret
            ))
        };
        let target = match Target::parse(secret.expose_secret()) {
            Ok(t) => t,
            Err(reason) => return unusable(reason),
        };
        drop(secret);
        let key = (task.tenant.clone(), args.connection_secret.clone());
        let label = target.label.clone();
        ctx.guarded(&label, async {
            let addrs = match ctx
                .outbound
                .resolve_for("sql", &target.host, target.port)
                .await
            {
                Ok(a) => a,
                Err(e) => return e,
            };
            let (pool, probe) = match self.pool_for(key, &target, &addrs) {
                Ok(p) => p,
                Err(reason) => return unusable(reason),
            };
            let mut lease = match lease(&pool, probe, ctx.deadline).await {
                Ok(l) => l,
                Err(e) => return classify(&e, &target.label, task.timeout_ms),
            };
            match query(&mut lease, &args.query, &params, max_rows).await {
                Ok(output) => {
                    lease.clean = true;
                    TaskOutcome::Ok { output }
                }
                Err(Failure::Sql(e)) => {
                    if let sqlx::Error::Database(db) = &e {
                        // The connection is in a known state after a database error.
                        lease.clean = true;
                        if is_stale_plan(db.as_ref()) {
                            let _ = lease.conn().clear_cached_statements().await;
                        }
                    }
                    classify(&e, &target.label, task.timeout_ms)
                }
                // The answer was cut off: the connection is closed rather than reused.
                Err(Failure::Outcome(o)) => o,
            }
        })
        .await
    }

    /// The pool for this tenant's secret, made (or remade) as needed, and the address to
    /// probe before its first connection. The driver's options are built only for a new
    /// pool: building them reads the environment and maybe `~/.pgpass`.
    fn pool_for(
        &self,
        key: PoolKey,
        target: &Target,
        addrs: &[SocketAddr],
    ) -> Result<(PgPool, SocketAddr), String> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = pools.get(&key)
            && cached.fingerprint == target.fingerprint
        {
            match cached.pinned {
                None => return Ok((cached.pool.clone(), addrs[0])),
                Some(ip) => {
                    if let Some(a) = addrs.iter().find(|a| a.ip() == ip) {
                        return Ok((cached.pool.clone(), *a));
                    }
                }
            }
        }
        let addr = addrs[0];
        let pinned = (!target.verify_full).then_some(addr.ip());
        let options = target.options(&self.extra_roots_pem)?;
        let options = match pinned {
            Some(ip) => options.host(&ip.to_string()),
            None => options,
        };
        let pool = PgPoolOptions::new()
            .max_connections(POOL_MAX_CONNECTIONS)
            .min_connections(0)
            .idle_timeout(POOL_IDLE_TIMEOUT)
            .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
            // Setting the statement timeout on each lease tests the connection anyway.
            .test_before_acquire(false)
            .connect_lazy_with(options);
        let old = pools.insert(
            key,
            CachedPool {
                fingerprint: target.fingerprint,
                pinned,
                pool: pool.clone(),
            },
        );
        if let Some(old) = old {
            tokio::spawn(async move { old.pool.close().await });
        }
        Ok((pool, addr))
    }
}

impl Connector for SqlConnector {
    fn call<'a>(&'a self, task: &'a TaskMessage, ctx: &'a CallContext<'a>) -> CallFuture<'a> {
        Box::pin(self.run(task, ctx))
    }
}

/// Where to connect and how, from the secret's URL. Holds the password (in `url`); never
/// printed.
struct Target {
    /// As written in the URL (an IPv6 literal without brackets).
    host: String,
    port: u16,
    /// `host:port`, naming the target in errors and keying its breaker.
    label: String,
    verify_full: bool,
    fingerprint: u64,
    /// The URL with only the allowed parameters left.
    url: Url,
    sslmode: Option<PgSslMode>,
    had_password: bool,
    had_database: bool,
    had_app_name: bool,
}

/// URL parameters a secret may carry; anything else (files on the worker, other hosts,
/// Unix sockets) is refused.
const ALLOWED_PARAMS: &str = "sslmode, application_name, options, connect_timeout";

impl Target {
    /// The error is a reason that never quotes the URL.
    fn parse(raw: &str) -> Result<Self, String> {
        let mut url = Url::parse(raw.trim()).map_err(|e| format!("it does not parse ({e})"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "the scheme must be postgres:// or postgresql://, not {}://",
                url.scheme()
            ));
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            _ => return Err("it names no host".into()),
        };
        if host.contains(['%', '/']) {
            return Err("Unix-domain sockets are not supported; give a host name".into());
        }
        let port = url.port().unwrap_or(5432);
        if url.username().is_empty() {
            return Err("it names no user (postgres://user:password@host/database)".into());
        }
        let mut sslmode = None;
        let mut kept = Vec::new();
        for (k, v) in url.query_pairs() {
            match &*k {
                "sslmode" | "ssl-mode" => {
                    let mode = PgSslMode::from_str(&v).map_err(|_| {
                        format!(
                            "sslmode {v:?} is not one of disable, allow, prefer, require, \
                             verify-ca, verify-full"
                        )
                    })?;
                    sslmode = Some(mode);
                    kept.push((k.into_owned(), v.into_owned()));
                }
                "application_name" | "options" => kept.push((k.into_owned(), v.into_owned())),
                // The step's deadline bounds connecting.
                "connect_timeout" => {}
                other => {
                    return Err(format!(
                        "the URL parameter `{other}` is not supported (supported: \
                         {ALLOWED_PARAMS})"
                    ));
                }
            }
        }
        let had_password = url.password().is_some();
        let had_database = !url.path().trim_start_matches('/').is_empty();
        let had_app_name = kept.iter().any(|(k, _)| k == "application_name");
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
        let mut fingerprint = DefaultHasher::new();
        raw.trim().hash(&mut fingerprint);
        Ok(Self {
            label: format!("{}:{port}", url.host_str().unwrap_or(&host)),
            host,
            port,
            verify_full: matches!(sslmode, Some(PgSslMode::VerifyFull)),
            fingerprint: fingerprint.finish(),
            url,
            sslmode,
            had_password,
            had_database,
            had_app_name,
        })
    }

    /// The driver's options; the error is a reason that never quotes the URL.
    fn options(&self, extra_roots_pem: &[u8]) -> Result<PgConnectOptions, String> {
        // Parse errors are not quoted: they could carry a piece of the URL.
        let mut options = PgConnectOptions::from_str(self.url.as_str())
            .map_err(|_| "its user, password or database is not valid".to_owned())?
            .host(&self.host)
            .port(self.port)
            .ssl_mode(self.sslmode.unwrap_or(PgSslMode::Prefer))
            // Replaces PGSSLROOTCERT: only the configured roots are trusted.
            .ssl_root_cert_from_pem(extra_roots_pem.to_vec())
            .disable_statement_logging();
        if !self.had_password {
            // Neither PGPASSWORD nor the worker's .pgpass answers for a tenant.
            options = options.password("");
        }
        if !self.had_database {
            let user = options.get_username().to_owned();
            options = options.database(&user);
        }
        if !self.had_app_name {
            options = options.application_name("automateiq");
        }
        Ok(options)
    }
}

fn pem_certificate(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Transaction control would leave a pooled connection inside a transaction that the
/// next step (maybe another run's) would silently continue.
fn check_statement(sql: &str) -> Result<(), TaskOutcome> {
    let word = first_keyword(sql);
    if word.is_empty() {
        return Err(fatal("sql connector: `args.query`: no statement"));
    }
    if matches!(
        word.as_str(),
        "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE"
    ) {
        return Err(fatal(format!(
            "sql connector: `args.query`: {word} is not allowed: each step runs one statement \
             in its own transaction; use one statement (a CTE can chain several changes) or \
             a function"
        )));
    }
    Ok(())
}

/// The statement's first word, upper-cased, past whitespace and comments.
fn first_keyword(sql: &str) -> String {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.find('\n').map_or("", |i| &r[i + 1..]);
        } else if rest.starts_with("/*") {
            // Block comments nest in PostgreSQL.
            let mut depth = 0usize;
            let mut end = rest.len();
            let bytes = rest.as_bytes();
            let mut i = 0;
            while i + 1 < bytes.len() {
                match (bytes[i], bytes[i + 1]) {
                    (b'/', b'*') => {
                        depth += 1;
                        i += 2;
                    }
                    (b'*', b'/') => {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => i += 1,
                }
            }
            rest = &rest[end..];
        } else {
            break;
        }
    }
    rest.chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase()
}

/// One bound parameter.
#[derive(Debug)]
enum Param {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Json(Value),
}

impl Param {
    fn from_json(i: usize, v: &Value) -> Result<Self, TaskOutcome> {
        Ok(match v {
            Value::Null => Param::Null,
            Value::Bool(b) => Param::Bool(*b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Param::Int(i)
                } else if n.is_u64() {
                    return Err(fatal(format!(
                        "sql connector: `args.params[{i}]`: {n} does not fit a 64-bit integer; \
                         pass it as a string and cast it (`${}::numeric`)",
                        i + 1
                    )));
                } else {
                    match n.as_f64() {
                        Some(f) => Param::Float(f),
                        None => {
                            return Err(fatal(format!(
                                "sql connector: `args.params[{i}]`: {n} is not a number \
                                 PostgreSQL can take"
                            )));
                        }
                    }
                }
            }
            Value::String(s) => Param::Text(s.clone()),
            Value::Array(_) | Value::Object(_) => Param::Json(v.clone()),
        })
    }

    /// One letter per parameter type, for [`statement_text`].
    fn code(&self) -> char {
        match self {
            Param::Null => 'n',
            Param::Bool(_) => 'b',
            Param::Int(_) => 'i',
            Param::Float(_) => 'f',
            Param::Text(_) => 't',
            Param::Json(_) => 'j',
        }
    }
}

/// A NULL of no declared type: the server infers the parameter's type from the
/// statement, so `insert into t (n) values ($1)` takes a null for an integer column.
struct UntypedNull;

impl sqlx::Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        // OID 0: "unspecified" in the protocol.
        PgTypeInfo::with_oid(Oid(0))
    }
}

impl sqlx::Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(
        &self,
        _buf: &mut PgArgumentBuffer,
    ) -> Result<IsNull, sqlx::error::BoxDynError> {
        Ok(IsNull::Yes)
    }
}

/// The statement as sent. The driver caches prepared statements by their text, and a
/// prepared statement keeps the parameter types of its first use; values are sent in
/// binary, so a later call with other JSON types (say 1.5 where 1 was) would be read in
/// the first call's types. The parameter types are therefore part of the text, as a
/// trailing comment.
fn statement_text(query: &str, params: &[Param]) -> String {
    if params.is_empty() {
        return query.to_owned();
    }
    let sig: String = params.iter().map(Param::code).collect();
    format!("{query}\n-- aiq params: {sig}")
}

/// A pooled connection for one call. Unless marked clean it is closed when dropped
/// (the call hit its deadline, or stopped reading an answer), never handed to the next
/// call with half an answer pending.
struct Lease {
    conn: Option<PoolConnection<Postgres>>,
    clean: bool,
}

impl Lease {
    fn conn(&mut self) -> &mut sqlx::PgConnection {
        self.conn
            .as_deref_mut()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take()
            && !self.clean
        {
            conn.close_on_drop();
        }
    }
}

/// A connection with the session's statement timeout set to what is left of the step.
/// Pooled connections are not pinged before use; setting the timeout is the test, and a
/// connection that fails it is closed and another one taken, once.
async fn lease(pool: &PgPool, probe: SocketAddr, deadline: Instant) -> Result<Lease, sqlx::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        if pool.size() == 0 {
            // The pool retries a refused connection until its acquire timeout, taking a
            // database that is down for one starting up; a step is better told at once.
            tokio::net::TcpStream::connect(probe).await?;
        }
        let mut lease = Lease {
            conn: Some(pool.acquire().await?),
            clean: false,
        };
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis()
            .max(1);
        let set = format!("SET statement_timeout = {left}");
        match lease.conn().execute(sqlx::raw_sql(&set)).await {
            Ok(_) => return Ok(lease),
            Err(sqlx::Error::Database(e)) => {
                lease.clean = true;
                return Err(sqlx::Error::Database(e));
            }
            Err(e) if attempt >= 2 => return Err(e),
            // A connection the server has dropped since it was pooled.
            Err(_) => {}
        }
    }
}

enum Failure {
    Sql(sqlx::Error),
    Outcome(TaskOutcome),
}

async fn query(
    lease: &mut Lease,
    sql: &str,
    params: &[Param],
    max_rows: usize,
) -> Result<Value, Failure> {
    let text = statement_text(sql, params);
    let mut q = sqlx::query(&text);
    for p in params {
        q = match p {
            Param::Null => q.bind(UntypedNull),
            Param::Bool(b) => q.bind(*b),
            Param::Int(i) => q.bind(*i),
            Param::Float(f) => q.bind(*f),
            Param::Text(s) => q.bind(s.clone()),
            Param::Json(v) => q.bind(sqlx::types::Json(v.clone())),
        };
    }
    let mut stream = lease.conn().fetch_many(q);
    let mut rows = Vec::new();
    let mut rows_affected = 0u64;
    while let Some(item) = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
        match item.map_err(Failure::Sql)? {
            Either::Left(done) => rows_affected += done.rows_affected(),
            Either::Right(row) => {
                if rows.len() >= max_rows {
                    return Err(Failure::Outcome(fatal(format!(
                        "sql connector: the query returned more than {max_rows} rows (the \
                         step's max_rows); narrow it (WHERE, LIMIT, an aggregate) or raise \
                         `args.max_rows` (at most connectors.sql_max_rows)"
                    ))));
                }
                rows.push(Value::Object(row_json(&row).map_err(Failure::Outcome)?));
            }
        }
    }
    Ok(json!({
        "row_count": rows.len(),
        "rows_affected": rows_affected,
        "rows": rows,
    }))
}

fn row_json(row: &PgRow) -> Result<Map<String, Value>, TaskOutcome> {
    let mut out = Map::new();
    for (i, col) in row.columns().iter().enumerate() {
        let name = col.name();
        if out.contains_key(name) {
            return Err(fatal(format!(
                "sql connector: two columns are named `{name}`; give them distinct names \
                 with AS"
            )));
        }
        out.insert(name.to_owned(), cell(row, i, col)?);
    }
    Ok(out)
}

fn cell(row: &PgRow, i: usize, col: &PgColumn) -> Result<Value, TaskOutcome> {
    let name = col.name();
    let type_name = col.type_info().name();
    let decode_error = |e: sqlx::Error| {
        fatal(format!(
            "sql connector: column `{name}` ({type_name}) could not be read: {}",
            match e {
                sqlx::Error::ColumnDecode { source, .. } => source.to_string(),
                other => other.to_string(),
            }
        ))
    };
    let raw = row.try_get_raw(i).map_err(decode_error)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    macro_rules! get {
        ($t:ty) => {
            row.try_get::<$t, _>(i).map_err(decode_error)?
        };
    }
    Ok(match type_name {
        "BOOL" => Value::Bool(get!(bool)),
        "INT2" => json!(get!(i16)),
        "INT4" => json!(get!(i32)),
        "INT8" => json!(get!(i64)),
        "FLOAT4" => float(f64::from(get!(f32))),
        "FLOAT8" => float(get!(f64)),
        // sqlx names bpchar (char(n)) CHAR; the one-byte "char" is "\"CHAR\"".
        "TEXT" | "VARCHAR" | "CHAR" | "BPCHAR" | "NAME" | "UNKNOWN" => Value::String(get!(String)),
        "JSON" | "JSONB" => get!(sqlx::types::Json<Value>).0,
        "UUID" => Value::String(get!(sqlx::types::Uuid).to_string()),
        "TIMESTAMPTZ" => Value::String(
            get!(chrono::DateTime<chrono::Utc>)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        ),
        "TIMESTAMP" => Value::String(
            get!(chrono::NaiveDateTime)
                .format("%Y-%m-%dT%H:%M:%S%.f")
                .to_string(),
        ),
        "DATE" => Value::String(get!(chrono::NaiveDate).format("%Y-%m-%d").to_string()),
        "BYTEA" => json!({
            "base64": base64::engine::general_purpose::STANDARD.encode(get!(Vec<u8>))
        }),
        other => return Err(fatal(unsupported(name, other, col.relation_id().is_some()))),
    })
}

/// JSON has no NaN or infinities; they come back as PostgreSQL spells them.
fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or_else(
        || {
            Value::String(
                if f.is_nan() {
                    "NaN"
                } else if f > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                }
                .into(),
            )
        },
        Value::Number,
    )
}

/// The error for a column type without a JSON form. A table's column gets a cast
/// written out for it; a computed one (no table behind it) a cast of its expression.
fn unsupported(column: &str, type_name: &str, from_table: bool) -> String {
    let quoted = if column
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        column.to_owned()
    } else {
        format!("\"{}\"", column.replace('"', "\"\""))
    };
    let expr = if from_table {
        quoted.clone()
    } else {
        "(expression)".to_owned()
    };
    let cast = match type_name {
        "NUMERIC" | "MONEY" => {
            format!("`{expr}::text AS {quoted}` (exact) or `{expr}::float8 AS {quoted}`")
        }
        t if t.ends_with("[]") || t == "RECORD" => format!("`to_jsonb({expr}) AS {quoted}`"),
        _ => format!("`{expr}::text AS {quoted}`"),
    };
    format!(
        "sql connector: column `{column}` has type {type_name}, which this connector does not \
         turn into JSON; cast it in the query, e.g. {cast}"
    )
}

/// A prepared statement whose result columns changed under it (an ALTER TABLE): the
/// connection's statement cache is cleared and the step may simply run again.
fn is_stale_plan(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.code().as_deref() == Some("0A000") && db.message().contains("cached plan")
}

/// The outcome for a driver error. Built from error kinds and SQLSTATEs, never from the
/// connection URL.
fn classify(e: &sqlx::Error, target: &str, timeout_ms: u64) -> TaskOutcome {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let mut message = format!("sql connector: {code} {}", db.message());
            if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
                if let Some(d) = pg.detail() {
                    message.push_str(&format!(" ({d})"));
                }
                if let Some(h) = pg.hint() {
                    message.push_str(&format!("; hint: {h}"));
                }
            }
            let class = match code.as_str() {
                // statement_timeout, set to the step's deadline.
                "57014" => ErrorClass::Timeout,
                // A protocol violation is this call's fault, e.g. a parameter count that
                // does not match the statement.
                "08P01" => ErrorClass::Fatal,
                "40001" | "40P01" | "57P01" | "57P02" | "57P03" => ErrorClass::Retryable,
                c if c.starts_with("08") || c.starts_with("53") => ErrorClass::Retryable,
                _ if is_stale_plan(db.as_ref()) => ErrorClass::Retryable,
                c if c.starts_with("28") => {
                    message.push_str(&format!(
                        " (check the user and password in the secret; target {target})"
                    ));
                    ErrorClass::Fatal
                }
                _ => ErrorClass::Fatal,
            };
            if class == ErrorClass::Timeout {
                message = format!(
                    "sql connector: the statement ran past the step's timeout of {timeout_ms} \
                     ms ({code} {})",
                    db.message()
                );
            }
            TaskOutcome::Error { class, message }
        }
        sqlx::Error::Io(io) => retryable(format!("sql connector: {target}: {io}")),
        sqlx::Error::Tls(t) => retryable(format!("sql connector: TLS with {target}: {t}")),
        sqlx::Error::PoolTimedOut => retryable(format!(
            "sql connector: no connection to {target} became available in time"
        )),
        sqlx::Error::PoolClosed => retryable(format!(
            "sql connector: the connection pool for {target} was closed (the secret changed)"
        )),
        // Not quoted: a configuration error may carry part of the URL.
        sqlx::Error::Configuration(_) => fatal(
            "sql connector: `args.connection_secret`: the connection settings in the secret \
             were not accepted",
        ),
        sqlx::Error::ColumnDecode { index, source } => fatal(format!(
            "sql connector: column {index} could not be read: {source}"
        )),
        sqlx::Error::Encode(e) => fatal(format!("sql connector: `args.params`: {e}")),
        sqlx::Error::Protocol(p) => fatal(format!(
            "sql connector: {target} answered unexpectedly ({p}); statements such as COPY \
             are not supported"
        )),
        other => fatal(format!("sql connector: {other}")),
    }
}

/// Whether `args` have the shape this connector takes (templates not yet filled in).
pub(crate) fn check_args(args: &serde_json::Value) -> Result<(), aiq_topics::TaskOutcome> {
    parse_args::<SqlArgs>("sql", args).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_control_is_refused_past_comments() {
        assert_eq!(first_keyword("  -- x\n /* a /* b */ c */ begin;"), "BEGIN");
        assert_eq!(first_keyword("select 1"), "SELECT");
        assert_eq!(first_keyword("-- only a comment"), "");
        assert!(check_statement("COMMIT").is_err());
        assert!(check_statement("with x as (select 1) select * from x").is_ok());
        assert!(check_statement("   ").is_err());
    }

    #[test]
    fn urls_are_checked_without_being_quoted() {
        let bad = |raw: &str| match Target::parse(raw) {
            Ok(_) => panic!("{raw} should be refused"),
            Err(reason) => {
                assert!(!reason.contains("s3cr3t"), "{reason}");
                reason
            }
        };
        assert!(bad("mysql://u:s3cr3t@h/db").contains("scheme"));
        assert!(bad("postgres://u:s3cr3t@h/db?sslrootcert=/etc/passwd").contains("sslrootcert"));
        assert!(bad("postgres://u:s3cr3t@h/db?host=/var/run").contains("`host`"));
        assert!(bad("postgres://u:s3cr3t@%2Fvar%2Frun/db").contains("Unix"));
        assert!(bad("postgres://:s3cr3t@h/db").contains("no user"));
        assert!(bad("postgres://u:s3cr3t@h/db?sslmode=sometimes").contains("sslmode"));
        assert!(bad("not a url s3cr3t").contains("does not parse"));
        let t = Target::parse(
            "postgresql://u:s3cr3t@[::1]:6543/db?sslmode=verify-full&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.label.as_str()),
            ("::1", 6543, "[::1]:6543")
        );
        assert!(t.verify_full);
        let t = Target::parse("postgres://u@db.example.com/x").unwrap();
        assert_eq!((t.port, t.verify_full), (5432, false));
    }

    #[test]
    fn parameters_map_to_types_and_the_types_key_the_statement() {
        let p: Vec<Param> = [
            json!(null),
            json!(true),
            json!(3),
            json!(1.5),
            json!("x"),
            json!({}),
        ]
        .iter()
        .enumerate()
        .map(|(i, v)| Param::from_json(i, v).unwrap())
        .collect();
        assert_eq!(
            statement_text("select $1", &p),
            "select $1\n-- aiq params: nbiftj"
        );
        assert_eq!(statement_text("select 1", &[]), "select 1");
        let TaskOutcome::Error { message, .. } = Param::from_json(2, &json!(u64::MAX)).unwrap_err()
        else {
            panic!()
        };
        assert!(message.contains("`args.params[2]`"), "{message}");
    }

    #[test]
    fn unsupported_types_suggest_a_cast() {
        let m = unsupported("amount", "NUMERIC", true);
        assert!(
            m.contains("`amount::text AS amount` (exact) or `amount::float8 AS amount`"),
            "{m}"
        );
        assert!(unsupported("tags", "TEXT[]", true).contains("`to_jsonb(tags) AS tags`"));
        assert!(
            unsupported("?column?", "INTERVAL", false)
                .contains("`(expression)::text AS \"?column?\"`")
        );
        assert_eq!(float(f64::NAN), json!("NaN"));
        assert_eq!(float(1.5), json!(1.5));
    }

    #[test]
    fn extra_roots_are_written_as_pem() {
        let pem = pem_certificate(&[1u8; 100]);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
    }
}
