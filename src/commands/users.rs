//! `p100-recon users track|list|show`.

use std::process::ExitCode;

use jobs::kinds::Kind;
use jobs::kyc_poll::KycPollArgs;

use crate::UsageError;
use crate::cli::UsersCommand;
use crate::settings::Settings;

pub async fn run(settings: &Settings, command: UsersCommand) -> anyhow::Result<ExitCode> {
    if let UsersCommand::Track { ids } = &command
        && let Some(bad) = ids
            .iter()
            .find(|id| id.trim().is_empty() || id.len() > 200 || id.chars().any(char::is_control))
    {
        // Refuse the whole batch on one bad id: nothing else changes.
        return Err(UsageError(format!(
            "invalid externalUserId {bad:?}: must be 1 to 200 printable characters"
        ))
        .into());
    }
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let pool = crate::db::connect(url, 2).await?;
    crate::db::migrate(&pool).await?;
    match command {
        UsersCommand::Track { ids } => {
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
            let added = ledger::users::track(&mut *tx, &ids, "cli").await?;
            queue::store::enqueue_many(&mut *tx, &polls).await?;
            tx.commit().await?;
            println!(
                "tracking {} users ({added} new); their KYC polls are queued",
                ids.len()
            );
        }
        UsersCommand::List { limit, json } => {
            let users = ledger::users::list(&pool, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                println!(
                    "{:<36} {:<16} {:<22} {:<8} checked at",
                    "user", "kyc", "attempt", "unknown"
                );
                for u in &users {
                    println!(
                        "{:<36} {:<16} {:<22} {:<8} {}",
                        u.external_user_id,
                        u.kyc_status.as_deref().unwrap_or("-"),
                        u.kyc_attempt_status.as_deref().unwrap_or("-"),
                        u.unknown_at_p100,
                        u.kyc_checked_at
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_else(|| "never".into())
                    );
                }
            }
        }
        UsersCommand::Show { id, json } => {
            let Some(user) = ledger::users::show(&pool, &id).await? else {
                return Err(UsageError(format!("user {id} is not tracked")).into());
            };
            let history = ledger::users::kyc_history(&pool, &id).await?;
            if json {
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
                        "  {t}  {s} {} {}",
                        a.unwrap_or_default(),
                        r.unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
