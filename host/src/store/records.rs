//! Function records behind one interface, whichever engine keeps them:
//! sled inside one process (the embedded default) or etcd, which hosts of
//! a cluster share. Every write names the revision it replaces, so two
//! writers cannot interleave: the second gets [`StoreError::Conflict`] and
//! must read again. Values are opaque bytes; the registry owns them.
//!
//! Revisions are the engine's own where it has them (etcd's mod revision)
//! and a counter kept in the same sled transaction as the record otherwise.

use super::StoreError;
use futures_util::Stream;
use std::pin::Pin;

/// One stored record and the revision that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The function's name.
    pub name: String,
    /// Its document.
    pub bytes: Vec<u8>,
    /// The revision of the write that stored it (grows with every write).
    pub revision: u64,
}

/// What a write expects to find, so it does not overwrite another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No record by that name.
    Absent,
    /// The record as written at this revision.
    Revision(u64),
}

/// A record written or deleted by anyone, seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Written (created or replaced).
    Put(Record),
    /// Deleted, at `revision`.
    Delete {
        /// The function's name.
        name: String,
        /// The revision of the delete.
        revision: u64,
    },
}

/// Changes as a watch delivers them; ends (or errs) when the engine drops
/// it, after which the caller lists again and watches anew.
pub type Changes = Pin<Box<dyn Stream<Item = Result<Change, StoreError>> + Send>>;

/// The engine records live in.
pub enum Records {
    /// sled, in this process's data directory.
    Sled(Sled),
    /// etcd, shared by the hosts of a cluster (its client is large: boxed).
    Etcd(Box<super::etcd::Etcd>),
}

impl Records {
    /// The etcd cluster the records live in, if they are shared.
    pub fn etcd(&self) -> Option<&super::etcd::Etcd> {
        match self {
            Records::Sled(_) => None,
            Records::Etcd(e) => Some(e),
        }
    }

    /// Every record, and the revision they are as of (a watch starts after it).
    pub async fn list(&self) -> Result<(Vec<Record>, u64), StoreError> {
        match self {
            Records::Sled(s) => s.list(),
            Records::Etcd(e) => e.list().await,
        }
    }

    /// Writes `bytes` for `name` if it is as `expect` says; returns the
    /// write's revision. Durable when it returns.
    pub async fn put(&self, name: &str, bytes: &[u8], expect: Expect) -> Result<u64, StoreError> {
        match self {
            Records::Sled(s) => s.put(name, bytes, expect),
            Records::Etcd(e) => e.put(name, bytes, expect).await,
        }
    }

    /// Deletes `name` if it is as `expect` says.
    pub async fn delete(&self, name: &str, expect: Expect) -> Result<(), StoreError> {
        match self {
            Records::Sled(s) => s.delete(name, expect),
            Records::Etcd(e) => e.delete(name, expect).await,
        }
    }

    /// Changes made after `revision` by any writer; `None` when this
    /// process is the only writer (sled), so there is nothing to follow.
    pub async fn watch(&self, revision: u64) -> Result<Option<Changes>, StoreError> {
        match self {
            Records::Sled(_) => Ok(None),
            Records::Etcd(e) => e.watch(revision).await.map(Some),
        }
    }
}

/// Records in sled: each value is the 8-byte big-endian revision that
/// wrote it, then the document. Values from before revisions existed (a
/// bare JSON document) read as revision 0.
pub struct Sled {
    db: sled::Db,
    records: sled::Tree,
    meta: sled::Tree,
}

const LAST_REVISION: &[u8] = b"last-revision";

fn decode(value: &[u8]) -> (u64, &[u8]) {
    match value.split_first_chunk::<8>() {
        Some((rev, rest)) if value.first() != Some(&b'{') => (u64::from_be_bytes(*rev), rest),
        _ => (0, value),
    }
}

/// The last-revision counter as stored (absent: 0).
fn counter(value: Option<sled::IVec>) -> u64 {
    value.and_then(|v| v.as_ref().try_into().ok()).map_or(0, u64::from_be_bytes)
}

fn conflict(name: &str, expect: Expect, found: Option<u64>) -> StoreError {
    StoreError::Conflict { name: name.to_owned(), expected: expect, found }
}

impl Sled {
    /// Opens the record trees of `db`.
    pub fn open(db: sled::Db) -> Result<Self, StoreError> {
        Ok(Sled { records: db.open_tree("functions")?, meta: db.open_tree("meta")?, db })
    }

    fn list(&self) -> Result<(Vec<Record>, u64), StoreError> {
        let records = self
            .records
            .iter()
            .map(|item| {
                let (k, v) = item?;
                let (revision, bytes) = decode(&v);
                Ok(Record { name: String::from_utf8_lossy(&k).into_owned(), bytes: bytes.to_vec(), revision })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((records, self.last()?))
    }

    fn last(&self) -> Result<u64, StoreError> {
        Ok(counter(self.meta.get(LAST_REVISION)?))
    }

    /// Checks `expect` against `name` and writes `value` (or deletes on
    /// `None`) with the next revision, in one transaction; flushed.
    fn write(&self, name: &str, value: Option<&[u8]>, expect: Expect) -> Result<u64, StoreError> {
        use sled::Transactional;
        use sled::transaction::ConflictableTransactionError::Abort;
        let written = (&self.records, &self.meta).transaction(|(records, meta)| {
            let found = records.get(name)?.map(|v| decode(&v).0);
            let matches = match expect {
                Expect::Absent => found.is_none(),
                Expect::Revision(r) => found == Some(r),
            };
            if !matches {
                return Err(Abort(found));
            }
            let last = counter(meta.get(LAST_REVISION)?);
            let revision = last.max(found.unwrap_or(0)) + 1;
            meta.insert(LAST_REVISION, &revision.to_be_bytes())?;
            match value {
                Some(bytes) => {
                    let mut stored = revision.to_be_bytes().to_vec();
                    stored.extend_from_slice(bytes);
                    records.insert(name, stored)?;
                }
                None => {
                    records.remove(name)?;
                }
            }
            Ok(revision)
        });
        let revision = written.map_err(|e| match e {
            sled::transaction::TransactionError::Abort(found) => conflict(name, expect, found),
            sled::transaction::TransactionError::Storage(e) => StoreError::Db(e),
        })?;
        self.db.flush()?;
        Ok(revision)
    }

    fn put(&self, name: &str, bytes: &[u8], expect: Expect) -> Result<u64, StoreError> {
        self.write(name, Some(bytes), expect)
    }

    fn delete(&self, name: &str, expect: Expect) -> Result<(), StoreError> {
        self.write(name, None, expect).map(drop)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The contract every engine keeps; run on sled here and on a real
    /// etcd in tests/cluster.rs.
    pub async fn keeps_the_contract(records: &Records) {
        let r1 = records.put("a", b"one", Expect::Absent).await.unwrap();
        assert!(matches!(records.put("a", b"again", Expect::Absent).await, Err(StoreError::Conflict { .. })));
        let r2 = records.put("a", b"two", Expect::Revision(r1)).await.unwrap();
        assert!(r2 > r1);
        let stale = records.put("a", b"stale", Expect::Revision(r1)).await;
        assert!(matches!(stale, Err(StoreError::Conflict { found: Some(f), .. }) if f == r2), "{stale:?}");
        records.put("b", b"bee", Expect::Absent).await.unwrap();
        let (all, last) = records.list().await.unwrap();
        let names: Vec<(&str, &[u8])> = all.iter().map(|r| (r.name.as_str(), r.bytes.as_slice())).collect();
        assert_eq!(names, vec![("a", &b"two"[..]), ("b", &b"bee"[..])]);
        assert!(last >= r2);
        assert!(records.delete("a", Expect::Revision(r1)).await.is_err(), "a delete checks the revision too");
        records.delete("a", Expect::Revision(r2)).await.unwrap();
        assert_eq!(records.list().await.unwrap().0.len(), 1);
    }

    #[tokio::test]
    async fn sled_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::Sled(Sled::open(sled::open(dir.path()).unwrap()).unwrap());
        keeps_the_contract(&records).await;
        assert!(records.watch(0).await.unwrap().is_none(), "one writer: nothing to follow");
    }

    #[test]
    fn values_from_before_revisions_read_as_revision_zero() {
        assert_eq!(decode(b"{\"name\":\"f\"}"), (0, &b"{\"name\":\"f\"}"[..]));
        let mut v = 7u64.to_be_bytes().to_vec();
        v.extend_from_slice(b"{}");
        assert_eq!(decode(&v), (7, &b"{}"[..]));
    }
}
