//! Seeded bulk data computed on demand.
//!
//! Nothing per transaction is stored: row `i` is a pure function of `(seed, i)`, so 1M rows
//! cost no memory and any page is computed in O(page). Times grow with the index
//! (`updatedAt = 2025-01-01T00:00:00Z + i s` for user rows, `+ j s + 500 ms` for partner rows),
//! so "rows of user u with updatedAt in [from, to]" is an index range found by binary search.
//! Only the per-(owner, currency) sums of COMPLETED `amount − fee` are precomputed, by one pass
//! at start-up.
//!
//! User `u` (0-based) is `user-{u+1:06}` and owns rows `u, u + users, u + 2·users, …`.
//! KYC varies deterministically per user (see [`Generated::kyc`]).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{eur_rate, precision, round, withdrawal_fee};
use crate::scenario::{KycSpec, KycStep};
use crate::state::Tx;
use crate::util::{mix, uuid_from};

/// Configuration of the seeded generator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Seed: the same seed gives the same users, rows and balances on every run.
    pub seed: u64,
    /// Number of users (`user-000001` …).
    pub users: usize,
    /// Number of user transactions, spread round-robin over the users.
    pub transactions: usize,
    /// Number of partner transactions.
    pub partner_transactions: usize,
    /// Currencies rows are drawn from (lowercase; default eur, btc, eth, usdc).
    pub currencies: Vec<String>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            users: 1_000,
            transactions: 10_000,
            partner_transactions: 1_000,
            currencies: ["eur", "btc", "eth", "usdc"].map(String::from).to_vec(),
        }
    }
}

/// Start of generated time: 2025-01-01T00:00:00Z.
pub const BASE_MS: i64 = 1_735_689_600_000;
const STEP_MS: i64 = 1_000;
const PARTNER_OFFSET_MS: i64 = 500;

const DOMAIN_USER: u64 = 1;
const DOMAIN_PARTNER: u64 = 2;

/// Which generated owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenOwner {
    /// The partner's generated rows.
    Partner,
    /// User with this 0-based index.
    User(u64),
}

/// The id of generated user `u` (0-based).
pub fn user_id(u: u64) -> String {
    format!("user-{:06}", u + 1)
}

/// The 0-based index of a generated user id, if `id` is one under `cfg`.
pub fn user_index(cfg: &GeneratorConfig, id: &str) -> Option<u64> {
    let n: u64 = id.strip_prefix("user-")?.parse().ok()?;
    if n == 0 || n > cfg.users as u64 || user_id(n - 1) != id {
        return None;
    }
    Some(n - 1)
}

/// The generator with its precomputed sums.
#[derive(Debug)]
pub struct Generated {
    cfg: GeneratorConfig,
    /// `users × currencies` sums of COMPLETED `amount − fee`, row-major by user.
    user_sums: Vec<Decimal>,
    partner_sums: Vec<Decimal>,
}

/// The parts of a row the balance needs (cheap: no strings).
struct Core {
    currency: usize,
    kind: &'static str,
    status: &'static str,
    amount: Decimal,
    fee: Decimal,
    h2: u64,
    h3: u64,
}

impl Generated {
    /// Normalises `cfg` and streams once over all rows to sum balances.
    pub fn build(mut cfg: GeneratorConfig) -> Self {
        cfg.currencies = cfg
            .currencies
            .iter()
            .map(|c| c.trim().to_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        if cfg.currencies.is_empty() {
            cfg.currencies.push("eur".into());
        }
        let c = cfg.currencies.len();
        let mut g = Generated {
            user_sums: vec![Decimal::ZERO; cfg.users * c],
            partner_sums: vec![Decimal::ZERO; c],
            cfg,
        };
        if g.cfg.users > 0 {
            for i in 0..g.cfg.transactions as u64 {
                let core = g.core(DOMAIN_USER, i);
                if core.status == "COMPLETED" {
                    let u = (i % g.cfg.users as u64) as usize;
                    g.user_sums[u * c + core.currency] += core.amount - core.fee;
                }
            }
        }
        for j in 0..g.cfg.partner_transactions as u64 {
            let core = g.core(DOMAIN_PARTNER, j);
            if core.status == "COMPLETED" {
                g.partner_sums[core.currency] += core.amount - core.fee;
            }
        }
        g
    }

    /// Currencies of generated rows.
    pub fn currencies(&self) -> &[String] {
        &self.cfg.currencies
    }

    /// Index of a generated user id.
    pub fn user_index(&self, id: &str) -> Option<u64> {
        user_index(&self.cfg, id)
    }

    /// Sum of COMPLETED `amount − fee` of an owner's generated rows in `currency`.
    pub fn balance(&self, owner: GenOwner, currency: &str) -> Decimal {
        let Some(ci) = self.cfg.currencies.iter().position(|c| c == currency) else {
            return Decimal::ZERO;
        };
        match owner {
            GenOwner::Partner => self.partner_sums[ci],
            GenOwner::User(u) => self
                .user_sums
                .get(u as usize * self.cfg.currencies.len() + ci)
                .copied()
                .unwrap_or(Decimal::ZERO),
        }
    }

    /// Number of generated rows of an owner.
    pub fn len(&self, owner: GenOwner) -> u64 {
        match owner {
            GenOwner::Partner => self.cfg.partner_transactions as u64,
            GenOwner::User(u) => {
                let (t, n) = (self.cfg.transactions as u64, self.cfg.users as u64);
                if n == 0 || u >= t {
                    0
                } else {
                    (t - 1 - u) / n + 1
                }
            }
        }
    }

    fn global_index(&self, owner: GenOwner, k: u64) -> (u64, u64) {
        match owner {
            GenOwner::Partner => (DOMAIN_PARTNER, k),
            GenOwner::User(u) => (DOMAIN_USER, u + k * self.cfg.users as u64),
        }
    }

    /// `updatedAt` (ms) of an owner's `k`-th row; increasing in `k`.
    pub fn updated_ms(&self, owner: GenOwner, k: u64) -> i64 {
        let (domain, i) = self.global_index(owner, k);
        let base = BASE_MS + (i as i64).saturating_mul(STEP_MS);
        if domain == DOMAIN_PARTNER {
            base + PARTNER_OFFSET_MS
        } else {
            base
        }
    }

    /// Row id of an owner's `k`-th row.
    pub fn id(&self, owner: GenOwner, k: u64) -> String {
        let (domain, i) = self.global_index(owner, k);
        let h3 = mix(self.cfg.seed, domain + 20, i);
        uuid_from(h3, mix(h3, domain, i))
    }

    /// The `k`-th row of an owner, computed.
    pub fn row(&self, owner: GenOwner, k: u64) -> Tx {
        let (domain, i) = self.global_index(owner, k);
        let core = self.core(domain, i);
        let updated = self.updated_ms(owner, k);
        let created = if core.status == "PENDING" {
            updated
        } else {
            updated - (core.h2 >> 8) as i64 % 86_400_000
        };
        let reference = matches!(core.kind, "DEPOSIT" | "WITHDRAWAL")
            .then(|| uuid_from(core.h2, core.h3 ^ 0x5a5a_5a5a));
        Tx::generated(
            self.id(owner, k),
            core.kind,
            core.status,
            self.cfg.currencies[core.currency].clone(),
            core.amount,
            core.fee,
            created,
            updated,
            reference,
        )
    }

    fn core(&self, domain: u64, i: u64) -> Core {
        let seed = self.cfg.seed;
        let h1 = mix(seed, domain, i);
        let h2 = mix(seed, domain + 10, i);
        let h3 = mix(seed, domain + 20, i);
        let currency = (h1 % self.cfg.currencies.len() as u64) as usize;
        let cur = self.cfg.currencies[currency].as_str();
        let roll = (h1 >> 8) % 100;
        let span = |lo: u64, hi: u64| lo + (h1 >> 24) % (hi - lo + 1);
        // EUR value in cents, then converted at the balance rate. Deposits are larger than
        // debits so balances drift upwards, as a real account's would.
        let (kind, cents, sign): (&'static str, u64, i64) = match roll {
            0..40 => ("DEPOSIT", span(1_000, 100_000), 1),
            40..65 => ("CARD", span(100, 25_000), -1),
            65..80 => ("WITHDRAWAL", span(1_000, 25_000), -1),
            80..90 => (
                "INTERNAL_TRANSFER",
                span(100, 25_000),
                if h2 & 1 == 0 { 1 } else { -1 },
            ),
            _ => ("FEE", span(10, 500), -1),
        };
        let status = match (h1 >> 16) % 100 {
            0..92 => "COMPLETED",
            92..96 => "PENDING",
            _ => "FAILED",
        };
        let dp = precision(cur);
        let eur = Decimal::new(cents as i64, 2);
        let rate = eur_rate(cur);
        let mut amount = if rate.is_zero() {
            eur
        } else {
            round(eur / rate, dp)
        };
        if amount.is_zero() {
            amount = Decimal::new(1, dp);
        }
        let fee = if kind == "WITHDRAWAL" {
            withdrawal_fee(cur)
        } else {
            Decimal::ZERO
        };
        Core {
            currency,
            kind,
            status,
            amount: amount * Decimal::from(sign),
            fee,
            h2,
            h3,
        }
    }

    /// KYC of generated user `u`: 80 % VERIFIED/SUCCESSFUL; 6 % PENDING → VERIFICATION →
    /// VERIFIED/SUCCESSFUL one status read apart; 4 % REJECTED_BY_PROVIDER (NO_FACE_FOUND);
    /// 4 % no KYC (P445); 3 % EXPIRED; 3 % VERIFICATION → VERIFIED after two reads.
    pub fn kyc(&self, u: u64) -> Option<KycSpec> {
        let r = mix(self.cfg.seed, 99, u) % 100;
        let spec = |status: &str, attempt: &str| KycSpec {
            status: status.into(),
            attempt_status: attempt.into(),
            rejection_reason: None,
            steps: Vec::new(),
        };
        let step = |status: &str, attempt: &str, polls: u32| KycStep {
            status: Some(status.into()),
            attempt_status: Some(attempt.into()),
            rejection_reason: None,
            after_polls: Some(polls),
            after_seconds: None,
        };
        match r {
            0..80 => Some(spec("VERIFIED", "SUCCESSFUL")),
            80..86 => Some(KycSpec {
                steps: vec![
                    step("NOT_VERIFIED", "VERIFICATION", 1),
                    step("VERIFIED", "SUCCESSFUL", 1),
                ],
                ..spec("NOT_VERIFIED", "PENDING")
            }),
            86..90 => Some(KycSpec {
                rejection_reason: Some("NO_FACE_FOUND".into()),
                ..spec("NOT_VERIFIED", "REJECTED_BY_PROVIDER")
            }),
            90..94 => None,
            94..97 => Some(spec("EXPIRED", "SUCCESSFUL")),
            _ => Some(KycSpec {
                steps: vec![step("VERIFIED", "SUCCESSFUL", 2)],
                ..spec("NOT_VERIFIED", "VERIFICATION")
            }),
        }
    }

    /// First `k` in `[0, len)` whose `updatedAt >= ms`.
    pub fn first_at_or_after(&self, owner: GenOwner, ms: i64) -> u64 {
        let (mut lo, mut hi) = (0u64, self.len(owner));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.updated_ms(owner, mid) < ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_deterministic_and_sums_match_rows() {
        let cfg = GeneratorConfig {
            seed: 7,
            users: 3,
            transactions: 100,
            partner_transactions: 10,
            currencies: vec!["eur".into(), "BTC".into()],
        };
        let g = Generated::build(cfg.clone());
        let g2 = Generated::build(cfg);
        assert_eq!(
            g.row(GenOwner::User(1), 5).id,
            g2.row(GenOwner::User(1), 5).id
        );
        assert_eq!(g.len(GenOwner::User(0)), 34);
        assert_eq!(g.len(GenOwner::User(2)), 33);
        for u in 0..3 {
            for cur in ["eur", "btc"] {
                let owner = GenOwner::User(u);
                let sum: Decimal = (0..g.len(owner))
                    .map(|k| g.row(owner, k))
                    .filter(|t| t.status == "COMPLETED" && t.currency == cur)
                    .map(|t| t.amount - t.fee)
                    .sum();
                assert_eq!(sum, g.balance(owner, cur));
            }
        }
        assert_eq!(g.user_index("user-000003"), Some(2));
        assert_eq!(g.user_index("user-000004"), None);
        assert_eq!(g.user_index("user-3"), None);
    }

    #[test]
    fn time_search_finds_index() {
        let g = Generated::build(GeneratorConfig::default());
        let owner = GenOwner::User(5);
        let t = g.updated_ms(owner, 3);
        assert_eq!(g.first_at_or_after(owner, t), 3);
        assert_eq!(g.first_at_or_after(owner, t + 1), 4);
        assert_eq!(g.first_at_or_after(owner, 0), 0);
    }
}
