//! Writing a message's delivery state and removing it, fenced by the claim's generation so
//! that a node whose lease was taken over can change nothing (its outcome is dropped, see
//! [`SpoolError::LeaseLost`]).

use super::*;

impl Inner {
    /// Writes `state`: fenced by `generation` when this node holds a claim, else only if
    /// nobody holds the message. One statement when no request is waiting.
    pub(super) async fn save_state(
        &self,
        id: &QueueId,
        state: &MessageState,
        generation: Option<i64>,
    ) -> Result<(), SpoolError> {
        const FENCED: &str = "UPDATE postrider_messages
               SET state = $3, next_attempt = $4, held = $5
             WHERE id = $1 AND generation = $2 AND recipients = $6 AND admin_request IS NULL";
        const FREE: &str = "UPDATE postrider_messages
               SET state = $2, next_attempt = $3, held = $4, generation = generation + 1
             WHERE id = $1 AND recipients = $5 AND admin_request IS NULL
               AND (lease_until IS NULL OR lease_until <= now())";
        let recipients = state.recipients.len() as i32;
        let written = match generation {
            Some(g) => {
                self.execute(
                    "save state",
                    FENCED,
                    &[
                        &id.as_str(),
                        &g,
                        &Json(state),
                        &state.next_attempt,
                        &state.held,
                        &recipients,
                    ],
                )
                .await?
            }
            None => {
                self.execute(
                    "save state",
                    FREE,
                    &[
                        &id.as_str(),
                        &Json(state),
                        &state.next_attempt,
                        &state.held,
                        &recipients,
                    ],
                )
                .await?
            }
        };
        if written == 1 {
            return Ok(());
        }
        self.timed("save state", self.save_slow(id, state, generation))
            .await
    }

    /// `save_state` when the one-statement write did not apply: says why, or applies a
    /// waiting administrator's request together with the state.
    pub(super) async fn save_slow(
        &self,
        id: &QueueId,
        state: &MessageState,
        generation: Option<i64>,
    ) -> Result<(), SpoolError> {
        let op = "save state";
        let mut client = self.client(op).await?;
        let tx = client.transaction().await.map_err(db(op))?;
        let row = tx
            .query_opt(
                "SELECT generation, recipients, admin_request, admin_at,
                        coalesce(lease_until > now(), false)
                   FROM postrider_messages WHERE id = $1 FOR UPDATE",
                &[&id.as_str()],
            )
            .await
            .map_err(db(op))?
            .ok_or(SpoolError::NotFound(*id))?;
        let (stored_gen, recipients): (i64, i32) = (row.get(0), row.get(1));
        let waiting = Request::from_column(row.get(2));
        let at: Option<SystemTime> = row.get(3);
        let leased: bool = row.get(4);
        if recipients as usize != state.recipients.len() {
            return Err(SpoolError::InvalidState {
                id: *id,
                reason: format!(
                    "it has {} recipient states for {recipients} envelope recipients",
                    state.recipients.len()
                ),
            });
        }
        let new_gen = match generation {
            Some(g) if g != stored_gen => return Err(SpoolError::LeaseLost { id: *id }),
            Some(g) => g,
            None if leased => return Err(SpoolError::Busy(*id)),
            None => stored_gen + 1,
        };
        match request::effective(state.clone(), waiting, at) {
            None => {
                tx.execute(
                    "DELETE FROM postrider_messages WHERE id = $1",
                    &[&id.as_str()],
                )
                .await
                .map_err(db(op))?;
                tracing::info!(target: "postrider::spool", "{id}: deleted by the administrator");
            }
            Some(state) => {
                tx.execute(
                    "UPDATE postrider_messages
                        SET state = $2, next_attempt = $3, held = $4, generation = $5,
                            admin_request = NULL, admin_at = NULL
                      WHERE id = $1",
                    &[
                        &id.as_str(),
                        &Json(&state),
                        &state.next_attempt,
                        &state.held,
                        &new_gen,
                    ],
                )
                .await
                .map_err(db(op))?;
            }
        }
        tx.commit().await.map_err(db(op))
    }

    pub(super) async fn remove(
        &self,
        id: &QueueId,
        generation: Option<i64>,
    ) -> Result<(), SpoolError> {
        const FENCED: &str = "DELETE FROM postrider_messages WHERE id = $1 AND generation = $2";
        const FREE: &str = "DELETE FROM postrider_messages
             WHERE id = $1 AND (lease_until IS NULL OR lease_until <= now())";
        let removed = match generation {
            Some(g) => self.execute("remove", FENCED, &[&id.as_str(), &g]).await?,
            None => self.execute("remove", FREE, &[&id.as_str()]).await?,
        };
        if removed == 1 {
            return Ok(());
        }
        let rows = self
            .query(
                "remove",
                "SELECT generation FROM postrider_messages WHERE id = $1",
                &[&id.as_str()],
            )
            .await?;
        match (rows.first(), generation) {
            (None, _) => Err(SpoolError::NotFound(*id)),
            (Some(_), Some(_)) => Err(SpoolError::LeaseLost { id: *id }),
            (Some(_), None) => Err(SpoolError::Busy(*id)),
        }
    }
}
