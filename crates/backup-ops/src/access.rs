//! Who may do what through the daemon: roles, the actions of its API, the
//! one table between them ([`required_role`]) and the one decision
//! ([`authorize`]); and the tokens that prove an identity, stored only as
//! Argon2id hashes ([`hash_token`], [`verify_token`], [`new_token`]), or
//! the subject of a verified client certificate ([`CertSubject`]).
//!
//! | action | least role |
//! |---|---|
//! | read the status page, `/api/jobs` and `/api/restores` | viewer |
//! | read the audit trail, reports, drill history | auditor |
//! | run a job, run a drill, request a restore | operator |
//! | approve a restore, forget, prune, manage keys | admin |
//!
//! Roles are ordered (`viewer < auditor < operator < admin`): a role may
//! do everything the roles below it may.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// A role of a daemon identity, from least to most trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Dashboards: the status page and the job list.
    Viewer,
    /// Also the audit trail, reports and drill history.
    Auditor,
    /// Also runs jobs and drills and requests restores.
    Operator,
    /// Also approves restores, changes retention, prunes, manages keys.
    Admin,
}

impl Role {
    /// Every role, least trusted first.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Auditor, Role::Operator, Role::Admin];

    /// The role's name as configured (`viewer`, `auditor`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Auditor => "auditor",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a role: use viewer, auditor, operator or admin"))
    }
}

/// What a request to the daemon asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read the status page or the job list.
    ReadStatus,
    /// Read the audit trail.
    ReadAudit,
    /// Read reports.
    ReadReports,
    /// Read the drill history.
    ReadDrills,
    /// Run a job now.
    RunJob,
    /// Run a restore drill.
    RunDrill,
    /// Ask for a restore.
    RequestRestore,
    /// Approve or deny someone else's restore request.
    ApproveRestore,
    /// Forget snapshots (change what retention keeps).
    Forget,
    /// Prune unreferenced data.
    Prune,
    /// Add, remove or change repository keys.
    ManageKeys,
}

impl Action {
    /// Every action, for tables and tests.
    pub const ALL: [Action; 11] = [
        Action::ReadStatus,
        Action::ReadAudit,
        Action::ReadReports,
        Action::ReadDrills,
        Action::RunJob,
        Action::RunDrill,
        Action::RequestRestore,
        Action::ApproveRestore,
        Action::Forget,
        Action::Prune,
        Action::ManageKeys,
    ];

    /// How the action is named in refusals and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ReadStatus => "read-status",
            Action::ReadAudit => "read-audit",
            Action::ReadReports => "read-reports",
            Action::ReadDrills => "read-drills",
            Action::RunJob => "run-job",
            Action::RunDrill => "run-drill",
            Action::RequestRestore => "request-restore",
            Action::ApproveRestore => "approve-restore",
            Action::Forget => "forget",
            Action::Prune => "prune",
            Action::ManageKeys => "manage-keys",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The permission table: the least role that may do `action`. This and
/// [`authorize`] are the only places that decide; the table in the
/// README mirrors this one.
pub const fn required_role(action: Action) -> Role {
    match action {
        Action::ReadStatus => Role::Viewer,
        Action::ReadAudit | Action::ReadReports | Action::ReadDrills => Role::Auditor,
        Action::RunJob | Action::RunDrill | Action::RequestRestore => Role::Operator,
        Action::ApproveRestore | Action::Forget | Action::Prune | Action::ManageKeys => Role::Admin,
    }
}

/// Who made a request, once proven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The configured name (`api_token` and `read_token` for the two
    /// tokens of `[daemon]`, `anonymous` on a public status page).
    pub name: String,
    /// What the identity may do.
    pub role: Role,
}

/// Why [`authorize`] said no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What was asked.
    pub action: Action,
    /// The least role that may.
    pub needed: Role,
    /// Who asked.
    pub identity: Identity,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} needs the role {} or above; `{}` has the role {}",
            self.action, self.needed, self.identity.name, self.identity.role
        )
    }
}

impl std::error::Error for Refusal {}

/// The one authorisation decision: whether `identity` may do `action`.
///
/// # Errors
///
/// A [`Refusal`] naming the role needed when the identity's role is below
/// it.
pub fn authorize(identity: &Identity, action: Action) -> Result<(), Refusal> {
    let needed = required_role(action);
    if identity.role >= needed {
        Ok(())
    } else {
        Err(Refusal {
            action,
            needed,
            identity: identity.clone(),
        })
    }
}

/// The Argon2id hash of `token` as a PHC string (`$argon2id$v=19$...`),
/// with a fresh random salt: what `[[daemon.users]] token_hash` holds.
///
/// # Errors
///
/// An empty token.
pub fn hash_token(token: &str) -> Result<String, String> {
    if token.is_empty() {
        return Err("the token is empty".to_owned());
    }
    let mut salt = [0u8; 16];
    backup_core::util::fill_random(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(token.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks that `hash` is an Argon2 PHC string that [`verify_token`] can
/// use; the message says how to make one.
///
/// # Errors
///
/// When it is not (a plain token pasted by mistake, a truncated hash).
pub fn check_token_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| {
        format!("is not an Argon2 hash ({e}): make one with `backup token hash` or `backup token new`; the configuration never holds a plain token")
    })?;
    if !parsed.algorithm.as_str().starts_with("argon2") || parsed.hash.is_none() {
        return Err(format!(
            "is a `{}` hash without an Argon2 output: make one with `backup token hash`",
            parsed.algorithm
        ));
    }
    Ok(())
}

/// Whether `token` is the one `hash` was made of. The final comparison is
/// in constant time (the `password-hash` crate's `Output` equality).
pub fn verify_token(hash: &str, token: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(token.as_bytes(), &parsed)
        .is_ok()
}

/// Checks a configured `cert_subject`: `CN=NAME`, or a whole
/// distinguished name as RFC 4514 writes it (`CN=ann,O=Example`).
///
/// # Errors
///
/// An empty value, one without `=`, or one with spaces around it.
pub fn check_cert_subject(subject: &str) -> Result<(), String> {
    if subject.trim() != subject || !subject.contains('=') || subject.ends_with('=') {
        return Err(format!(
            "`{subject}` is not a certificate subject: write CN=NAME or the whole distinguished name (CN=NAME,O=ORG)"
        ));
    }
    Ok(())
}

/// The subject of a client certificate the TLS handshake verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSubject {
    /// The distinguished name as RFC 4514 writes it, most specific first
    /// (`CN=ann,O=Example`).
    pub dn: String,
    /// Its relative distinguished names, each as RFC 4514 writes it
    /// (`CN=ann`, `O=Example`).
    pub rdns: Vec<String>,
}

impl CertSubject {
    /// Whether this is the subject a user configured: the whole
    /// distinguished name, or `CN=NAME` equal to one of its names.
    pub fn is(&self, configured: &str) -> bool {
        self.dn == configured
            || (configured.starts_with("CN=") && self.rdns.iter().any(|r| r == configured))
    }
}

impl fmt::Display for CertSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dn)
    }
}

/// A new random token: `bkp_` and 32 random bytes in URL-safe base64.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    backup_core::util::fill_random(&mut bytes);
    format!(
        "bkp_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_the_table_is_monotone() {
        assert!(Role::Viewer < Role::Auditor);
        assert!(Role::Auditor < Role::Operator);
        assert!(Role::Operator < Role::Admin);
        for action in Action::ALL {
            let needed = required_role(action);
            for role in Role::ALL {
                let who = Identity {
                    name: "x".into(),
                    role,
                };
                assert_eq!(authorize(&who, action).is_ok(), role >= needed);
            }
        }
        let e = authorize(
            &Identity {
                name: "ann".into(),
                role: Role::Auditor,
            },
            Action::ApproveRestore,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("admin") && e.contains("ann"), "{e}");
    }

    #[test]
    fn tokens_hash_verify_and_bad_hashes_are_named() {
        let t = new_token();
        assert!(t.starts_with("bkp_") && t.len() > 40);
        let h = hash_token(&t).unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        check_token_hash(&h).unwrap();
        assert!(verify_token(&h, &t));
        assert!(!verify_token(&h, "bkp_wrong"));
        assert_ne!(hash_token(&t).unwrap(), h, "salted");
        let e = check_token_hash(&t).unwrap_err();
        assert!(e.contains("backup token hash"), "{e}");
        assert!(hash_token("").is_err());
        assert_eq!("operator".parse::<Role>().unwrap(), Role::Operator);
        assert!("root".parse::<Role>().unwrap_err().contains("viewer"));
    }

    #[test]
    fn certificate_subjects_match_by_common_name_or_whole_name() {
        let s = CertSubject {
            dn: "CN=ann,O=Example".into(),
            rdns: vec!["CN=ann".into(), "O=Example".into()],
        };
        assert!(s.is("CN=ann"));
        assert!(s.is("CN=ann,O=Example"));
        assert!(!s.is("O=Example"), "only the common name alone");
        assert!(!s.is("CN=an"));
        assert!(!s.is("CN=ann,O=Other"));
        check_cert_subject("CN=ann").unwrap();
        for bad in ["", "ann", "CN=", " CN=ann"] {
            assert!(check_cert_subject(bad).is_err(), "{bad}");
        }
    }
}
