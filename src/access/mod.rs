//! Who may do what: roles, permissions and scopes of the server's users
//! and tokens, as pure data (the server checks them in one place; the
//! store keeps them).
//!
//! A user has a [`Role`]; a route needs a [`Permission`]; a token grants
//! what its role grants, narrowed by its scopes when it has any. Runner
//! tokens grant [`Permission::Runner`] alone.
//!
//! ```
//! use orch::access::{Permission, Role};
//!
//! assert!(Role::Operator.grants(Permission::Operate));
//! assert!(!Role::Operator.grants(Permission::Admin));
//! assert!(!Role::Viewer.grants(Permission::Operate));
//! assert!(!Role::Runner.grants(Permission::Read));
//! assert_eq!("viewer".parse::<Role>().unwrap(), Role::Viewer);
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a user (or a token) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub enum Role {
    /// Everything, users and tokens included.
    Admin,
    /// Runs, workflows, events and timers: reads and changes; no user
    /// management.
    Operator,
    /// Reads only.
    Viewer,
    /// A runner's token: register, heartbeat, claim and report only.
    Runner,
}

/// What a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub enum Permission {
    /// Reading runs, workflows, queues, events and timers.
    Read,
    /// Starting, steering and cancelling runs; publishing and deleting
    /// workflows; pushing events; timers.
    Operate,
    /// Users, other users' tokens, runner tokens, and the admin calls.
    Admin,
    /// The runner calls.
    Runner,
}

impl Role {
    /// Every role, in order of power.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Viewer, Role::Runner];

    /// Whether this role grants `p`.
    pub fn grants(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => matches!(p, Read | Operate | Admin),
            Role::Operator => matches!(p, Read | Operate),
            Role::Viewer => p == Read,
            Role::Runner => p == Runner,
        }
    }

    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Runner => "runner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}` (admin, operator, viewer or runner)"))
    }
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 4] = [
        Permission::Read,
        Permission::Operate,
        Permission::Admin,
        Permission::Runner,
    ];

    /// The word stored and shown (also a token scope).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Operate => "operate",
            Permission::Admin => "admin",
            Permission::Runner => "runner",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Permission, String> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown scope `{s}` (read, operate, admin or runner)"))
    }
}

/// What a presented, valid token may do: its role's grants narrowed by
/// its scopes (none: the role's whole grant).
///
/// ```
/// use orch::access::{Grant, Permission, Role};
///
/// let g = Grant::new(Role::Admin, &[Permission::Read]);
/// assert!(g.allows(Permission::Read));
/// assert!(!g.allows(Permission::Operate));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    role: Role,
    scopes: Vec<Permission>,
}

impl Grant {
    /// The grant of a token of a user with `role` and these scopes.
    pub fn new(role: Role, scopes: &[Permission]) -> Grant {
        Grant {
            role,
            scopes: scopes.to_vec(),
        }
    }

    /// Whether a call needing `p` is allowed.
    pub fn allows(&self, p: Permission) -> bool {
        self.role.grants(p) && (self.scopes.is_empty() || self.scopes.contains(&p))
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }
}

/// The longest user name.
pub const MAX_USER_NAME: usize = 64;
/// The longest password (argon2 hashes anything; this bounds the work).
pub const MAX_PASSWORD: usize = 1024;
/// The shortest password.
pub const MIN_PASSWORD: usize = 8;

/// Checks a user name: 1 to 64 of `A-Z a-z 0-9 _ . -`, starting with a
/// letter or digit.
///
/// ```
/// assert!(orch::access::check_user_name("ada.lovelace").is_ok());
/// assert!(orch::access::check_user_name("../root").is_err());
/// ```
pub fn check_user_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USER_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "user name {:?} is refused: 1 to {MAX_USER_NAME} of A-Z a-z 0-9 _ . -, starting with a letter or digit",
            crate::protocol::quote(name)
        ))
    }
}

/// Checks a password's length.
pub fn check_password(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        return Err(format!(
            "the password is too short: at least {MIN_PASSWORD} characters"
        ));
    }
    if password.len() > MAX_PASSWORD {
        return Err(format!(
            "the password is too long: at most {MAX_PASSWORD} bytes"
        ));
    }
    Ok(())
}

/// The prefix of every API token.
pub const TOKEN_PREFIX: &str = "orch_";

/// A token split into its public id and its secret: `orch_<id>_<secret>`,
/// the id 12 and the secret 40 characters of `A-Z a-z 0-9`. The id finds
/// the stored record; the secret's hash is compared in constant time.
///
/// ```
/// let (id, _) = orch::access::split_token("orch_abcdefABCDEF_0123456789abcdefghij0123456789ABCDEFGHIJ").unwrap();
/// assert_eq!(id, "abcdefABCDEF");
/// assert!(orch::access::split_token("orch_short_x").is_none());
/// ```
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let alnum = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (alnum(id, TOKEN_ID_LEN) && alnum(secret, TOKEN_SECRET_LEN)).then_some((id, secret))
}

/// Characters in a token's id.
pub const TOKEN_ID_LEN: usize = 12;
/// Characters in a token's secret (about 238 bits).
pub const TOKEN_SECRET_LEN: usize = 40;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_matrix_is_what_the_docs_say() {
        use Permission::*;
        let table = [
            (Role::Admin, [true, true, true, false]),
            (Role::Operator, [true, true, false, false]),
            (Role::Viewer, [true, false, false, false]),
            (Role::Runner, [false, false, false, true]),
        ];
        for (role, row) in table {
            for (p, want) in [Read, Operate, Admin, Runner].into_iter().zip(row) {
                assert_eq!(role.grants(p), want, "{role} {p}");
            }
        }
    }

    #[test]
    fn scopes_only_narrow() {
        let g = Grant::new(Role::Viewer, &[Permission::Admin]);
        assert!(!g.allows(Permission::Admin));
        assert!(!g.allows(Permission::Read));
        let g = Grant::new(Role::Operator, &[]);
        assert!(g.allows(Permission::Operate));
    }

    #[test]
    fn names_and_passwords_are_bounded() {
        assert!(check_user_name("a").is_ok());
        for bad in ["", "-x", "a/b", "a\0", "é", &"a".repeat(65)] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn tokens_split_only_when_well_formed() {
        let id = "A".repeat(TOKEN_ID_LEN);
        let secret = "b".repeat(TOKEN_SECRET_LEN);
        assert!(split_token(&format!("orch_{id}_{secret}")).is_some());
        assert!(split_token(&format!("orch_{id}_{secret}x")).is_none());
        assert!(split_token(&format!("orcx_{id}_{secret}")).is_none());
        assert!(split_token(&format!("orch_{id}-{secret}")).is_none());
        assert!(split_token("").is_none());
    }
}
