//! `demeter token create|list|revoke`: tokens live in the data directory's `tokens.json`.

use std::process::ExitCode;

use demeter_auth::TokenStore;

use crate::{
    cli::{CommonArgs, DataArgs, Failure, TokenCommand},
    settings,
};

fn open(at: &DataArgs) -> Result<TokenStore, Failure> {
    let common = CommonArgs { config: at.config.clone(), ..Default::default() };
    let config = settings::load(&common, |c| {
        if let Some(d) = &at.data {
            c.store.data_dir = Some(d.clone());
        }
    })
    .map_err(Failure::config)?;
    let dir = settings::data_dir(&config);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::config(anyhow::anyhow!("cannot create {}: {e}", dir.display())))?;
    TokenStore::open(&dir).map_err(Failure::config)
}

pub fn token(cmd: TokenCommand) -> Result<ExitCode, Failure> {
    match cmd {
        TokenCommand::Create { role, name, at } => {
            let store = open(&at)?;
            let secret = store.create(&name, role, chrono::Utc::now()).map_err(Failure::config)?;
            eprintln!("Token {name:?} ({role}) created. It is shown once; keep it somewhere safe:");
            println!("{secret}");
        }
        TokenCommand::List { at } => {
            let store = open(&at)?;
            println!("{:<24} {:<9} CREATED", "NAME", "ROLE");
            for t in store.list() {
                println!("{:<24} {:<9} {}", t.name, t.role.to_string(), t.created_at.to_rfc3339());
            }
        }
        TokenCommand::Revoke { name, at } => {
            open(&at)?.revoke(&name).map_err(Failure::config)?;
            eprintln!("Token {name:?} revoked.");
        }
    }
    Ok(ExitCode::SUCCESS)
}
