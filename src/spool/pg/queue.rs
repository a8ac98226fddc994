//! Reading the queue across nodes: the start-up scan, due work in batches (`claim_due`,
//! `next_due`), the paged listing and administrators' actions, each one statement or one
//! short transaction.

use super::*;

impl Inner {
    pub(super) async fn scan(&self) -> Result<ScanReport, SpoolError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM postrider_messages m JOIN postrider_contents c \
             USING (id) ORDER BY m.id"
        );
        let rows = self.query("scan", &sql, &[]).await?;
        let mut report = ScanReport::default();
        for row in &rows {
            match message_of(row, 0) {
                Ok(Some(m)) => report.messages.push(m),
                Ok(None) => {}
                Err(e) => {
                    let id: &str = row.get(0);
                    self.set_aside(id, &e).await;
                    report.quarantined.push(Quarantined {
                        path: row_path(id),
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(report)
    }

    /// Keeps an unreadable row out of every batch of due work (an administrator inspects it);
    /// a failure to do so only warns, the next reader tries again.
    pub(super) async fn set_aside(&self, id: &str, why: &SpoolError) {
        tracing::error!(target: "postrider::spool",
            "unreadable queue row {id} set aside (held): {why} (inspect it, then delete or repair it)");
        if let Err(e) = self
            .execute(
                "set aside a row",
                "UPDATE postrider_messages SET held = true, lease_owner = NULL, lease_until = NULL
                  WHERE id = $1",
                &[&id],
            )
            .await
        {
            tracing::warn!(target: "postrider::spool", "{id}: could not set the row aside: {e}");
        }
    }

    pub(super) async fn claim_due(
        self: &Arc<Self>,
        due_by: SystemTime,
        limit: usize,
    ) -> Result<Vec<ClaimedMessage>, SpoolError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "WITH due AS (
                SELECT id FROM postrider_messages
                 WHERE NOT held AND next_attempt <= $1
                   AND (lease_until IS NULL OR lease_until <= now())
                 ORDER BY next_attempt LIMIT $2
                   FOR UPDATE SKIP LOCKED),
             m AS (
                UPDATE postrider_messages t
                   SET generation = t.generation + 1, lease_owner = $3,
                       lease_until = now() + make_interval(secs => $4)
                  FROM due WHERE t.id = due.id
                RETURNING t.*)
             SELECT m.generation, {MESSAGE_COLUMNS}
               FROM m JOIN postrider_contents c USING (id)
              ORDER BY m.next_attempt, m.id"
        );
        let limit_param = limit.min(i64::MAX as usize) as i64;
        let rows = self
            .query(
                "claim due messages",
                &sql,
                &[&due_by, &limit_param, &self.node, &self.lease_secs()],
            )
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let generation: i64 = row.get(0);
            let id_text: &str = row.get(1);
            let id = match parse_id(id_text) {
                Ok(id) => id,
                Err(e) => {
                    self.set_aside(id_text, &e).await;
                    continue;
                }
            };
            let claim = self.claim_of(id, generation);
            let waiting = Request::from_column(row.get(4)).is_some();
            match message_of(row, 1) {
                Ok(Some(message)) if !waiting => claimed.push(ClaimedMessage { message, claim }),
                Ok(Some(message)) => {
                    // Its holder died with an administrator's request waiting: apply it.
                    self.save_state(&id, &message.state, Some(generation))
                        .await?;
                    if !message.state.held {
                        claimed.push(ClaimedMessage { message, claim });
                    }
                }
                Ok(None) => match self.remove(&id, Some(generation)).await {
                    Ok(()) | Err(SpoolError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                },
                Err(e) => {
                    drop(claim);
                    self.set_aside(id_text, &e).await;
                }
            }
        }
        Ok(claimed)
    }

    pub(super) async fn next_due(&self) -> Result<Option<SystemTime>, SpoolError> {
        const SQL: &str = "SELECT least(
                (SELECT next_attempt FROM postrider_messages
                  WHERE NOT held AND (lease_until IS NULL OR lease_until <= now())
                  ORDER BY next_attempt LIMIT 1),
                (SELECT min(greatest(lease_until, next_attempt)) FROM postrider_messages
                  WHERE NOT held AND lease_until > now()))";
        let row = self
            .query_one("find the next due message", SQL, &[])
            .await?;
        Ok(row.get(0))
    }

    pub(super) async fn list(
        &self,
        after: Option<QueueId>,
        limit: usize,
    ) -> Result<QueuePage, SpoolError> {
        if limit == 0 {
            return Ok(QueuePage::default());
        }
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS}, m.lease_owner, m.lease_until
               FROM postrider_messages m JOIN postrider_contents c USING (id)
              WHERE ($1::text IS NULL OR m.id > $1)
              ORDER BY m.id LIMIT $2"
        );
        let after_text = after.map(|a| a.as_str().to_string());
        let fetch = (limit.min(i64::MAX as usize - 1) + 1) as i64;
        let rows = self
            .query("list the queue", &sql, &[&after_text, &fetch])
            .await?;
        let now = self.server_now().await?;
        let mut page = QueuePage::default();
        for row in rows.iter().take(limit) {
            let Some(message) = message_of(row, 0)? else {
                continue;
            };
            let owner: Option<String> = row.get(5);
            let until: Option<SystemTime> = row.get(6);
            let lease = match (owner, until) {
                (Some(holder), Some(until)) if until > now => Some(Lease { holder, until }),
                _ => None,
            };
            page.messages.push(ListedMessage { message, lease });
        }
        if rows.len() > limit {
            page.next = rows
                .get(limit - 1)
                .map(|r| parse_id(r.get(0)))
                .transpose()?;
        }
        Ok(page)
    }

    /// The database server's clock.
    pub(super) async fn server_now(&self) -> Result<SystemTime, SpoolError> {
        Ok(self
            .query_one("read the server's clock", "SELECT now()", &[])
            .await?
            .get(0))
    }

    pub(super) async fn admin(
        &self,
        id: &QueueId,
        action: AdminAction,
        at: SystemTime,
    ) -> Result<AdminOutcome, SpoolError> {
        self.timed("admin", self.admin_tx(id, action, at)).await
    }

    pub(super) async fn admin_tx(
        &self,
        id: &QueueId,
        action: AdminAction,
        at: SystemTime,
    ) -> Result<AdminOutcome, SpoolError> {
        let op = "admin";
        let mut client = self.client(op).await?;
        let tx = client.transaction().await.map_err(db(op))?;
        let row = tx
            .query_opt(
                "SELECT state::text, admin_request, admin_at, coalesce(lease_until > now(), false)
                   FROM postrider_messages WHERE id = $1 FOR UPDATE",
                &[&id.as_str()],
            )
            .await
            .map_err(db(op))?
            .ok_or(SpoolError::NotFound(*id))?;
        let waiting = Request::from_column(row.get(1));
        let waiting_at: Option<SystemTime> = row.get(2);
        let leased: bool = row.get(3);
        if leased {
            let Some(request) = Request::merge(waiting, action) else {
                return Ok(AdminOutcome::Busy);
            };
            tx.execute(
                "UPDATE postrider_messages SET admin_request = $2, admin_at = $3 WHERE id = $1",
                &[&id.as_str(), &request.as_str(), &at],
            )
            .await
            .map_err(db(op))?;
            tx.commit().await.map_err(db(op))?;
            return Ok(AdminOutcome::Deferred);
        }
        let stored = parse_state(id.as_str(), row.get(0))?;
        let state = request::effective(stored, waiting, waiting_at)
            .filter(|_| action != AdminAction::Delete)
            .map(|mut s| {
                action.apply(&mut s, at);
                s
            });
        match state {
            None => {
                tx.execute(
                    "DELETE FROM postrider_messages WHERE id = $1",
                    &[&id.as_str()],
                )
                .await
                .map_err(db(op))?;
            }
            Some(state) => {
                // Raising the generation fences out a holder whose lease ran out unnoticed.
                tx.execute(
                    "UPDATE postrider_messages
                        SET state = $2, next_attempt = $3, held = $4, generation = generation + 1,
                            admin_request = NULL, admin_at = NULL
                      WHERE id = $1",
                    &[
                        &id.as_str(),
                        &Json(&state),
                        &state.next_attempt,
                        &state.held,
                    ],
                )
                .await
                .map_err(db(op))?;
                tx.commit().await.map_err(db(op))?;
                if !state.held {
                    self.notify(state.next_attempt);
                }
                return Ok(AdminOutcome::Done);
            }
        }
        tx.commit().await.map_err(db(op))?;
        Ok(AdminOutcome::Done)
    }
}
