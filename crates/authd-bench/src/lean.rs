//! A lean gRPC client for the hot scenarios (health, ValidateToken). The
//! load generator shares the machine's cores with the server, so what it
//! spends per call is taken from the server. Tried first: tonic's client
//! over the `h2` crate, a task per call, which cost about 21 µs of client
//! CPU per call against the server's 22 µs (`perf sched`, 3 s of 92,000
//! calls), and held validate-hot to 0.71–0.73 of health where h2load, a C
//! client that checks nothing, saw 0.97. This client costs 4.3 µs a call
//! against h2load's 4.4 µs on the same server (CPU from `/proc`, 574,000
//! and 456,587 calls), and checks every answer; no maintained Rust crate
//! offers HTTP/2 without a task and a header map per call.
//!
//! So each HTTP/2 connection here is one task that sends its calls, reads
//! the answers and checks them, with no task, lock or wake-up per call: a
//! batch of answers read at once is followed by the batch of calls it
//! frees, written at once. Requests are framed by hand, their headers all
//! indexes into the server's HPACK table after the first; answers are read
//! as far as the check needs (the HTTP and gRPC status, the message).
//! Flow control, SETTINGS, PING and GOAWAY are honoured.

use std::{
    collections::VecDeque,
    future::Future,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    task::JoinSet,
    time::MissedTickBehavior,
};

use crate::{
    drive::{Measured, Outcome, load_window},
    hpack,
};

/// What one scenario sends and how its answers are checked.
pub(crate) trait Calls: Send + Sync + 'static {
    /// The gRPC method's path.
    fn path(&self) -> &'static str;
    /// Call `iteration` of `worker`: its request, gRPC-framed (see
    /// [`framed`]), and a ticket for [`Calls::check`]; `None` once there is
    /// nothing left to send.
    fn request(&self, worker: usize, iteration: u64) -> Option<(Bytes, usize)>;
    /// Checks the answer's protobuf message; `Err` is a wrong answer.
    fn check(&self, ticket: usize, message: &[u8]) -> Result<Outcome, String>;
}

/// `message` as a gRPC length-prefixed message, uncompressed.
pub(crate) fn framed(message: &[u8]) -> anyhow::Result<Bytes> {
    let length = u32::try_from(message.len()).context("a message over 4 GiB")?;
    let mut body = Vec::with_capacity(5 + message.len());
    body.push(0);
    body.extend_from_slice(&length.to_be_bytes());
    body.extend_from_slice(message);
    Ok(body.into())
}

/// How long after its load ended a connection waits for its last answers.
const GRACE: Duration = Duration::from_secs(10);

/// The connections of each load: `count` to one server, opened when the
/// load begins (before its clock starts) and closed when it ends, each
/// driven by a task of its own. None sits idle between loads, where
/// nothing would read the server's PINGs.
pub(crate) struct Lanes {
    addr: SocketAddr,
    count: usize,
}

impl Lanes {
    pub(crate) fn new(addr: SocketAddr, count: usize) -> Self {
        Self { addr, count }
    }

    /// `in_flight` calls on each connection, each sent when an answer
    /// frees its place, until `duration` has passed.
    pub(crate) async fn closed_loop(
        &self,
        in_flight: usize,
        duration: Duration,
        calls: Arc<dyn Calls>,
    ) -> Measured {
        let (mut total, ran_out, start) = self
            .spread(|index, count, lane, start| {
                // Worker w runs on connection w % count, as in `drive`.
                let workers = (0..in_flight).map(|k| index + k * count).collect();
                lane.closed(workers, start + duration, calls.clone())
            })
            .await;
        total.window = load_window(start, duration, ran_out);
        total
    }

    /// Calls sent at `rate` per second in all for `duration`, whatever
    /// the answers do; waits for the last answer. The n-th call is made as
    /// worker n, iteration n, on connection n % count.
    pub(crate) async fn open_loop(
        &self,
        rate: f64,
        duration: Duration,
        calls: Arc<dyn Calls>,
    ) -> Measured {
        let (mut total, _, _) = self
            .spread(|index, count, lane, start| {
                let pace = Pace {
                    first: index as u64,
                    step: count as u64,
                    rate,
                    start,
                    duration,
                };
                lane.open(pace, calls.clone())
            })
            .await;
        total.window = duration;
        total
    }

    /// Two closed loops taking turns, `rounds` turns each and `duration`
    /// in all for each: a change in what else the machine is doing during
    /// the run falls on both alike, so their ratio is steadier than that
    /// of two runs one after the other.
    pub(crate) async fn alternating(
        &self,
        in_flight: usize,
        duration: Duration,
        rounds: u32,
        first: Arc<dyn Calls>,
        second: Arc<dyn Calls>,
    ) -> (Measured, Measured) {
        let turn = duration / rounds.max(1);
        let (mut a, mut b) = (Measured::new(), Measured::new());
        for _ in 0..rounds.max(1) {
            a.absorb(&self.closed_loop(in_flight, turn, first.clone()).await);
            b.absorb(&self.closed_loop(in_flight, turn, second.clone()).await);
        }
        (a, b)
    }

    /// Opens the connections, then runs `part(index, count, connection,
    /// start)` for each on a task of its own; merges what they measured,
    /// whether a pool ran out, and when the load started. A connection
    /// that fails is recorded as a wrong answer.
    async fn spread<F, P>(&self, part: P) -> (Measured, bool, Instant)
    where
        P: Fn(usize, usize, Lane, Instant) -> F,
        F: Future<Output = Ran> + Send + 'static,
    {
        let mut total = Measured::new();
        let mut lanes = Vec::with_capacity(self.count);
        for _ in 0..self.count {
            match Lane::connect(self.addr).await {
                Ok(lane) => lanes.push(lane),
                Err(error) => total.wrong.push(format!("connect: {error:#}")),
            }
        }
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for (index, lane) in lanes.into_iter().enumerate() {
            tasks.spawn(part(index, self.count, lane, start));
        }
        let mut ran_out = false;
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(ran) => {
                    total.merge(&ran.measured);
                    ran_out |= ran.ran_out;
                    if let Err(error) = ran.result {
                        total.wrong.push(format!("connection: {error}"));
                    }
                }
                Err(error) => total.wrong.push(format!("connection task: {error}")),
            }
        }
        (total, ran_out, start)
    }
}

/// What one connection's part of a load gives back.
struct Ran {
    result: Result<(), String>,
    measured: Measured,
    ran_out: bool,
}

/// An open loop's schedule for one connection: calls `first`,
/// `first + step`, … each due when `rate × elapsed` passes it.
struct Pace {
    first: u64,
    step: u64,
    rate: f64,
    start: Instant,
    duration: Duration,
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types and flags (RFC 9113, 6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

// Settings (RFC 9113, 6.5.2).
const HEADER_TABLE_SIZE: u16 = 0x1;
const ENABLE_PUSH: u16 = 0x2;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
const INITIAL_WINDOW_SIZE: u16 = 0x4;
const MAX_FRAME_SIZE: u16 = 0x5;

/// The window this client gives each stream: far more than an answer.
const STREAM_WINDOW: u32 = 1 << 24;
/// The window this client keeps open on the connection; it is topped up
/// once half of it is used.
const CONNECTION_WINDOW: u32 = 1 << 30;
/// The protocol's initial window, before any WINDOW_UPDATE or SETTINGS.
const DEFAULT_WINDOW: u32 = 65_535;

/// One HTTP/2 connection to the server (prior knowledge, no TLS).
struct Lane {
    tcp: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    decoder: hpack::Decoder,
    encoder: hpack::Encoder,
    next_stream: u32,
    /// What the server lets this client send on the connection.
    send_window: i64,
    /// What it lets this client send on a new stream.
    stream_window: i64,
    max_frame: usize,
    max_streams: usize,
    settled: bool,
    /// DATA received since this client last opened the window again.
    received: usize,
    /// A header block waiting for its CONTINUATION frames.
    partial: Option<(u32, bool, Vec<u8>)>,
    in_flight: Vec<InFlight>,
    waiting: VecDeque<Waiting>,
    answered: Vec<Answered>,
    /// Answer buffers to reuse.
    spare: Vec<Vec<u8>>,
}

/// A call sent and not yet answered.
struct InFlight {
    stream: u32,
    call: Waiting,
    headers_seen: bool,
    body: Vec<u8>,
}

/// A call due but not sent yet (the server's windows or stream limit).
struct Waiting {
    path: &'static str,
    worker: usize,
    iteration: u64,
    ticket: usize,
    request: Bytes,
    due: Instant,
}

/// A call whose answer is complete: the gRPC-framed body if its status
/// was OK.
struct Answered {
    worker: usize,
    iteration: u64,
    ticket: usize,
    due: Instant,
    body: Result<Vec<u8>, String>,
}

impl Lane {
    /// A lane over `tcp` to `authority`, in HTTP/2's initial state, before
    /// any frame is sent.
    fn new(tcp: TcpStream, authority: String) -> Self {
        Self {
            tcp,
            input: Vec::with_capacity(64 * 1024),
            output: Vec::with_capacity(64 * 1024),
            decoder: hpack::Decoder::new(),
            encoder: hpack::Encoder::new(authority),
            next_stream: 1,
            send_window: i64::from(DEFAULT_WINDOW),
            stream_window: i64::from(DEFAULT_WINDOW),
            max_frame: 16_384,
            max_streams: usize::MAX,
            settled: false,
            received: 0,
            partial: None,
            in_flight: Vec::new(),
            waiting: VecDeque::new(),
            answered: Vec::new(),
            spare: Vec::new(),
        }
    }

    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let mut lane = Self::new(tcp, addr.to_string());
        lane.output.extend_from_slice(PREFACE);
        let settings = [(ENABLE_PUSH, 0), (INITIAL_WINDOW_SIZE, STREAM_WINDOW)];
        frame_header(&mut lane.output, 6 * settings.len(), SETTINGS, 0, 0);
        for (id, value) in settings {
            lane.output.extend_from_slice(&id.to_be_bytes());
            lane.output.extend_from_slice(&value.to_be_bytes());
        }
        window_update(&mut lane.output, CONNECTION_WINDOW - DEFAULT_WINDOW);
        lane.flush().await.map_err(anyhow::Error::msg)?;
        // The server's SETTINGS come first: wait for them.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !lane.settled {
            tokio::time::timeout_at(deadline, lane.receive())
                .await
                .context("no HTTP/2 SETTINGS from the server")?
                .map_err(anyhow::Error::msg)?;
            lane.flush().await.map_err(anyhow::Error::msg)?;
        }
        if !lane.answered.is_empty() {
            bail!("answers before any call");
        }
        Ok(lane)
    }

    async fn closed(mut self, workers: Vec<usize>, end: Instant, calls: Arc<dyn Calls>) -> Ran {
        let mut measured = Measured::new();
        let mut ran_out = false;
        let now = Instant::now();
        for worker in workers {
            ran_out |= !self.call(&*calls, worker, 0, now);
        }
        let result = loop {
            if let Err(error) = self.flush().await {
                break Err(error);
            }
            if self.in_flight.is_empty() && self.waiting.is_empty() {
                break Ok(());
            }
            let deadline = tokio::time::Instant::from_std(end + GRACE);
            match tokio::time::timeout_at(deadline, self.receive()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => break Err(error),
                Err(_) => break Err(self.unanswered()),
            }
            let now = Instant::now();
            for answer in std::mem::take(&mut self.answered) {
                let (worker, iteration) = (answer.worker, answer.iteration);
                self.check(&*calls, answer, now, end, &mut measured);
                if now < end && !self.call(&*calls, worker, iteration + 1, now) {
                    ran_out = true;
                }
            }
        };
        Ran {
            result,
            measured,
            ran_out,
        }
    }

    async fn open(mut self, pace: Pace, calls: Arc<dyn Calls>) -> Ran {
        let mut measured = Measured::new();
        let end = pace.start + pace.duration;
        // Wake once per call of this connection at low rates, once a
        // millisecond (sending what is due) at high ones.
        let gap = Duration::from_secs_f64(pace.step as f64 / pace.rate.max(1.0))
            .max(Duration::from_millis(1));
        let mut tick = tokio::time::interval_at(pace.start.into(), gap);
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let give_up = tokio::time::sleep_until((end + GRACE).into());
        tokio::pin!(give_up);
        let mut next = pace.first;
        let mut sending = true;
        let result = loop {
            tokio::select! {
                biased;
                read = self.receive() => {
                    if let Err(error) = read {
                        break Err(error);
                    }
                }
                _ = tick.tick(), if sending => {
                    let now = Instant::now();
                    let due = (now.duration_since(pace.start).as_secs_f64() * pace.rate) as u64;
                    while next < due {
                        let worker = usize::try_from(next).unwrap_or(usize::MAX);
                        if !self.call(&*calls, worker, next, now) {
                            sending = false;
                            break;
                        }
                        next += pace.step;
                    }
                    sending &= now < end;
                }
                () = &mut give_up => break Err(self.unanswered()),
            }
            let now = Instant::now();
            for answer in std::mem::take(&mut self.answered) {
                self.check(&*calls, answer, now, end, &mut measured);
            }
            if let Err(error) = self.flush().await {
                break Err(error);
            }
            if !sending && self.in_flight.is_empty() && self.waiting.is_empty() {
                break Ok(());
            }
        };
        Ran {
            result,
            measured,
            ran_out: false,
        }
    }

    fn unanswered(&self) -> String {
        format!(
            "{} calls unanswered {GRACE:?} after the load ended",
            self.in_flight.len() + self.waiting.len()
        )
    }

    /// Checks an answer and records it.
    fn check(
        &mut self,
        calls: &dyn Calls,
        answer: Answered,
        now: Instant,
        end: Instant,
        measured: &mut Measured,
    ) {
        let outcome = answer.body.and_then(|body| {
            let outcome = message(&body).and_then(|m| calls.check(answer.ticket, m));
            self.spare.push(body);
            outcome
        });
        measured.record(&outcome, now.duration_since(answer.due), now <= end);
    }

    /// Queues call `iteration` of `worker` and sends what the server's
    /// limits allow; false if the scenario has nothing left to send.
    fn call(&mut self, calls: &dyn Calls, worker: usize, iteration: u64, due: Instant) -> bool {
        let Some((request, ticket)) = calls.request(worker, iteration) else {
            return false;
        };
        self.waiting.push_back(Waiting {
            path: calls.path(),
            worker,
            iteration,
            ticket,
            request,
            due,
        });
        self.send_waiting();
        true
    }

    /// Sends the calls waiting, in order, as far as the server's limits
    /// allow.
    fn send_waiting(&mut self) {
        while let Some(next) = self.waiting.front() {
            let length = next.request.len();
            if self.in_flight.len() >= self.max_streams
                || self.send_window < length as i64
                || self.stream_window < length as i64
                || length > self.max_frame
            {
                return;
            }
            let Some(call) = self.waiting.pop_front() else {
                return;
            };
            let stream = self.next_stream;
            self.next_stream += 2;
            let at = self.output.len();
            frame_header(&mut self.output, 0, HEADERS, END_HEADERS, stream);
            self.encoder.request(call.path, &mut self.output);
            let block = self.output.len() - at - 9;
            self.output[at..at + 3].copy_from_slice(&(block as u32).to_be_bytes()[1..]);
            frame_header(&mut self.output, length, DATA, END_STREAM, stream);
            self.output.extend_from_slice(&call.request);
            self.send_window -= length as i64;
            let mut body = self.spare.pop().unwrap_or_default();
            body.clear();
            self.in_flight.push(InFlight {
                stream,
                call,
                headers_seen: false,
                body,
            });
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        if self.output.is_empty() {
            return Ok(());
        }
        let written = self.tcp.write_all(&self.output).await;
        self.output.clear();
        written.map_err(|e| format!("write: {e}"))
    }

    /// Reads what the server sent and handles every whole frame in it.
    /// Cancel-safe: it awaits nothing but the read.
    async fn receive(&mut self) -> Result<(), String> {
        if self.input.capacity() - self.input.len() < 16 * 1024 {
            self.input.reserve(64 * 1024);
        }
        let read = self
            .tcp
            .read_buf(&mut self.input)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if read == 0 {
            return Err("the server closed the connection".into());
        }
        let input = std::mem::take(&mut self.input);
        let mut at = 0;
        let handled = loop {
            let Some(header) = input.get(at..at + 9) else {
                break Ok(());
            };
            let length =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let (kind, flags) = (header[3], header[4]);
            let stream =
                u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            let Some(payload) = input.get(at + 9..at + 9 + length) else {
                break Ok(());
            };
            at += 9 + length;
            if let Err(error) = self.frame(kind, flags, stream, payload) {
                break Err(error);
            }
        };
        self.input = input;
        self.input.drain(..at);
        if self.received >= (CONNECTION_WINDOW / 2) as usize {
            window_update(&mut self.output, self.received as u32);
            self.received = 0;
        }
        // Answers and WINDOW_UPDATEs make room for calls held back.
        self.send_waiting();
        handled
    }

    fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Result<(), String> {
        if let Some((waiting_on, end_stream, mut block)) = self.partial.take() {
            if kind != CONTINUATION || stream != waiting_on {
                return Err("a header block broken by another frame".into());
            }
            block.extend_from_slice(payload);
            if flags & END_HEADERS == 0 {
                self.partial = Some((waiting_on, end_stream, block));
                return Ok(());
            }
            return self.headers(stream, end_stream, &block);
        }
        match kind {
            DATA => {
                self.received += payload.len();
                let data = unpadded(flags, payload)?;
                if let Some(call) = self.in_flight.iter_mut().find(|c| c.stream == stream) {
                    call.body.extend_from_slice(data);
                    if flags & END_STREAM != 0 {
                        self.answer(stream, Err("the answer ended without a gRPC status".into()));
                    }
                }
                Ok(())
            }
            HEADERS => {
                let mut block = unpadded(flags, payload)?;
                if flags & PRIORITY_FLAG != 0 {
                    block = block.get(5..).ok_or("a HEADERS frame cut short")?;
                }
                let end_stream = flags & END_STREAM != 0;
                if flags & END_HEADERS == 0 {
                    self.partial = Some((stream, end_stream, block.to_vec()));
                    return Ok(());
                }
                self.headers(stream, end_stream, block)
            }
            RST_STREAM => {
                let code = payload
                    .get(..4)
                    .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                self.answer(
                    stream,
                    Err(format!("the server reset the stream (code {code})")),
                );
                Ok(())
            }
            SETTINGS if flags & ACK == 0 => {
                for setting in payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([setting[0], setting[1]]);
                    let value =
                        u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                    match id {
                        HEADER_TABLE_SIZE => self.encoder.set_room(value as usize)?,
                        MAX_CONCURRENT_STREAMS => self.max_streams = value as usize,
                        INITIAL_WINDOW_SIZE => {
                            self.stream_window = i64::from(value);
                        }
                        MAX_FRAME_SIZE => self.max_frame = value as usize,
                        _ => {}
                    }
                }
                frame_header(&mut self.output, 0, SETTINGS, ACK, 0);
                self.settled = true;
                Ok(())
            }
            PING if flags & ACK == 0 => {
                frame_header(&mut self.output, payload.len(), PING, ACK, 0);
                self.output.extend_from_slice(payload);
                Ok(())
            }
            GOAWAY => {
                let code = payload
                    .get(4..8)
                    .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                Err(format!("the server sent GOAWAY (code {code})"))
            }
            WINDOW_UPDATE if stream == 0 => {
                let increment = payload.get(..4).map_or(0, |c| {
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]]) & 0x7fff_ffff
                });
                self.send_window += i64::from(increment);
                Ok(())
            }
            PUSH_PROMISE => Err("a PUSH_PROMISE, with push disabled".into()),
            CONTINUATION => Err("a CONTINUATION with no header block open".into()),
            // PRIORITY, stream WINDOW_UPDATEs (every request fits the
            // initial window), acknowledgements, unknown types.
            _ => Ok(()),
        }
    }

    /// A whole header block: the answer's headers, or its trailers.
    fn headers(&mut self, stream: u32, end_stream: bool, block: &[u8]) -> Result<(), String> {
        let mut http_ok = None;
        let mut grpc_status = None;
        let mut grpc_message = String::new();
        self.decoder.decode(block, |name, value| match name {
            b":status" => http_ok = Some(value == b"200"),
            b"grpc-status" => grpc_status = Some(String::from_utf8_lossy(value).into_owned()),
            b"grpc-message" => grpc_message = String::from_utf8_lossy(value).into_owned(),
            _ => {}
        })?;
        let Some(call) = self.in_flight.iter_mut().find(|c| c.stream == stream) else {
            // A stream already answered (reset, say): the block only
            // mattered to the HPACK table.
            return Ok(());
        };
        let first = !call.headers_seen;
        call.headers_seen = true;
        let verdict = match (first, http_ok, end_stream, grpc_status.as_deref()) {
            (true, Some(true), false, None) => return Ok(()),
            (true, ok, _, _) if ok != Some(true) => Err("an HTTP status other than 200".into()),
            (false, _, false, _) => Err("trailers that do not end the stream".into()),
            (true, _, true, Some("0")) => Err("status OK but no answer".into()),
            (_, _, true, Some("0")) => Ok(()),
            (_, _, true, Some(code)) => Err(format!("gRPC status {code}: {grpc_message}")),
            (_, _, false, Some(_)) => Err("a gRPC status before the answer's end".into()),
            _ => Err("an answer without a gRPC status".into()),
        };
        self.answer(stream, verdict);
        Ok(())
    }

    /// Ends the call on `stream`: its body if `verdict` is Ok.
    fn answer(&mut self, stream: u32, verdict: Result<(), String>) {
        let Some(at) = self.in_flight.iter().position(|c| c.stream == stream) else {
            return;
        };
        let done = self.in_flight.swap_remove(at);
        let body = match verdict {
            Ok(()) => Ok(done.body),
            Err(error) => {
                self.spare.push(done.body);
                Err(error)
            }
        };
        self.answered.push(Answered {
            worker: done.call.worker,
            iteration: done.call.iteration,
            ticket: done.call.ticket,
            due: done.call.due,
            body,
        });
    }
}

/// The protobuf message of a gRPC-framed answer: exactly one, uncompressed.
fn message(body: &[u8]) -> Result<&[u8], String> {
    match body {
        [0, a, b, c, d, message @ ..]
            if u32::from_be_bytes([*a, *b, *c, *d]) as usize == message.len() =>
        {
            Ok(message)
        }
        _ => Err("a malformed gRPC answer".into()),
    }
}

/// A DATA or HEADERS payload without its padding.
fn unpadded(flags: u8, payload: &[u8]) -> Result<&[u8], String> {
    if flags & PADDED == 0 {
        return Ok(payload);
    }
    let (&pad, rest) = payload.split_first().ok_or("a padded frame cut short")?;
    rest.len()
        .checked_sub(usize::from(pad))
        .map(|length| &rest[..length])
        .ok_or_else(|| "padding longer than its frame".into())
}

fn frame_header(out: &mut Vec<u8>, length: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

fn window_update(out: &mut Vec<u8>, increment: u32) {
    frame_header(out, 4, WINDOW_UPDATE, 0, 0);
    out.extend_from_slice(&increment.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lane on a real loopback socket, before any handshake, with one
    /// call in flight on stream 1.
    async fn lane_with_a_call() -> Lane {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let mut lane = Lane::new(tcp, "127.0.0.1:1".to_owned());
        lane.next_stream = 3;
        lane.in_flight.push(InFlight {
            stream: 1,
            call: Waiting {
                path: "/test",
                worker: 0,
                iteration: 7,
                ticket: 9,
                request: Bytes::new(),
                due: Instant::now(),
            },
            headers_seen: false,
            body: Vec::new(),
        });
        lane
    }

    /// `:status: 200` (static table index 8).
    const STATUS_200: &[u8] = &[0x88];

    /// A header as a literal without indexing, with a new name.
    fn literal(name: &str, value: &str) -> Vec<u8> {
        let mut out = vec![0x00, name.len() as u8];
        out.extend_from_slice(name.as_bytes());
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
        out
    }

    fn only_answer(lane: &Lane) -> &Result<Vec<u8>, String> {
        assert_eq!(lane.answered.len(), 1, "one answer");
        assert!(lane.in_flight.is_empty());
        &lane.answered[0].body
    }

    #[test]
    fn a_message_is_framed_and_read_back() {
        let body = framed(b"hello").unwrap();
        assert_eq!(&body[..], b"\0\0\0\0\x05hello");
        assert_eq!(message(&body), Ok(&b"hello"[..]));
        assert!(message(b"\0\0\0\0\x06hello").is_err(), "length mismatch");
        assert!(message(b"\x01\0\0\0\x05hello").is_err(), "compressed");
        assert!(message(b"\0\0").is_err(), "cut short");
    }

    #[test]
    fn frame_headers_are_laid_out_as_rfc_9113_says() {
        let mut out = Vec::new();
        frame_header(&mut out, 0x01_0203, HEADERS, END_HEADERS, 0x0506_0708);
        assert_eq!(out, [0x01, 0x02, 0x03, 0x1, 0x4, 0x05, 0x06, 0x07, 0x08]);
        let mut out = Vec::new();
        window_update(&mut out, 1000);
        assert_eq!(
            out,
            [0, 0, 4, WINDOW_UPDATE, 0, 0, 0, 0, 0, 0, 0, 0x03, 0xe8]
        );
    }

    #[test]
    fn padding_is_removed_and_bad_padding_refused() {
        assert_eq!(unpadded(0, b"abc"), Ok(&b"abc"[..]));
        assert_eq!(unpadded(PADDED, b"\x02abcxx"), Ok(&b"abc"[..]));
        assert!(unpadded(PADDED, b"\x05abc").is_err());
        assert!(unpadded(PADDED, b"").is_err());
    }

    #[tokio::test]
    async fn server_settings_are_applied_and_acknowledged() {
        let mut lane = lane_with_a_call().await;
        let mut payload = Vec::new();
        for (id, value) in [(MAX_CONCURRENT_STREAMS, 100u32), (MAX_FRAME_SIZE, 32_768)] {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        lane.frame(SETTINGS, 0, 0, &payload).unwrap();
        assert!(lane.settled);
        assert_eq!((lane.max_streams, lane.max_frame), (100, 32_768));
        assert_eq!(lane.output, [0, 0, 0, SETTINGS, ACK, 0, 0, 0, 0]);
    }

    #[tokio::test]
    async fn pings_are_answered_and_goaway_ends_the_connection() {
        let mut lane = lane_with_a_call().await;
        lane.frame(PING, 0, 0, b"12345678").unwrap();
        let mut pong = vec![0, 0, 8, PING, ACK, 0, 0, 0, 0];
        pong.extend_from_slice(b"12345678");
        assert_eq!(lane.output, pong);
        let err = lane
            .frame(GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 2])
            .unwrap_err();
        assert!(err.contains("code 2"), "{err}");
    }

    #[tokio::test]
    async fn headers_data_and_trailers_make_an_answer() {
        let mut lane = lane_with_a_call().await;
        lane.frame(HEADERS, END_HEADERS, 1, STATUS_200).unwrap();
        assert!(lane.answered.is_empty(), "headers alone are no answer");
        lane.frame(DATA, 0, 1, &framed(b"ok").unwrap()).unwrap();
        lane.frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &literal("grpc-status", "0"),
        )
        .unwrap();
        assert_eq!(only_answer(&lane), &Ok(b"\0\0\0\0\x02ok".to_vec()));
        assert_eq!(lane.answered[0].ticket, 9);
        assert_eq!(lane.received, 7, "DATA counted for flow control");
    }

    #[tokio::test]
    async fn a_header_block_may_span_continuation_frames() {
        let mut lane = lane_with_a_call().await;
        let mut block = STATUS_200.to_vec();
        block.extend(literal("grpc-status", "16"));
        block.extend(literal("grpc-message", "no"));
        let (first, rest) = block.split_at(4);
        lane.frame(HEADERS, END_STREAM, 1, first).unwrap();
        lane.frame(CONTINUATION, END_HEADERS, 1, rest).unwrap();
        assert_eq!(only_answer(&lane), &Err("gRPC status 16: no".to_owned()));
    }

    #[tokio::test]
    async fn a_header_block_broken_by_another_frame_is_an_error() {
        let mut lane = lane_with_a_call().await;
        lane.frame(HEADERS, 0, 1, STATUS_200).unwrap();
        assert!(lane.frame(DATA, 0, 1, b"x").is_err());
        assert!(
            lane.frame(CONTINUATION, END_HEADERS, 1, b"").is_err(),
            "none open"
        );
    }

    #[tokio::test]
    async fn a_reset_stream_or_a_bad_answer_is_a_wrong_answer() {
        let mut lane = lane_with_a_call().await;
        lane.frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]).unwrap();
        assert_eq!(
            only_answer(&lane),
            &Err("the server reset the stream (code 8)".to_owned())
        );

        let mut lane = lane_with_a_call().await;
        lane.frame(HEADERS, END_HEADERS, 1, &[0x89]).unwrap(); // :status 204
        assert_eq!(
            only_answer(&lane),
            &Err("an HTTP status other than 200".to_owned())
        );

        let mut lane = lane_with_a_call().await;
        lane.frame(HEADERS, END_HEADERS, 1, STATUS_200).unwrap();
        lane.frame(DATA, END_STREAM, 1, &framed(b"ok").unwrap())
            .unwrap();
        assert_eq!(
            only_answer(&lane),
            &Err("the answer ended without a gRPC status".to_owned())
        );
    }

    #[tokio::test]
    async fn pushes_are_refused() {
        let mut lane = lane_with_a_call().await;
        assert!(
            lane.frame(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2])
                .is_err()
        );
    }
}
