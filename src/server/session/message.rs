//! The message itself: DATA and BDAT read under their deadlines, the trace field, and the
//! submit whose success alone earns the `250`.

use super::*;

impl Session<'_> {
    pub(super) fn ready_for_data(&mut self) -> bool {
        match &self.transaction {
            None => self.error("503 5.5.1 Need MAIL command"),
            Some(t) if t.recipients.is_empty() && t.discarded == 0 => {
                self.error("554 5.5.1 No valid recipients")
            }
            Some(_) => return true,
        }
        false
    }

    pub(super) fn trace(&self, recipients: &[Recipient]) -> String {
        let (helo, extended) = self
            .helo
            .as_ref()
            .map_or((None, false), |(h, e)| (Some(h.as_str()), *e));
        received_field(&Trace {
            helo,
            extended,
            ip: self.ip,
            name: &self.name,
            tls: self.tls.as_ref(),
            authenticated: self.user.is_some(),
            show_user: self.user.as_deref().filter(|_| self.shared.show_auth_user),
            by: &self.shared.hostname,
            for_recipient: match recipients {
                [one] => Some(&one.address),
                _ => None,
            },
            at: SystemTime::now(),
        })
    }

    /// DATA: the message under one deadline for the whole phase, then the submission.
    pub(super) async fn data(&mut self, io: &mut Io) -> Result<(), Ended> {
        if !self.ready_for_data() {
            return Ok(());
        }
        if self
            .transaction
            .as_ref()
            .is_some_and(|t| t.chunks.is_some())
        {
            self.error("503 5.5.1 DATA not allowed after BDAT");
            return Ok(());
        }
        let Some(t) = self.transaction.take() else {
            return Ok(());
        };
        self.reply("354 End data with <CR><LF>.<CR><LF>");
        self.flush(io).await?;
        let received = self.trace(&t.recipients);
        let limit = self.shared.limits.max_message_size;
        let mut reader = DataReader::new(limit, received.as_bytes());
        let start = Instant::now();
        let mut deadline = DataDeadline::new(&self.shared.timeouts);
        let mut shutdown = self.shutdown.clone();
        loop {
            let left = (start + deadline.allowance()).saturating_duration_since(Instant::now());
            let chunk = tokio::select! {
                r = tokio::time::timeout(left, io.fill_buf()) => match r {
                    Err(_) => return Err(Ended::TimedOut),
                    Ok(Err(_)) | Ok(Ok([])) => return Err(Ended::Gone),
                    Ok(Ok(chunk)) => chunk,
                },
                _ = shutdown.wait_for(|stop| *stop) => return Err(Ended::Shutdown),
            };
            let (used, done) = reader.feed(chunk);
            io.consume(used);
            deadline.received(used);
            if done {
                break;
            }
        }
        let (body, too_big) = reader.finish();
        self.finish_message(t, body, received.len(), too_big).await
    }

    /// BDAT: one chunk, read whether or not it can be used (its octets are on the wire).
    pub(super) async fn bdat(&mut self, size: u64, last: bool, io: &mut Io) -> Result<(), Ended> {
        let usable =
            matches!(&self.transaction, Some(t) if !t.recipients.is_empty() || t.discarded > 0);
        if !usable {
            let mut sink = ChunkReader::new(0, b"");
            self.read_chunk(&mut sink, size, io).await?;
            if self.transaction.is_none() {
                self.error("503 5.5.1 Need MAIL command");
            } else {
                self.error("554 5.5.1 No valid recipients");
            }
            return Ok(());
        }
        if let Some(t) = &self.transaction
            && t.chunks.is_none()
        {
            let received = self.trace(&t.recipients);
            let limit = self.shared.limits.max_message_size;
            if let Some(t) = &mut self.transaction {
                t.prefix = received.len();
                t.chunks = Some(ChunkReader::new(limit, received.as_bytes()));
            }
        }
        let Some(mut chunks) = self.transaction.as_mut().and_then(|t| t.chunks.take()) else {
            return Ok(());
        };
        self.read_chunk(&mut chunks, size, io).await?;
        if !last {
            if let Some(t) = &mut self.transaction {
                t.chunks = Some(chunks);
            }
            self.reply(&format!("250 2.0.0 {size} octets received"));
            return Ok(());
        }
        let Some(t) = self.transaction.take() else {
            return Ok(());
        };
        let prefix = t.prefix;
        let too_big = chunks.too_big();
        let (body, _) = chunks.finish();
        self.finish_message(t, body, prefix, too_big).await
    }

    pub(super) async fn read_chunk(
        &mut self,
        chunks: &mut ChunkReader,
        size: u64,
        io: &mut Io,
    ) -> Result<(), Ended> {
        chunks.start_chunk(size);
        let start = Instant::now();
        let mut deadline = DataDeadline::new(&self.shared.timeouts);
        let mut shutdown = self.shutdown.clone();
        while !chunks.chunk_done() {
            let left = (start + deadline.allowance()).saturating_duration_since(Instant::now());
            let buf = tokio::select! {
                r = tokio::time::timeout(left, io.fill_buf()) => match r {
                    Err(_) => return Err(Ended::TimedOut),
                    Ok(Err(_)) | Ok(Ok([])) => return Err(Ended::Gone),
                    Ok(Ok(buf)) => buf,
                },
                _ = shutdown.wait_for(|stop| *stop) => return Err(Ended::Shutdown),
            };
            let used = chunks.feed(buf);
            io.consume(used);
            deadline.received(used);
        }
        Ok(())
    }

    /// Checks the message read and submits it; the reply is sent only after the engine holds
    /// it.
    pub(super) async fn finish_message(
        &mut self,
        t: Transaction,
        body: bytes::Bytes,
        prefix: usize,
        too_big: bool,
    ) -> Result<(), Ended> {
        let limit = self.shared.limits.max_message_size;
        if too_big {
            self.reply(&format!(
                "552 5.3.4 Message size exceeds the limit of {limit} octets"
            ));
            return Ok(());
        }
        if received_count(body.get(prefix..).unwrap_or_default()) >= self.shared.limits.max_hops {
            self.reply("554 5.4.6 Too many hops (mail loop?)");
            return Ok(());
        }
        if t.discard || t.recipients.is_empty() {
            tracing::info!(target: "postrider::server", "client {}: message from {} discarded by the access table", self.client(), t.sender);
            self.reply("250 2.0.0 OK discarded");
            return Ok(());
        }
        let (size, nrcpt, from) = (body.len(), t.recipients.len(), t.sender.clone());
        let mut envelope = Envelope::new(t.sender, t.recipients);
        envelope.ret = t.params.ret;
        envelope.envid = t.params.envid;
        envelope.smtputf8 = t.params.smtputf8;
        envelope.requiretls = t.params.requiretls;
        match self.shared.engine.submit(envelope, body).await {
            Ok(id) => {
                tracing::info!(
                    target: "postrider::server",
                    "{id}: client={}, from={from}, size={size}, nrcpt={nrcpt}{}{}",
                    self.client(),
                    self.user.as_deref().map(|u| format!(", sasl_username={}", log_safe(u))).unwrap_or_default(),
                    self.tls.as_ref().map(|t| format!(", tls={}", t.version)).unwrap_or_default(),
                );
                self.reply(&format!("250 2.0.0 OK queued as {id}"));
                self.queued.push(id);
                Ok(())
            }
            Err(e) => {
                // `e` says "message not queued: ..." or "message refused: ..." itself.
                tracing::warn!(target: "postrider::server", "client {}, from={from}: {e}", self.client());
                let (reply, close) = submit_refusal(&e);
                self.reply(reply);
                if close { Err(Ended::Closed) } else { Ok(()) }
            }
        }
    }
}
