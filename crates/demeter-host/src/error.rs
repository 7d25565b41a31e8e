use std::{net::SocketAddr, path::PathBuf};

/// Why the appliance cannot start or stop cleanly. Each message names the file, address or
/// setting at fault; the underlying error is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot read config file {path}")]
    ReadConfig { path: PathBuf, source: std::io::Error },
    /// A TOML problem: where (line and its text) and what.
    #[error("config file {path}{at}: {message}")]
    ParseConfig { path: PathBuf, at: String, message: String },
    #[error("cannot write config file {path}")]
    WriteConfig { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] demeter_domain::config::ConfigError),
    #[error("cannot create {path}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot read --admin-token-file {path}")]
    AdminTokenFile { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Auth(#[from] demeter_auth::AuthError),
    #[error("cannot listen on {addr} (is another demeter running? choose another with --listen)")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Engine(#[from] demeter_engine::EngineError),
    #[error("HTTP server failed")]
    Serve(#[source] std::io::Error),
}

impl HostError {
    /// Problems a person fixes by changing configuration, flags or the machine's set-up (the
    /// daemon exits 2 for these), as opposed to failures while running (exit 1).
    pub fn is_config(&self) -> bool {
        !matches!(self, HostError::Serve(_) | HostError::Runtime(_))
    }

    /// The whole chain on one line, for people: "cannot listen on …: Address in use (os error 98)".
    pub fn one_line(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let text = s.to_string();
            if !out.ends_with(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = s.source();
        }
        out
    }
}
