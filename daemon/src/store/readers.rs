//! A small pool of read-only connections. Queries run on tokio's blocking pool so they never stall
//! the runtime, and at most `readers` run at once.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::StoreError;

/// Read-only connections to the store.
pub(crate) struct Readers {
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Readers {
    pub(crate) fn open(path: &Path, count: usize) -> Result<Arc<Self>, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let mut conns = Vec::with_capacity(count);
        for _ in 0..count {
            let conn = Connection::open_with_flags(path, flags)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conns.push(conn);
        }
        Ok(Arc::new(Self {
            idle: Mutex::new(conns),
            permits: Semaphore::new(count),
        }))
    }

    pub(crate) async fn read<R, E, F>(self: &Arc<Self>, f: F) -> Result<R, E>
    where
        F: FnOnce(&Connection) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let checkout = Checkout::take(&this)?;
            f(checkout.conn())
        })
        .await
        .map_err(|_| E::from(StoreError::JobPanicked))?
    }
}

/// A connection taken from the pool; it goes back on drop, also when the query panics.
struct Checkout<'a> {
    pool: &'a Readers,
    conn: Option<Connection>,
}

impl<'a> Checkout<'a> {
    fn take(pool: &'a Readers) -> Result<Self, StoreError> {
        // The caller's permit guarantees an idle connection. A poisoned lock only means another
        // reader panicked while pushing or popping, which leaves the Vec intact.
        let conn = pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .ok_or(StoreError::Closed)?;
        Ok(Self {
            pool,
            conn: Some(conn),
        })
    }

    fn conn(&self) -> &Connection {
        // Only `drop` takes the connection out.
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("connection taken before drop"))
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
    }
}
