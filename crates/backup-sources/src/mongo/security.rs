//! Users and user-defined roles, backed up on request (`--mongo-users`).
//!
//! # Backup
//!
//! `usersInfo` with `showCredentials` and `rolesInfo` with
//! `showPrivileges` on every database of the backup (plus `admin` and
//! `$external` for a whole-deployment backup) give the users, with their stored password
//! hashes, and the roles. They are stored as concatenated BSON documents
//! under `security/` in the shape of `admin.system.users` and
//! `admin.system.roles` documents (`_id` is `db.name`).
//!
//! # Restore
//!
//! Users and roles of the databases a restore brings back whole (and of
//! `admin` and `$external` for a whole deployment) are created on the
//! target after the data, under the database's new name when it is
//! renamed; ones that already exist there are left as they are (and
//! reported). Roles go in with `createRole` (roles a role inherits first).
//! A user's password hash cannot be given to `createUser`, so users go in
//! the way `mongorestore` does it: into a temporary collection of `admin`,
//! merged by `_mergeAuthzCollections`. A server without that command
//! gets the users that need no password (`$external`, X.509) through
//! `createUser`; the others are reported as not restored, and the restore
//! exits non-zero.

use std::collections::{BTreeSet, HashSet};

use backup_core::{Error, Result};
use mongodb::bson::{doc, Bson, Document};

use super::conn::Conn;

/// Directory of the users and roles in the snapshot tree.
pub(crate) const SECURITY: &str = "security";
/// Users, in the shape of `admin.system.users` documents.
pub(crate) const USERS: &str = "users.bson";
/// User-defined roles, in the shape of `admin.system.roles` documents.
pub(crate) const ROLES: &str = "roles.bson";

/// Databases whose users and roles belong to the whole deployment: backed
/// up and restored only with every database.
pub(crate) const DEPLOYMENT_DBS: [&str; 2] = ["admin", "$external"];

/// Reads the users (with credentials) and the user-defined roles of `dbs`.
///
/// # Errors
///
/// [`Error::PermissionDenied`] when the source user may not view users or
/// roles; driver errors.
pub(crate) async fn read(conn: &Conn, dbs: &[String]) -> Result<(Vec<Document>, Vec<Document>)> {
    let mut users = Vec::new();
    let mut roles = Vec::new();
    for db in dbs {
        let action = format!(
            "reading the users of {db} (backing up users needs the viewUser and viewRole actions, for example the `backup` or `userAdminAnyDatabase` role)"
        );
        let r = conn
            .command(
                db,
                doc! {"usersInfo": 1, "showCredentials": true, "showAuthenticationRestrictions": true},
                &action,
            )
            .await?;
        for u in array(&r, "users") {
            // usersInfo on a database lists its own users only.
            if u.get_str("db").ok() == Some(db.as_str()) {
                users.push(user_document(u));
            }
        }
        let r = conn
            .command(
                db,
                doc! {"rolesInfo": 1, "showPrivileges": true, "showBuiltinRoles": false, "showAuthenticationRestrictions": true},
                &action.replace("users", "roles"),
            )
            .await?;
        for r in array(&r, "roles") {
            if r.get_bool("isBuiltin").unwrap_or(false) || r.get_str("db").ok() != Some(db.as_str())
            {
                continue;
            }
            roles.push(role_document(&r));
        }
    }
    Ok((users, roles))
}

fn array(d: &Document, key: &str) -> Vec<Document> {
    d.get_array(key)
        .map(|a| a.iter().filter_map(|v| v.as_document().cloned()).collect())
        .unwrap_or_default()
}

/// A `rolesInfo` entry as an `admin.system.roles` document.
fn role_document(r: &Document) -> Document {
    let role = r.get_str("role").unwrap_or_default();
    let db = r.get_str("db").unwrap_or_default();
    let mut out = doc! {"_id": format!("{db}.{role}"), "role": role, "db": db};
    for key in ["privileges", "roles"] {
        if let Some(v) = r.get(key) {
            out.insert(key, v.clone());
        }
    }
    if let Some(own) = r
        .get("authenticationRestrictions")
        .and_then(own_restrictions)
    {
        out.insert("authenticationRestrictions", own);
    }
    out
}

/// A `usersInfo` entry as an `admin.system.users` document (`mechanisms`
/// is kept: `createUser` needs it for password-less users).
fn user_document(mut u: Document) -> Document {
    let own = u
        .remove("authenticationRestrictions")
        .as_ref()
        .and_then(own_restrictions);
    if let Some(own) = own {
        u.insert("authenticationRestrictions", own);
    }
    for derived in [
        "inheritedRoles",
        "inheritedPrivileges",
        "inheritedAuthenticationRestrictions",
    ] {
        u.remove(derived);
    }
    u
}

/// The principal's own authentication restrictions: the server reports
/// them either as a list of restriction documents or per inheritance
/// level as a list of lists (own ones first). `None` when there are none.
fn own_restrictions(v: &Bson) -> Option<Bson> {
    let Bson::Array(items) = v else { return None };
    let own = if !items.is_empty() && items.iter().all(|l| matches!(l, Bson::Array(_))) {
        items.first().cloned()?
    } else {
        v.clone()
    };
    match &own {
        Bson::Array(a) if a.is_empty() => None,
        _ => Some(own),
    }
}

/// `user@db` names for the manifest.
pub(crate) fn names(docs: &[Document], key: &str) -> Vec<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}@{}",
                d.get_str(key).unwrap_or("?"),
                d.get_str("db").unwrap_or("?")
            )
        })
        .collect()
}

/// Users and roles of a snapshot, mapped to their target databases.
#[derive(Debug, Default, Clone)]
pub(crate) struct Planned {
    pub(crate) users: Vec<Document>,
    pub(crate) roles: Vec<Document>,
}

impl Planned {
    /// Keeps the users and roles whose database `map_db` maps, renamed
    /// into it; references to roles and resources of renamed databases
    /// follow them.
    pub(crate) fn new(
        users: &[Document],
        roles: &[Document],
        map_db: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let rename = |db: &str| map_db(db).unwrap_or_else(|| db.to_owned());
        let mut out = Planned::default();
        for u in users {
            let db = u.get_str("db").unwrap_or_default();
            let Some(to) = map_db(db) else { continue };
            let mut u = u.clone();
            let name = u.get_str("user").unwrap_or_default().to_owned();
            if to != db {
                // A renamed user is a new principal.
                u.remove("userId");
            }
            u.insert("_id", format!("{to}.{name}"));
            u.insert("db", to);
            map_role_refs(&mut u, "roles", &rename);
            out.users.push(u);
        }
        for r in roles {
            let db = r.get_str("db").unwrap_or_default();
            let Some(to) = map_db(db) else { continue };
            let mut r = r.clone();
            let name = r.get_str("role").unwrap_or_default().to_owned();
            r.insert("_id", format!("{to}.{name}"));
            r.insert("db", to);
            map_role_refs(&mut r, "roles", &rename);
            if let Ok(privs) = r.get_array_mut("privileges") {
                for p in privs {
                    if let Some(res) = p
                        .as_document_mut()
                        .and_then(|p| p.get_document_mut("resource").ok())
                    {
                        if let Ok(db) = res.get_str("db") {
                            if !db.is_empty() {
                                let to = rename(db);
                                res.insert("db", to);
                            }
                        }
                    }
                }
            }
            out.roles.push(r);
        }
        out
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.users.is_empty() && self.roles.is_empty()
    }
}

fn map_role_refs(d: &mut Document, key: &str, rename: &dyn Fn(&str) -> String) {
    if let Ok(refs) = d.get_array_mut(key) {
        for r in refs {
            if let Some(r) = r.as_document_mut() {
                if let Ok(db) = r.get_str("db") {
                    let to = rename(db);
                    r.insert("db", to);
                }
            }
        }
    }
}

fn key_of(d: &Document, name_key: &str) -> (String, String) {
    (
        d.get_str("db").unwrap_or_default().to_owned(),
        d.get_str(name_key).unwrap_or_default().to_owned(),
    )
}

/// What restoring users and roles did.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) roles_created: Vec<String>,
    pub(crate) users_created: Vec<String>,
    /// Already on the target, left as they are.
    pub(crate) kept: Vec<String>,
    /// Could not be created (each with the reason).
    pub(crate) failures: Vec<String>,
}

/// The users and roles of `plan` the target already has (`name@db`).
pub(crate) async fn existing(conn: &Conn, plan: &Planned) -> Result<HashSet<String>> {
    let dbs: BTreeSet<&str> = plan
        .users
        .iter()
        .chain(&plan.roles)
        .filter_map(|d| d.get_str("db").ok())
        .collect();
    let mut out = HashSet::new();
    for db in dbs {
        let r = conn
            .command(
                db,
                doc! {"usersInfo": 1},
                &format!("listing the users of {db}"),
            )
            .await?;
        for u in array(&r, "users") {
            let (d, n) = key_of(&u, "user");
            out.insert(format!("user {n}@{d}"));
        }
        let r = conn
            .command(
                db,
                doc! {"rolesInfo": 1, "showBuiltinRoles": false},
                &format!("listing the roles of {db}"),
            )
            .await?;
        for r in array(&r, "roles") {
            let (d, n) = key_of(&r, "role");
            out.insert(format!("role {n}@{d}"));
        }
    }
    Ok(out)
}

/// The order to create `roles` in: every role after the roles of the set
/// it inherits.
fn role_order(roles: &[Document]) -> Vec<usize> {
    let keys: Vec<(String, String)> = roles.iter().map(|r| key_of(r, "role")).collect();
    let deps: Vec<Vec<usize>> = roles
        .iter()
        .map(|r| {
            r.get_array("roles")
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_document())
                        .filter_map(|d| keys.iter().position(|k| *k == key_of(d, "role")))
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let mut done = vec![false; roles.len()];
    let mut order = Vec::new();
    while order.len() < roles.len() {
        let before = order.len();
        for i in 0..roles.len() {
            if !done[i] && deps[i].iter().all(|&d| done[d] || d == i) {
                done[i] = true;
                order.push(i);
            }
        }
        if order.len() == before {
            // A cycle (which servers refuse anyway): create the rest as
            // they come and let the server report it.
            order.extend((0..roles.len()).filter(|&i| !done[i]));
            break;
        }
    }
    order
}

fn has_password(user: &Document) -> bool {
    user.get_document("credentials")
        .is_ok_and(|c| c.keys().any(|k| k.starts_with("SCRAM-")))
}

/// Creates the users and roles of `plan` the target lacks (`existing`,
/// as [`existing`] lists them).
///
/// Failures of single users or roles are collected in
/// [`Outcome::failures`]; only connection-level errors are returned.
pub(crate) async fn restore(
    conn: &Conn,
    plan: &Planned,
    existing: &HashSet<String>,
) -> Result<Outcome> {
    let mut out = Outcome::default();
    for i in role_order(&plan.roles) {
        let r = &plan.roles[i];
        let (db, name) = key_of(r, "role");
        let label = format!("role {name}@{db}");
        if existing.contains(&label) {
            out.kept.push(label);
            continue;
        }
        let mut cmd = doc! {
            "createRole": name.clone(),
            "privileges": r.get_array("privileges").cloned().unwrap_or_default(),
            "roles": r.get_array("roles").cloned().unwrap_or_default(),
        };
        if let Some(a) = r.get("authenticationRestrictions") {
            cmd.insert("authenticationRestrictions", a.clone());
        }
        match conn.client.database(&db).run_command(cmd).await {
            Ok(_) => out.roles_created.push(label),
            Err(e) => out
                .failures
                .push(format!("{label}: {}", conn.error("creating a role", e))),
        }
    }

    let users: Vec<&Document> = plan
        .users
        .iter()
        .filter(|u| {
            let (db, name) = key_of(u, "user");
            let label = format!("user {name}@{db}");
            if existing.contains(&label) {
                out.kept.push(label);
                false
            } else {
                true
            }
        })
        .collect();
    if users.is_empty() {
        return Ok(out);
    }
    match merge_users(conn, &users).await {
        Ok(true) => {
            out.users_created.extend(users.iter().map(|u| {
                let (db, name) = key_of(u, "user");
                format!("user {name}@{db}")
            }));
        }
        Ok(false) => {
            // No _mergeAuthzCollections: createUser, which cannot carry a
            // password hash.
            for u in users {
                let (db, name) = key_of(u, "user");
                let label = format!("user {name}@{db}");
                if has_password(u) {
                    out.failures.push(format!(
                        "{label}: not restored: the target server has no _mergeAuthzCollections command, so the stored password hash cannot be restored (createUser only takes a clear-text password); create the user again with createUser and a new password"
                    ));
                    continue;
                }
                let mut cmd = doc! {
                    "createUser": name.clone(),
                    "roles": u.get_array("roles").cloned().unwrap_or_default(),
                };
                for key in ["customData", "authenticationRestrictions", "mechanisms"] {
                    if let Some(v) = u.get(key) {
                        cmd.insert(key, v.clone());
                    }
                }
                match conn.client.database(&db).run_command(cmd).await {
                    Ok(_) => out.users_created.push(label),
                    Err(e) => out
                        .failures
                        .push(format!("{label}: {}", conn.error("creating a user", e))),
                }
            }
        }
        Err(e) => out.failures.push(format!("users: {e}")),
    }
    Ok(out)
}

/// Inserts `users` into a temporary collection of `admin` and merges it
/// into the server's users with `_mergeAuthzCollections` (what
/// `mongorestore` does). `Ok(false)`: the server has no such command.
async fn merge_users(conn: &Conn, users: &[&Document]) -> Result<bool> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temp = format!("tempusers_backup_{}_{nanos}", std::process::id());
    let coll = conn.client.database("admin").collection::<Document>(&temp);
    let docs: Vec<Document> = users
        .iter()
        .map(|u| {
            let mut u = (*u).clone();
            // Derived by the server from the credentials.
            u.remove("mechanisms");
            u
        })
        .collect();
    let result = async {
        coll.insert_many(docs)
            .await
            .map_err(|e| conn.error("staging users in admin", e))?;
        let cmd = doc! {
            "_mergeAuthzCollections": 1,
            "tempUsersCollection": format!("admin.{temp}"),
            "drop": false,
            "db": "",
        };
        match conn.client.database("admin").run_command(cmd).await {
            Ok(_) => Ok(true),
            Err(e) if is_command_not_found(&e) => Ok(false),
            Err(e) => Err(conn.error("merging users (_mergeAuthzCollections)", e)),
        }
    }
    .await;
    let dropped = coll.drop().await;
    let merged = result?;
    dropped.map_err(|e| {
        let again = super::conn::retryable(&e);
        Error::target_explained(
            format!("the users were restored, but the temporary collection admin.{temp} could not be dropped: {e}; drop it by hand"),
            e,
            again,
        )
    })?;
    Ok(merged)
}

fn is_command_not_found(e: &mongodb::error::Error) -> bool {
    matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 59)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_come_after_what_they_inherit() {
        let roles = vec![
            doc! {"role": "a", "db": "s", "roles": [{"role": "b", "db": "s"}, {"role": "read", "db": "s"}]},
            doc! {"role": "b", "db": "s", "roles": [{"role": "c", "db": "s"}]},
            doc! {"role": "c", "db": "s", "roles": []},
        ];
        assert_eq!(role_order(&roles), vec![2, 1, 0]);
    }

    #[test]
    fn renames_follow_the_database() {
        let users = vec![doc! {
            "_id": "shop.alice", "userId": "x", "user": "alice", "db": "shop",
            "credentials": {"SCRAM-SHA-256": {"iterationCount": 15000}},
            "roles": [{"role": "reporter", "db": "shop"}, {"role": "root", "db": "admin"}],
        }];
        let roles = vec![doc! {
            "_id": "shop.reporter", "role": "reporter", "db": "shop",
            "privileges": [{"resource": {"db": "shop", "collection": "orders"}, "actions": ["find"]}],
            "roles": [],
        }];
        let map = |db: &str| (db == "shop").then(|| "shop2".to_owned());
        let p = Planned::new(&users, &roles, &map);
        let u = &p.users[0];
        assert_eq!(u.get_str("_id").unwrap(), "shop2.alice");
        assert_eq!(u.get_str("db").unwrap(), "shop2");
        assert!(u.get("userId").is_none());
        let r0 = u.get_array("roles").unwrap()[0].as_document().unwrap();
        assert_eq!(r0.get_str("db").unwrap(), "shop2");
        let r1 = u.get_array("roles").unwrap()[1].as_document().unwrap();
        assert_eq!(r1.get_str("db").unwrap(), "admin");
        let res = p.roles[0].get_array("privileges").unwrap()[0]
            .as_document()
            .unwrap()
            .get_document("resource")
            .unwrap();
        assert_eq!(res.get_str("db").unwrap(), "shop2");
        assert!(has_password(u));
        let none = Planned::new(&users, &roles, &|_| None);
        assert!(none.is_empty());
    }

    #[test]
    fn user_documents_keep_own_restrictions() {
        let u = user_document(doc! {
            "_id": "s.u", "user": "u", "db": "s", "roles": [],
            "authenticationRestrictions": [{"clientSource": ["10.0.0.0/8"]}],
            "inheritedRoles": [],
        });
        assert_eq!(
            u,
            doc! {"_id": "s.u", "user": "u", "db": "s", "roles": [],
            "authenticationRestrictions": [{"clientSource": ["10.0.0.0/8"]}]}
        );
        let u = user_document(doc! {"user": "u", "db": "s", "authenticationRestrictions": []});
        assert!(u.get("authenticationRestrictions").is_none());
    }

    #[test]
    fn role_documents_drop_derived_fields() {
        let r = role_document(&doc! {
            "role": "r", "db": "s", "isBuiltin": false,
            "privileges": [], "roles": [], "inheritedRoles": [],
            "authenticationRestrictions": [[{"clientSource": ["127.0.0.1"]}], []],
        });
        assert_eq!(
            r,
            doc! {"_id": "s.r", "role": "r", "db": "s", "privileges": [], "roles": [],
            "authenticationRestrictions": [{"clientSource": ["127.0.0.1"]}]}
        );
    }
}
