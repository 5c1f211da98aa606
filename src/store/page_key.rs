//! The key of each job's page (`/jobs/<id>?key=...`): an HMAC of the job's id under a secret
//! of this store's own, made from the system's random source at its first use and kept in the
//! database. Job ids are sequential; the key is not to be guessed, so only a link that a
//! status or a message carried opens a page.

use hmac::{Hmac, Mac};
use rusqlite::OptionalExtension;
use sha2::Sha256;

use super::{Store, StoreError};

/// Hex characters of a key (128 bits).
const KEY_LEN: usize = 32;

impl Store {
    /// The key that opens job `id`'s page.
    pub fn page_key(&self, id: i64) -> Result<String, StoreError> {
        let secret = self.page_secret()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
        mac.update(format!("job page {id}").as_bytes());
        let mut key = hex::encode(mac.finalize().into_bytes());
        key.truncate(KEY_LEN);
        Ok(key)
    }

    /// Whether `key` opens job `id`'s page (compared in constant time).
    pub fn page_key_fits(&self, id: i64, key: &str) -> Result<bool, StoreError> {
        use subtle::ConstantTimeEq;
        let want = self.page_key(id)?;
        Ok(key.len() == want.len() && bool::from(key.as_bytes().ct_eq(want.as_bytes())))
    }

    fn page_secret(&self) -> Result<String, StoreError> {
        let conn = self.conn();
        let read = |conn: &rusqlite::Connection| -> Result<Option<String>, StoreError> {
            Ok(conn
                .prepare_cached("SELECT value FROM meta WHERE key = 'page_secret'")?
                .query_row([], |r| r.get(0))
                .optional()?)
        };
        if let Some(secret) = read(&conn)? {
            return Ok(secret);
        }
        let secret =
            random_hex(32).map_err(|e| StoreError::Failed(format!("the system's random source: {e}")))?;
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('page_secret', ?1)", [&secret])?;
        read(&conn)?.ok_or_else(|| StoreError::Failed("the page secret was not kept".into()))
    }
}

/// `bytes` bytes of the system's random source, in hex.
fn random_hex(bytes: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_job_has_its_own_key_and_each_store_its_own_secret() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (sa, sb) = (Store::open(a.path()).unwrap(), Store::open(b.path()).unwrap());
        let k1 = sa.page_key(1).unwrap();
        assert_eq!(k1.len(), KEY_LEN);
        assert_eq!(k1, sa.page_key(1).unwrap(), "stable");
        assert_ne!(k1, sa.page_key(2).unwrap());
        assert_ne!(k1, sb.page_key(1).unwrap(), "another store, another secret");
        assert!(sa.page_key_fits(1, &k1).unwrap());
        assert!(!sa.page_key_fits(2, &k1).unwrap());
        assert!(!sa.page_key_fits(1, "").unwrap());
        drop(sa);
        assert_eq!(Store::open(a.path()).unwrap().page_key(1).unwrap(), k1, "kept across opens");
    }
}
