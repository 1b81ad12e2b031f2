//! The checks of users, tokens and the paged run list.

use super::{owner, register};
use crate::model::RunStatus;
use crate::store::Store;

/// Pages of runs follow the list's order, filters and cursor.
pub(super) fn runs_page_by_filter_and_cursor(store: &dyn Store) {
    let a = owner("engine-a");
    for i in 0..5 {
        register(store, &format!("run-2026010{i}-x"), &a);
    }
    let all = store.runs().expect("runs");
    let first = store
        .runs_page(&crate::store::RunFilter::newest(2))
        .expect("page");
    assert_eq!(first, all[..2].to_vec());
    let mut next = crate::store::RunFilter::newest(2);
    next.before = Some(first[1].id.clone());
    let second = store.runs_page(&next).expect("page 2");
    assert_eq!(second, all[2..4].to_vec());
    let mut f = crate::store::RunFilter::newest(10);
    f.status = Some(RunStatus::Succeeded);
    assert!(store.runs_page(&f).expect("by status").is_empty());
    f.status = Some(RunStatus::Running);
    assert_eq!(store.runs_page(&f).expect("by status").len(), 5);
    f.workflow = Some("nope".into());
    assert!(store.runs_page(&f).expect("by workflow").is_empty());
    // A range of creation times: at or after the first, before the second.
    let at: Vec<u64> = all
        .iter()
        .map(|r| crate::time::parse_millis(&r.created_at).expect("a stored time"))
        .collect();
    let (newest, oldest) = (at[0], at[at.len() - 1]);
    let range = |after: Option<u64>, before: Option<u64>| {
        let mut f = crate::store::RunFilter::newest(10);
        f.created_after = after;
        f.created_before = before;
        let got = store.runs_page(&f).expect("by time");
        let want: Vec<_> = all
            .iter()
            .zip(&at)
            .filter(|(_, t)| after.is_none_or(|a| **t >= a) && before.is_none_or(|b| **t < b))
            .map(|(r, _)| r.clone())
            .collect();
        assert_eq!(got, want, "after {after:?}, before {before:?}");
        got.len()
    };
    assert!(range(Some(newest), None) >= 1, "inclusive");
    assert_eq!(range(Some(oldest), Some(newest + 1)), 5);
    assert_eq!(range(Some(newest + 1), None), 0);
    assert_eq!(range(None, Some(oldest)), 0, "exclusive");
    range(None, Some(newest));
    assert_eq!(
        range(Some(0), Some(u64::MAX)),
        5,
        "clamped to the year 9999"
    );
    let mut f = crate::store::RunFilter::newest(10);
    f.created_after = Some(oldest);
    f.workflow = Some(all[0].workflow.clone());
    f.status = Some(RunStatus::Running);
    assert_eq!(store.runs_page(&f).expect("all three").len(), 5);
    assert_eq!(
        store.run_counts().expect("counts"),
        vec![("running".to_string(), 5)]
    );
}

/// Users are unique by name; tokens are found by id, listed, revoked,
/// and revoked with their user.
pub(super) fn users_and_tokens_are_kept(store: &dyn Store) {
    use crate::access::{Permission, Role};
    use crate::store::{TokenRecord, UserRecord};
    let ada = UserRecord::new("ada", Role::Admin, "$argon2id$x", 1);
    assert!(store.add_user(&ada).expect("add"));
    assert!(!store
        .add_user(&UserRecord::new("ada", Role::Viewer, "h", 2))
        .expect("again"));
    assert_eq!(store.user("ada").expect("user"), Some(ada.clone()));
    assert!(store
        .add_user(&UserRecord::new("bob", Role::Viewer, "h", 3))
        .expect("bob"));
    assert_eq!(store.users().expect("users").len(), 2);
    assert!(store
        .update_user("bob", Some(Role::Operator), None)
        .expect("update"));
    assert_eq!(
        store.user("bob").expect("bob").map(|u| u.role),
        Some(Role::Operator)
    );
    assert!(!store
        .update_user("carol", Some(Role::Admin), None)
        .expect("nobody"));

    let mut t = TokenRecord::new("AAAAAAAAAAAA", "bob", "ci", "ab12", 10);
    t.scopes = vec![Permission::Read, Permission::Operate];
    t.expires_ms = Some(99);
    store.add_token(&t).expect("token");
    assert!(store.add_token(&t).is_err(), "a token id is unique");
    assert_eq!(store.token("AAAAAAAAAAAA").expect("read"), Some(t.clone()));
    let mut r = TokenRecord::new("BBBBBBBBBBBB", "ada", "runner", "cd34", 11);
    r.runner = true;
    store.add_token(&r).expect("runner token");
    assert_eq!(store.tokens(None).expect("all").len(), 2);
    assert_eq!(store.tokens(Some("ada")).expect("ada's"), vec![r]);
    assert!(store.revoke_token("BBBBBBBBBBBB").expect("revoke"));
    assert!(!store.revoke_token("BBBBBBBBBBBB").expect("twice"));
    assert!(store
        .token("BBBBBBBBBBBB")
        .expect("read")
        .unwrap()
        .revoked_ms
        .is_some());
    assert!(store.remove_user("bob").expect("remove"));
    assert!(store.user("bob").expect("gone").is_none());
    assert!(store
        .token("AAAAAAAAAAAA")
        .expect("read")
        .unwrap()
        .revoked_ms
        .is_some());
}
