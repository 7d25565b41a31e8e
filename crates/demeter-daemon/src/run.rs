//! `demeter run`: the shared [`Host`] (engine + HTTP server) until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use demeter_host::{Host, HostError, HostOptions};
use tracing::info;

use crate::{
    cli::{Failure, RunArgs},
    settings,
};

pub fn run(args: RunArgs) -> Result<ExitCode, Failure> {
    let config = settings::load(&args.common, |c| {
        if let Some(w) = &args.watch {
            c.watch.dir = w.clone();
        }
        if let Some(d) = &args.data {
            c.store.data_dir = Some(d.clone());
        }
        if let Some(l) = args.listen {
            c.server.listen = l;
        }
        if let Some(w) = &args.notify_webhook {
            c.notify.webhook = Some(w.clone());
        }
    })
    .map_err(failure)?;
    let data_dir = settings::data_dir(&config);
    let mut host =
        Host::start(HostOptions { config, data_dir, admin_token_file: args.admin_token_file }).map_err(failure)?;
    if let Some(secret) = host.take_new_admin_token() {
        println!("Admin token (shown once; it is stored only as a hash in {}):", host.token_file().display());
        println!("  {secret}");
        println!("Sign in on the status page with it, or make more: demeter token create --role viewer --name NAME");
    }
    println!("Demeter is running at http://{}/", host.listen());
    if let Some(lan) = host.lan_url() {
        println!("  on the LAN at {lan}");
    }
    println!("  watching {}", host.watch_dir().display());
    println!("  data in  {}", host.data_dir().display());
    println!("Press Ctrl-C to stop.");
    host.run_until(shutdown_signal()).map_err(failure)?;
    Ok(ExitCode::SUCCESS)
}

/// Exit 2 for what a person fixes in configuration or set-up, 1 for failures while running.
fn failure(e: HostError) -> Failure {
    let code = if e.is_config() { crate::cli::EXIT_CONFIG } else { 1 };
    Failure { error: anyhow::Error::new(e), code }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("Ctrl-C received; stopping"),
        _ = term => info!("SIGTERM received; stopping"),
    }
}
