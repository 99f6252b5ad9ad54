//! `CONSOLE_TOKENS_FILE`: who may sign in to the console, and with which role.
//!
//! One line per person: `name role token`, role `viewer` or `operator`; blank lines and lines
//! starting with `#` are skipped. Only each token's SHA-256 is kept in memory, and a token
//! offered at sign-in is compared, hashed, with every entry in constant time.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shorter tokens are refused at start: they could be guessed.
pub const MIN_TOKEN_LEN: usize = 20;

/// What a signed-in person may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads every page; changes nothing.
    Viewer,
    /// Also acknowledges and resolves discrepancies, retries and cancels jobs, pauses kinds.
    Operator,
}

impl Role {
    /// Its name in the tokens file and the session table.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    /// The role named `name`.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

struct Entry {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// The people who may sign in.
pub struct Tokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| (&e.name, e.role)))
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What a session keeps of the token it signed in with: not the token's own hash, so the
/// session table says nothing about the file.
fn fingerprint(digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"p100-recon console session\0");
    h.update(digest);
    h.finalize().into()
}

impl Tokens {
    /// Reads the file; errors name the file and line, never a token.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read CONSOLE_TOKENS_FILE {}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("CONSOLE_TOKENS_FILE {}: {e}", path.display()))
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, role, token] = fields[..] else {
                return Err(format!(
                    "line {n}: expected `name role token` (three fields separated by spaces), found {} fields",
                    fields.len()
                ));
            };
            if name.len() > 100 || name.chars().any(|c| c.is_control()) {
                return Err(format!(
                    "line {n}: the name must be at most 100 printable characters"
                ));
            }
            let role = Role::parse(role)
                .ok_or_else(|| format!("line {n}: role {role:?} is neither viewer nor operator"))?;
            if token.chars().count() < MIN_TOKEN_LEN {
                return Err(format!(
                    "line {n}: {name}'s token is shorter than {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 24`)"
                ));
            }
            let digest = digest(token);
            if entries.iter().any(|e| e.name == name) {
                return Err(format!("line {n}: {name} appears twice"));
            }
            if entries.iter().any(|e| bool::from(e.digest.ct_eq(&digest))) {
                return Err(format!("line {n}: {name}'s token is also someone else's"));
            }
            entries.push(Entry {
                name: name.to_owned(),
                role,
                digest,
            });
        }
        if entries.is_empty() {
            return Err("no `name role token` line: nobody could sign in".to_owned());
        }
        Ok(Tokens { entries })
    }

    /// Who `token` belongs to, with the fingerprint its sessions keep. Every entry is compared,
    /// whatever matched, in constant time.
    pub fn sign_in(&self, token: &str) -> Option<(&str, Role, [u8; 32])> {
        let offered = digest(token.trim());
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.digest.ct_eq(&offered)) {
                found = Some((e.name.as_str(), e.role, fingerprint(&e.digest)));
            }
        }
        found
    }

    /// The role now of a session of `name` signed in with the token fingerprinted `token`:
    /// `None` once the name has left the file or its token has changed; a role taken away
    /// applies at once.
    pub fn role_of(&self, name: &str, token: &[u8]) -> Option<Role> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .filter(|e| bool::from(fingerprint(&e.digest)[..].ct_eq(token)))
            .map(|e| e.role)
    }

    /// How many people may sign in, per role.
    pub fn count(&self, role: Role) -> usize {
        self.entries.iter().filter(|e| e.role == role).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "alice-token-0123456789abcdef";
    const VICTOR: &str = "victor-token-0123456789abcdef";

    #[test]
    fn a_file_signs_in_by_token_and_knows_roles() {
        let t = Tokens::parse(&format!(
            "# who may sign in\n\nalice operator {ALICE}\n  victor   viewer  {VICTOR}  \n"
        ))
        .unwrap();
        let (name, role, alice_fp) = t.sign_in(ALICE).unwrap();
        assert_eq!((name, role), ("alice", Role::Operator));
        let (name, role, victor_fp) = t.sign_in(VICTOR).unwrap();
        assert_eq!((name, role), ("victor", Role::Viewer));
        assert_eq!(t.sign_in(&ALICE[..ALICE.len() - 1]), None);
        assert_eq!(t.sign_in(&format!("{ALICE}x")), None);
        assert_eq!(t.sign_in(""), None);
        assert_eq!(t.role_of("victor", &victor_fp), Some(Role::Viewer));
        assert_eq!(t.role_of("victor", &alice_fp), None);
        assert_eq!(t.role_of("mallory", &alice_fp), None);
        // A new token for alice: sessions signed in with the old one no longer count.
        let rotated = Tokens::parse(&format!("alice operator {VICTOR}")).unwrap();
        assert_eq!(rotated.role_of("alice", &alice_fp), None);
        assert_eq!((t.count(Role::Operator), t.count(Role::Viewer)), (1, 1));
    }

    #[test]
    fn bad_files_are_refused_naming_the_line_but_never_the_token() {
        for (text, says) in [
            (format!("alice operator {ALICE} extra"), "line 1: expected"),
            (
                format!("alice admin {ALICE}"),
                "neither viewer nor operator",
            ),
            ("alice operator short".to_owned(), "shorter than 20"),
            (
                format!("alice operator {ALICE}\nalice viewer {VICTOR}"),
                "line 2: alice appears twice",
            ),
            (
                format!("alice operator {ALICE}\nbob viewer {ALICE}"),
                "also someone else's",
            ),
            ("# nobody\n".to_owned(), "nobody could sign in"),
        ] {
            let err = Tokens::parse(&text).unwrap_err();
            assert!(err.contains(says), "{err}");
            assert!(!err.contains(ALICE) && !err.contains(VICTOR), "{err}");
        }
    }

    #[test]
    fn debug_output_shows_names_and_roles_only() {
        let t = Tokens::parse(&format!("alice operator {ALICE}")).unwrap();
        let shown = format!("{t:?}");
        assert!(shown.contains("alice") && !shown.contains(ALICE), "{shown}");
    }
}
