//! The shared spool behaviour suite (`tests/support/spool_suite.rs`) against every spool:
//! `MemorySpool`, `FsSpool` (two handles on one directory) and `PgSpool` (two nodes on one
//! database of a private PostgreSQL cluster).

mod support;

use std::sync::Arc;

use postrider::spool::Spool;
use support::spool_suite::Pair;

mod memory {
    use super::*;
    use postrider::spool::MemorySpool;

    async fn pair() -> Pair {
        let s = MemorySpool::new();
        Pair {
            a: Arc::new(s.clone()) as Arc<dyn Spool>,
            b: Arc::new(s),
            keep: Box::new(()),
        }
    }

    spool_suite!(pair());
}

mod fs {
    use super::*;
    use postrider::spool::FsSpool;

    async fn pair() -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        Pair {
            a: Arc::new(FsSpool::open(&path).unwrap()),
            b: Arc::new(FsSpool::open(&path).unwrap()),
            keep: Box::new(dir),
        }
    }

    spool_suite!(pair());
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use postrider::spool::pg::{PgSpool, PgSpoolConfig};

    async fn pair() -> Pair {
        let url = support::postgres::shared().database();
        let config = |node: &str| PgSpoolConfig::new(&url).unwrap().with_node(node);
        Pair {
            a: Arc::new(PgSpool::connect(&config("a")).await.unwrap()),
            b: Arc::new(PgSpool::connect(&config("b")).await.unwrap()),
            keep: Box::new(()),
        }
    }

    spool_suite!(pair());
}
