//! `p100-recon users track|import|list|show`.

use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

use jobs::kinds::Kind;
use jobs::kyc_poll::KycPollArgs;

use crate::UsageError;

use crate::settings::Settings;

/// `users` subcommands.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Start following users: their KYC is polled and their history synced by the sweeps.
    Track {
        /// The partner's ids of the users (externalUserId).
        #[arg(required = true, value_name = "EXTERNAL_USER_ID")]
        ids: Vec<String>,
    },
    /// Start following the users of a CSV file with a header `external_user_id`; one bad row
    /// refuses the whole file (nothing changes) and names the line.
    Import {
        /// The CSV file.
        file: PathBuf,
    },
    /// Tracked users with their KYC as last seen.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[command(flatten)]
        output: crate::cli::Output,
    },
    /// One user's KYC and its history.
    Show {
        /// The user (externalUserId).
        id: String,
        #[command(flatten)]
        output: crate::cli::Output,
    },
}

/// Reads `external_user_id` values from a CSV file with that header (other columns ignored),
/// as RFC 4180 says: quoted cells may hold commas, quotes and line breaks. One bad line refuses
/// the whole file.
pub fn read_csv(text: &str, name: &str) -> Result<Vec<String>, UsageError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| UsageError(format!("{name}: {e}")))?
        .clone();
    let Some(at) = header.iter().position(|c| c.trim() == "external_user_id") else {
        return Err(UsageError(format!(
            "{name} line 1: no external_user_id column in the header {:?}",
            header.iter().collect::<Vec<_>>().join(",")
        )));
    };
    let mut ids = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| UsageError(format!("{name}: {e}")))?;
        // From the byte offset: the reader's own line count skips blank lines.
        let line = record.position().map_or(0, |p| {
            let bytes = text.as_bytes();
            let mut at = (p.byte() as usize).min(bytes.len());
            // The record's position includes the blank lines before it.
            while at < bytes.len() && matches!(bytes[at], b'\n' | b'\r') {
                at += 1;
            }
            bytes[..at].iter().filter(|b| **b == b'\n').count() + 1
        });
        // A blank line (the reader skips empty ones; this is one of spaces) names no one.
        if record.len() == 1 && record[0].trim().is_empty() {
            continue;
        }
        let id = record.get(at).unwrap_or("");
        ledger::owner::check_external_user_id(id)
            .map_err(|e| UsageError(format!("{name} line {line}: {e}")))?;
        ids.push(id.to_owned());
    }
    Ok(ids)
}

pub async fn run(settings: &Settings, command: UsersCommand) -> anyhow::Result<ExitCode> {
    // Validate before touching the database: one bad id refuses the whole batch.
    let to_track = match &command {
        UsersCommand::Track { ids } => {
            for id in ids {
                ledger::owner::check_external_user_id(id).map_err(UsageError)?;
            }
            Some(ids.clone())
        }
        UsersCommand::Import { file } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?;
            Some(read_csv(&text, &file.display().to_string())?)
        }
        _ => None,
    };
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let pool = crate::db::connect(url, 2).await?;
    crate::db::migrate(&pool).await?;
    if let Some(ids) = to_track {
        let schedule = super::daemon::load_schedule(None)?;
        let polls = ids
            .iter()
            .map(|id| {
                let args = serde_json::to_value(KycPollArgs {
                    v: 0,
                    user: id.clone(),
                })
                .unwrap_or_default();
                jobs::enqueue::new_job(Kind::KycPoll, args, &schedule, None).map_err(UsageError)
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The users and their first KYC polls commit together.
        let mut tx = pool.begin().await?;
        let added = ledger::users::track(
            &mut *tx,
            &ids,
            "cli",
            ledger::intake::FirstJob::QueuedByCaller,
        )
        .await?;
        queue::store::enqueue_many(&mut tx, &polls).await?;
        tx.commit().await?;
        println!(
            "tracking {} users ({added} new); their KYC polls are queued",
            ids.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    match command {
        UsersCommand::Track { .. } | UsersCommand::Import { .. } => {}
        UsersCommand::List { limit, output } => {
            let users = ledger::users::list(&pool, limit).await?;
            if output.json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                use crate::table::Align::Left;
                let mut t = crate::table::new(&[
                    ("user", Left),
                    ("kyc", Left),
                    ("attempt", Left),
                    ("unknown", Left),
                    ("checked at", Left),
                ]);
                for u in &users {
                    t.row([
                        u.external_user_id.clone(),
                        u.kyc_status.clone().unwrap_or_else(|| "-".into()),
                        u.kyc_attempt_status.clone().unwrap_or_else(|| "-".into()),
                        u.unknown_at_p100.to_string(),
                        u.kyc_checked_at
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_else(|| "never".into()),
                    ]);
                }
                t.print();
            }
        }
        UsersCommand::Show { id, output } => {
            let Some(user) = ledger::users::show(&pool, &id).await? else {
                return Err(UsageError(format!("user {id} is not tracked")).into());
            };
            let history = ledger::users::kyc_history(&pool, &id).await?;
            if output.json {
                let mut value = serde_json::to_value(&user)?;
                value["kyc_history"] = serde_json::json!(history
                    .iter()
                    .map(|(s, a, r, t)| serde_json::json!({"status": s, "attempt_status": a, "rejection_reason": r, "checked_at": t}))
                    .collect::<Vec<_>>());
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!(
                    "user {}\n  kyc {} / {}\n  unknown at P100 {}",
                    user.external_user_id,
                    user.kyc_status.as_deref().unwrap_or("-"),
                    user.kyc_attempt_status.as_deref().unwrap_or("-"),
                    user.unknown_at_p100
                );
                for (s, a, r, t) in history {
                    println!(
                        "  {t}  {} {} {}",
                        super::shown(&s),
                        super::shown(&a.unwrap_or_default()),
                        super::shown(&r.unwrap_or_default())
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::read_csv;

    #[test]
    fn csv_import_reads_the_column_and_names_a_bad_line() {
        let ids = read_csv("email,external_user_id\na@x,u-1\n\nb@x,\"u-2\"\n", "f.csv").unwrap();
        assert_eq!(ids, vec!["u-1", "u-2"]);
        let err = read_csv("external_user_id\nu-1\n  \n\n,\n", "f.csv")
            .unwrap_err()
            .0;
        assert!(err.contains("f.csv line 5"), "{err}");
        let err = read_csv("id\nu-1\n", "f.csv").unwrap_err().0;
        assert!(err.contains("no external_user_id column"), "{err}");
    }

    /// Security review: a quoted name with a comma tracked the user `John`.
    #[test]
    fn quoted_cells_are_read_as_one_cell() {
        let ids = read_csv(
            "name,external_user_id\n\"Doe, John\",u-1\n\"Smith \"\"Jr\"\"\",\"u,2\"\n",
            "f.csv",
        )
        .unwrap();
        assert_eq!(ids, vec!["u-1", "u,2"]);
        for bad in [
            "external_user_id\n..\n",
            "external_user_id\n\"a\u{1b}[2J\"\n",
        ] {
            let err = read_csv(bad, "f.csv").unwrap_err().0;
            assert!(err.contains("line 2"), "{err}");
        }
    }
}
