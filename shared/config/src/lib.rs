//! Typed configuration. Every service reads its settings once at start from `GUARANTOR_*` environment
//! variables (and a `.env` file); a missing or wrong value stops the process with a message that names
//! the variable. Secrets are `SecretString`s: they never show in `Debug` output or logs, and each one
//! can be read from a file named by `<VAR>_FILE` instead.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use guarantor_tron::TronAddress;
use rust_decimal::Decimal;
pub use secrecy::{ExposeSecret, SecretString};

const PREFIX: &str = "GUARANTOR_";

/// A variable whose value is not acceptable; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line, for log shippers.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            _ => Err("expected json or pretty".to_owned()),
        }
    }
}

/// The operator's HD wallet secret, from which every deposit address is derived.
#[derive(Debug, Clone)]
pub enum HdSecret {
    /// A BIP-39 seed, as hex (16 to 64 bytes).
    Seed(SecretString),
    /// A BIP-39 mnemonic phrase.
    Mnemonic(SecretString),
}

impl HdSecret {
    /// The HD wallet of the secret (checked for shape when the configuration was read).
    pub fn wallet(&self) -> Result<guarantor_tron::HdWallet, guarantor_tron::hd::HdError> {
        match self {
            HdSecret::Seed(seed) => {
                let bytes = hex::decode(seed.expose_secret()).map_err(|_| guarantor_tron::hd::HdError::SeedLength)?;
                guarantor_tron::HdWallet::from_seed(&bytes)
            }
            HdSecret::Mnemonic(phrase) => guarantor_tron::HdWallet::from_mnemonic(phrase.expose_secret(), ""),
        }
    }
}

/// How the services reach TRON. With no node URL the services use the local devnet.
#[derive(Debug, Clone)]
pub struct TronConfig {
    pub node_url: Option<String>,
    pub api_key: Option<SecretString>,
    /// Most node requests a second of the whole process (scanner and sweeper share it).
    pub rate_limit_rps: u32,
    pub usdt_contract: TronAddress,
    pub main_wallet: Option<TronAddress>,
    pub fee_wallet_key: Option<SecretString>,
    pub hd_secret: Option<HdSecret>,
}

/// How the sweeper works.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    pub interval_secs: u64,
    /// Margin on the estimated energy, in percent.
    pub fee_margin_percent: u32,
    /// The most TRX one sweep's transfer may need.
    pub max_fee_trx: u64,
    /// How long a built transaction stays valid.
    pub tx_lifetime_secs: u64,
    /// Failed attempts before a sweep is `failed`.
    pub max_attempts: u32,
}

/// The local TRON devnet (`guarantor devnet`, and `guarantor up` without a node URL).
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    pub addr: SocketAddr,
    pub block_interval_ms: u64,
    pub solidify_lag: i64,
    /// Where the chain is kept across restarts; `up` defaults it to the data directory.
    pub state_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// May carry a password, so it is a secret.
    pub database_url: SecretString,
    /// May carry credentials, so it is a secret.
    pub nats_url: SecretString,
    /// Copies of each JetStream stream: 1 on a single server, 3 on a 3-node cluster.
    pub stream_replicas: usize,
    pub http_addr: SocketAddr,
    /// Where a process serves `/healthz`, `/readyz` and `/metrics`; none: not served (the ingress
    /// serves them on its API address anyway).
    pub ops_addr: Option<SocketAddr>,
    pub tron: TronConfig,
    pub scan_interval_secs: u64,
    pub balance_check_interval_secs: u64,
    /// How long a done or expired payment's address stays in the balance check.
    pub payment_grace_secs: u64,
    pub payment_ttl_secs: u64,
    pub sweep_min_amount: Decimal,
    pub sweep: SweepConfig,
    pub max_amount: Decimal,
    /// How long the ingress waits for the ledger before answering 202 with a command id.
    pub command_timeout_ms: u64,
    /// How long JetStream waits for the ledger's ack before redelivering (after a crash, too).
    pub ledger_ack_wait_secs: u64,
    /// Most commands the ledger applies in one Postgres transaction.
    pub ledger_batch_max: u64,
    /// Ledger workers per process, each applying its own batches on its own connection.
    pub ledger_workers: u64,
    pub sentry_dsn: Option<SecretString>,
    pub log_format: LogFormat,
    pub data_dir: PathBuf,
    pub devnet: DevnetConfig,
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/guarantor";
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_DEVNET_ADDR: &str = "127.0.0.1:8090";

impl Config {
    /// Reads `.env` (without overriding the real environment), then the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        if let Err(err) = dotenvy::dotenv() {
            if !err.not_found() {
                return Err(ConfigError {
                    variable: ".env".to_owned(),
                    problem: err.to_string(),
                });
            }
        }
        Self::from_vars(&std::env::vars().collect())
    }

    /// Builds the configuration from a map of variables; the process environment is not read.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Vars(vars);
        let hd_secret = match (env.secret("HD_SEED")?, env.secret("HD_MNEMONIC")?) {
            (Some(_), Some(_)) => return Err(env.error("HD_SEED", "set either HD_SEED or HD_MNEMONIC, not both")),
            (Some(seed), None) => Some(HdSecret::Seed(validate_seed(&env, seed)?)),
            (None, Some(phrase)) => Some(HdSecret::Mnemonic(validate_mnemonic(&env, phrase)?)),
            (None, None) => None,
        };
        let max_amount: Decimal = env.parsed_or("MAX_AMOUNT", "1000000000")?;
        if max_amount <= Decimal::ZERO {
            return Err(env.error("MAX_AMOUNT", "must be greater than zero"));
        }
        let sweep_min_amount: Decimal = env.parsed_or("SWEEP_MIN_AMOUNT", "1")?;
        if sweep_min_amount <= Decimal::ZERO {
            return Err(env.error("SWEEP_MIN_AMOUNT", "must be greater than zero"));
        }
        Ok(Config {
            database_url: env
                .secret("DATABASE_URL")?
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
            nats_url: env.secret("NATS_URL")?.unwrap_or_else(|| DEFAULT_NATS_URL.into()),
            stream_replicas: match env.positive("STREAM_REPLICAS", 1)? {
                replicas @ 1..=5 => usize::try_from(replicas).map_err(|_| env.error("STREAM_REPLICAS", "too large"))?,
                _ => return Err(env.error("STREAM_REPLICAS", "JetStream keeps 1 to 5 replicas of a stream")),
            },
            http_addr: env.parsed_or("HTTP_ADDR", DEFAULT_HTTP_ADDR)?,
            ops_addr: env.parsed("OPS_ADDR")?,
            tron: TronConfig {
                node_url: env.url("TRON_NODE_URL")?,
                api_key: env.secret("TRON_API_KEY")?,
                rate_limit_rps: u32::try_from(env.positive("TRON_RATE_LIMIT_RPS", 10)?)
                    .map_err(|_| env.error("TRON_RATE_LIMIT_RPS", "too large"))?,
                usdt_contract: env.parsed_or("TRON_USDT_CONTRACT", guarantor_tron::MAINNET_USDT_CONTRACT)?,
                main_wallet: env.parsed("TRON_MAIN_WALLET")?,
                fee_wallet_key: env.secret("TRON_FEE_WALLET_KEY")?,
                hd_secret,
            },
            scan_interval_secs: env.positive("SCAN_INTERVAL_SECS", 60)?,
            balance_check_interval_secs: env.positive("BALANCE_CHECK_INTERVAL_SECS", 900)?,
            payment_grace_secs: env.positive("PAYMENT_GRACE_SECS", 30 * 86_400)?,
            payment_ttl_secs: env.positive("PAYMENT_TTL_SECS", 86_400)?,
            sweep_min_amount,
            sweep: SweepConfig {
                interval_secs: env.positive("SWEEP_INTERVAL_SECS", 30)?,
                fee_margin_percent: u32::try_from(env.parsed_or::<u64>("SWEEP_FEE_MARGIN_PERCENT", "20")?)
                    .map_err(|_| env.error("SWEEP_FEE_MARGIN_PERCENT", "too large"))?,
                max_fee_trx: env.positive("SWEEP_MAX_FEE_TRX", 50)?,
                tx_lifetime_secs: env.positive("SWEEP_TX_LIFETIME_SECS", 120)?,
                max_attempts: u32::try_from(env.positive("SWEEP_MAX_ATTEMPTS", 5)?)
                    .map_err(|_| env.error("SWEEP_MAX_ATTEMPTS", "too large"))?,
            },
            max_amount,
            command_timeout_ms: env.positive("COMMAND_TIMEOUT_MS", 5_000)?,
            ledger_ack_wait_secs: env.positive("LEDGER_ACK_WAIT_SECS", 30)?,
            ledger_batch_max: env.positive("LEDGER_BATCH_MAX", 256)?,
            ledger_workers: env.positive("LEDGER_WORKERS", 2)?,
            sentry_dsn: env.secret("SENTRY_DSN")?,
            log_format: env.parsed_or("LOG_FORMAT", "pretty")?,
            data_dir: env.plain("DATA_DIR").unwrap_or("./.guarantor").into(),
            devnet: DevnetConfig {
                addr: env.parsed_or("DEVNET_ADDR", DEFAULT_DEVNET_ADDR)?,
                block_interval_ms: env.positive("DEVNET_BLOCK_INTERVAL_MS", 3_000)?,
                solidify_lag: i64::from(env.parsed_or::<u32>("DEVNET_SOLIDIFY_LAG", "19")?),
                state_file: env.plain("DEVNET_STATE_FILE").map(PathBuf::from),
            },
        })
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }
}

fn validate_seed(env: &Vars<'_>, seed: SecretString) -> Result<SecretString, ConfigError> {
    let text = seed.expose_secret();
    let hex_digits = text.len();
    let is_hex = text.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_hex || hex_digits % 2 != 0 || !(32..=128).contains(&hex_digits) {
        return Err(env.error("HD_SEED", "must be 16 to 64 bytes written as hex"));
    }
    Ok(seed)
}

fn validate_mnemonic(env: &Vars<'_>, phrase: SecretString) -> Result<SecretString, ConfigError> {
    let words = phrase.expose_secret().split_whitespace().count();
    if ![12, 15, 18, 21, 24].contains(&words) {
        return Err(env.error("HD_MNEMONIC", "must be a BIP-39 phrase of 12, 15, 18, 21 or 24 words"));
    }
    Ok(phrase)
}

/// Lookup of prefixed variables, with errors that name the full variable.
struct Vars<'a>(&'a HashMap<String, String>);

impl Vars<'_> {
    fn error(&self, name: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            variable: format!("{PREFIX}{name}"),
            problem: problem.into(),
        }
    }

    /// A set, non-empty value; an empty variable counts as unset.
    fn plain(&self, name: &str) -> Option<&str> {
        self.0
            .get(&format!("{PREFIX}{name}"))
            .map(String::as_str)
            .filter(|value| !value.trim().is_empty())
    }

    fn parsed<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.plain(name)
            .map(|value| {
                value
                    .trim()
                    .parse()
                    .map_err(|err| self.error(name, format!("invalid value: {err}")))
            })
            .transpose()
    }

    fn parsed_or<T>(&self, name: &str, default: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.parsed(name)? {
            Some(value) => Ok(value),
            None => default
                .parse()
                .map_err(|err| self.error(name, format!("invalid default: {err}"))),
        }
    }

    fn positive(&self, name: &str, default: u64) -> Result<u64, ConfigError> {
        let value = self.parsed(name)?.unwrap_or(default);
        if value == 0 {
            return Err(self.error(name, "must be greater than zero"));
        }
        Ok(value)
    }

    fn url(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match self.plain(name) {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Ok(Some(url.trim_end_matches('/').to_owned()))
            }
            Some(_) => Err(self.error(name, "must be an http:// or https:// URL")),
            None => Ok(None),
        }
    }

    /// A secret from `<NAME>` or from the file named by `<NAME>_FILE` (not both).
    fn secret(&self, name: &str) -> Result<Option<SecretString>, ConfigError> {
        let file_var = format!("{name}_FILE");
        match (self.plain(name), self.plain(&file_var)) {
            (Some(_), Some(_)) => Err(self.error(
                name,
                format!("set either {PREFIX}{name} or {PREFIX}{file_var}, not both"),
            )),
            (Some(value), None) => Ok(Some(value.trim().into())),
            (None, Some(path)) => {
                let content = std::fs::read_to_string(path)
                    .map_err(|err| self.error(&file_var, format!("cannot read {path}: {err}")))?;
                let content = content.trim();
                if content.is_empty() {
                    return Err(self.error(&file_var, format!("{path} is empty")));
                }
                Ok(Some(content.into()))
            }
            (None, None) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn error_of(pairs: &[(&str, &str)]) -> ConfigError {
        Config::from_vars(&vars(pairs)).expect_err("configuration should be refused")
    }

    #[test]
    fn defaults_give_a_working_local_configuration() {
        let config = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(config.http_addr.to_string(), DEFAULT_HTTP_ADDR);
        assert_eq!(config.scan_interval_secs, 60);
        assert_eq!(config.max_amount, Decimal::from(1_000_000_000));
        assert_eq!(
            config.tron.usdt_contract.to_base58(),
            guarantor_tron::MAINNET_USDT_CONTRACT
        );
        assert!(config.tron.node_url.is_none());
        assert_eq!(config.log_format, LogFormat::Pretty);
    }

    #[test]
    fn a_bad_value_is_refused_with_the_variable_named() {
        let cases: [(&str, &str); 11] = [
            ("GUARANTOR_HTTP_ADDR", "not-an-address"),
            ("GUARANTOR_STREAM_REPLICAS", "0"),
            ("GUARANTOR_STREAM_REPLICAS", "7"),
            ("GUARANTOR_OPS_ADDR", "localhost"),
            ("GUARANTOR_SCAN_INTERVAL_SECS", "0"),
            ("GUARANTOR_PAYMENT_TTL_SECS", "soon"),
            ("GUARANTOR_MAX_AMOUNT", "-5"),
            ("GUARANTOR_LOG_FORMAT", "xml"),
            ("GUARANTOR_TRON_MAIN_WALLET", "TNotAnAddress"),
            ("GUARANTOR_TRON_NODE_URL", "ftp://node"),
            ("GUARANTOR_HD_SEED", "xyz"),
        ];
        for (variable, value) in cases {
            let err = error_of(&[(variable, value)]);
            assert_eq!(err.variable, variable);
            assert!(err.to_string().contains(variable), "{err}");
        }
    }

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let seed = "00112233445566778899aabbccddeeff";
        let config = Config::from_vars(&vars(&[
            ("GUARANTOR_HD_SEED", seed),
            ("GUARANTOR_TRON_FEE_WALLET_KEY", "feekey-very-secret"),
            ("GUARANTOR_SENTRY_DSN", "https://public@sentry.example/1"),
            ("GUARANTOR_DATABASE_URL", "postgres://app:db-password@db/guarantor"),
        ]))
        .unwrap();
        let debug = format!("{config:?}");
        for secret in [seed, "feekey-very-secret", "public@sentry", "db-password"] {
            assert!(!debug.contains(secret), "{secret} leaked into {debug}");
        }
    }

    #[test]
    fn a_secret_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnemonic");
        std::fs::write(
            &path,
            "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about\n",
        )
        .unwrap();
        let config = Config::from_vars(&vars(&[("GUARANTOR_HD_MNEMONIC_FILE", path.to_str().unwrap())])).unwrap();
        match config.tron.hd_secret {
            Some(HdSecret::Mnemonic(phrase)) => assert!(phrase.expose_secret().ends_with("about")),
            other => panic!("expected a mnemonic, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_secret_file_is_named() {
        let err = error_of(&[("GUARANTOR_TRON_FEE_WALLET_KEY_FILE", "/nonexistent/key")]);
        assert_eq!(err.variable, "GUARANTOR_TRON_FEE_WALLET_KEY_FILE");
    }

    #[test]
    fn a_secret_set_twice_is_refused() {
        let err = error_of(&[
            ("GUARANTOR_TRON_API_KEY", "a"),
            ("GUARANTOR_TRON_API_KEY_FILE", "/tmp/x"),
        ]);
        assert_eq!(err.variable, "GUARANTOR_TRON_API_KEY");
        let err = error_of(&[
            ("GUARANTOR_HD_SEED", "00112233445566778899aabbccddeeff"),
            ("GUARANTOR_HD_MNEMONIC", "a b c d e f g h i j k l"),
        ]);
        assert_eq!(err.variable, "GUARANTOR_HD_SEED");
    }
}
