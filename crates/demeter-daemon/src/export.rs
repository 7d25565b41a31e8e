//! `demeter export`: the results archive as CSV or JSON, without the daemon running.

use std::{
    io::{BufWriter, Write},
    process::ExitCode,
};

use anyhow::{anyhow, Context};
use chrono::{DateTime, NaiveDate, Utc};
use demeter_domain::archive::ArchivedResult;
use demeter_store::{ArchiveQuery, Store};

use crate::{
    cli::{CommonArgs, ExportArgs, Failure},
    settings,
};

fn parse_time(flag: &str, raw: &str) -> Result<DateTime<Utc>, Failure> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDate::parse_from_str(raw, "%Y-%m-%d").map(|d| d.and_time(Default::default()).and_utc()))
        .map_err(|_| Failure::config(anyhow!("{flag} {raw:?} is not a date (2026-05-04) or an RFC 3339 time")))
}

pub fn export(args: ExportArgs) -> Result<ExitCode, Failure> {
    let common = CommonArgs { config: args.at.config.clone(), ..Default::default() };
    let config = settings::load(&common, |c| {
        if let Some(d) = &args.at.data {
            c.store.data_dir = Some(d.clone());
        }
    })
    .map_err(Failure::config)?;
    let dir = settings::data_dir(&config);
    if !dir.join("db").exists() {
        return Err(Failure::config(anyhow!("{} holds no results (no db/ folder); pass --data DIR", dir.display())));
    }
    let store = Store::open(&dir, 16 << 20).map_err(|e| Failure::config(anyhow!(e)))?;
    let mut query = ArchiveQuery {
        location: args.location,
        since: args.since.as_deref().map(|s| parse_time("--since", s)).transpose()?,
        until: args.until.as_deref().map(|s| parse_time("--until", s)).transpose()?,
        model: args.model,
        limit: 1000,
        oldest_first: true,
        ..Default::default()
    };
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))
                .map_err(Failure::config)?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(out);
    let json = args.format == "json";
    let io = |e: std::io::Error| Failure::config(anyhow!("cannot write the export: {e}"));
    if json { out.write_all(b"[") } else { writeln!(out, "{}", ArchivedResult::CSV_HEADER) }.map_err(io)?;
    let mut written = 0usize;
    loop {
        let page = store
            .archive_page(&query)
            .map_err(|e| Failure::config(anyhow!(e)))?
            .map_err(|e| Failure::config(anyhow!(e)))?;
        for r in &page.results {
            if json {
                let sep = if written == 0 { "\n" } else { ",\n" };
                out.write_all(sep.as_bytes()).map_err(io)?;
                serde_json::to_writer(&mut out, r).map_err(|e| Failure::config(anyhow!(e)))?;
            } else {
                writeln!(out, "{}", r.csv_row()).map_err(io)?;
            }
            written += 1;
        }
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }
    if json {
        out.write_all(b"\n]\n").map_err(io)?;
    }
    out.flush().map_err(io)?;
    eprintln!("{written} results exported");
    Ok(ExitCode::SUCCESS)
}
