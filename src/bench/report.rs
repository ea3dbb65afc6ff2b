//! The result of a run, printed for people or as JSON for scripts.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn from(h: &Histogram<u64>) -> Latency {
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// Gateway-side figures from /proc (present when `--pid` was given; with
/// several `--pid`s, every node summed).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Gateway {
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    /// (RSS after connecting - RSS before) / connections.
    pub rss_per_connection_bytes: Option<f64>,
    /// The same for each node (one `--pid` per `--url`, several nodes):
    /// its RSS growth / the connections it holds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rss_per_connection_by_node_bytes: Vec<f64>,
    /// The same after one large frame each way per connection (hold
    /// `--large-frame`): what a session keeps once big traffic is over.
    pub rss_per_connection_after_large_bytes: Option<f64>,
    pub cpu_connect_secs: f64,
    pub cpu_us_per_handshake: Option<f64>,
    /// CPU per second spent holding the idle connections (hold only).
    pub cpu_idle_ms_per_sec: Option<f64>,
    /// CPU of the measured phase (requests, deliveries or pushes).
    pub cpu_run_secs: f64,
    /// The same for each `--pid` (several nodes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpu_run_secs_by_node: Vec<f64>,
    pub cpu_us_per_op: Option<f64>,
}

/// Redis-side figures (cluster; present with `--redis-pid` or
/// `--redis-url`): CPU from /proc with `--redis-pid`, commands from `INFO
/// stats` with `--redis-url` (commands run inside scripts count too).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Redis {
    pub cpu_connect_secs: Option<f64>,
    pub cpu_us_per_handshake: Option<f64>,
    pub commands_connect: Option<u64>,
    pub commands_per_handshake: Option<f64>,
    /// While holding idle connections (hold only): presence refreshes,
    /// subscription checks.
    pub cpu_idle_ms_per_sec: Option<f64>,
    pub commands_idle_per_sec: Option<f64>,
    /// The measured phase.
    pub cpu_run_secs: Option<f64>,
    pub cpu_us_per_op: Option<f64>,
    /// Every `--pid` plus Redis, per op: the cluster's whole cost.
    pub gateway_and_redis_cpu_us_per_op: Option<f64>,
    pub commands_run: Option<u64>,
    pub commands_per_op: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub scenario: String,
    pub connections: usize,
    /// Gateway nodes driven (one per `--url`).
    pub nodes: usize,
    pub connect_secs: f64,
    pub handshakes_per_sec: f64,
    /// What one "op" is in this scenario: reply, delivery or push.
    pub op: String,
    pub ops: u64,
    pub run_secs: f64,
    pub ops_per_sec: f64,
    /// Pushes sent (unicast) or broadcasts (fanout); 0 otherwise.
    pub sent: u64,
    /// Ops that should have arrived but did not by the end of the run.
    pub missing: u64,
    pub latency: Latency,
    pub gateway: Option<Gateway>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<Redis>,
    /// Rounds of connects and disconnects (churn only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<Churn>,
    /// Unicast: seconds from the first request to the last answer, and
    /// pushes answered per second over them (the rate the API sustained;
    /// `ops_per_sec` also counts the wait for the last frames).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_per_sec: Option<f64>,
    /// Unicast: from sending a push request to its answer (a durable
    /// push is answered once on disk; `latency` is when it arrived).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_latency: Option<Latency>,
    /// Durable pushes (unicast `--persist`): what the acking clients saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durable: Option<Durable>,
    /// Unicast `--alternate`: plain and durable pushes compared in one run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<Compare>,
    /// Replay on connect (replay only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<Replay>,
}

/// Unicast `--persist --alternate SECS`: gateway CPU per push of plain and
/// durable pushes sent in alternating phases of one run (plain first,
/// after an unmeasured warm-up pair), to the same resuming, acking
/// connections. A phase's CPU runs until its frames arrived and, durable,
/// were acked, plus the same quiet second for both kinds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Compare {
    pub phase_secs: f64,
    pub plain_pushes: u64,
    pub durable_pushes: u64,
    pub plain_cpu_secs: f64,
    pub durable_cpu_secs: f64,
    /// None when a kind's CPU did not reach one tick of /proc's clock.
    pub plain_cpu_us_per_push: Option<f64>,
    pub durable_cpu_us_per_push: Option<f64>,
    /// Durable over plain CPU per push, over every measured phase.
    pub ratio: Option<f64>,
    /// The same for each pair of phases (a plain one and the durable one
    /// after it), in order; None for a pair with a phase not measured.
    pub pair_ratios: Vec<Option<f64>>,
    /// The plain pushes' request -> answer times (the report's
    /// `answer_latency` is the durable ones').
    pub plain_answer_latency: Option<Latency>,
}

impl Compare {
    /// Fills the per-push figures from the sums.
    pub fn finish(&mut self) {
        self.plain_cpu_us_per_push = per_push(self.plain_cpu_secs, self.plain_pushes);
        self.durable_cpu_us_per_push = per_push(self.durable_cpu_secs, self.durable_pushes);
        self.ratio = ratio(self.durable_cpu_us_per_push, self.plain_cpu_us_per_push);
    }
}

/// CPU per push in us; None when the phase sent nothing or its CPU did
/// not reach one tick of /proc's clock (10 ms).
pub fn per_push(cpu_secs: f64, pushes: u64) -> Option<f64> {
    (pushes > 0 && cpu_secs > 0.0).then(|| cpu_secs * 1e6 / pushes as f64)
}

/// `durable / plain`, when both were measured.
pub fn ratio(durable: Option<f64>, plain: Option<f64>) -> Option<f64> {
    durable.zip(plain).map(|(d, p)| d / p)
}

/// The clients' side of durable pushes: resuming connections that ack
/// like pushgate.js.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Durable {
    /// Connections that got SYNCED.
    pub synced: u64,
    /// ACK frames sent (`{"ids": [...], "seq"}`), ids in them, and ACK
    /// answers received.
    pub ack_frames: u64,
    pub acked_ids: u64,
    pub ack_answers: u64,
    /// ERROR frames received (a refused ack, an inbox failure).
    pub errors: u64,
    /// MESSAGE frames whose id was not above the connection's last one.
    pub out_of_order: u64,
}

/// Rounds of: N durable messages stored for a fresh offline user, then
/// one resuming connect that replays them.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Replay {
    pub rounds: usize,
    /// Messages stored and replayed per round.
    pub messages: usize,
    /// Storing each round's messages: seconds.
    pub store_secs: Vec<f64>,
    /// Gateway CPU of storing them, over every round / messages stored.
    pub store_cpu_us_per_message: Option<f64>,
    /// From the start of the upgrade (TCP connect) to SYNCED, per round.
    pub synced_ms: Vec<f64>,
    pub synced_p50_ms: f64,
    pub synced_max_ms: f64,
    /// Gateway CPU from the upgrade to SYNCED, per round (10 ms ticks).
    pub cpu_replay_ms: Vec<f64>,
    /// The same over every round / messages replayed.
    pub cpu_us_per_replayed_message: Option<f64>,
    /// Including what trails SYNCED by `settle` (the "written" marks of
    /// the replayed messages are saved after it), over every round.
    pub cpu_us_per_replayed_message_with_marks: Option<f64>,
}

/// Gateway RSS over rounds of connecting and disconnecting every
/// connection (present with `--pid`; the vectors stay empty without it).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Churn {
    pub rounds: usize,
    /// Before the first round.
    pub rss_start_bytes: Option<u64>,
    /// With every connection of the round open.
    pub rss_peak_bytes: Vec<u64>,
    /// After the round's disconnects, once the gateway counts 0 connections.
    pub rss_after_round_bytes: Vec<u64>,
    /// (RSS after the last round - RSS after the first) per 100,000
    /// connect/disconnect cycles of the rounds in between; needs 2 rounds.
    pub rss_growth_per_100k_cycles_bytes: Option<f64>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes > 1 {
            writeln!(f, "scenario {}: {} connections over {} nodes", self.scenario, self.connections, self.nodes)?;
        } else {
            writeln!(f, "scenario {}: {} connections", self.scenario, self.connections)?;
        }
        if self.replay.is_none() {
            writeln!(f, "  connect: {:.2} s, {:.0} handshakes/s", self.connect_secs, self.handshakes_per_sec)?;
        }
        if self.ops > 0 || self.sent > 0 {
            writeln!(
                f,
                "  run: {} ops ({} each) in {:.2} s = {:.0}/s (sent {}, missing {})",
                self.ops, self.op, self.run_secs, self.ops_per_sec, self.sent, self.missing
            )?;
            let l = &self.latency;
            if l.count > 0 {
                writeln!(
                    f,
                    "  latency us: p50 {} p90 {} p99 {} p99.9 {} max {} (n={})",
                    l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.count
                )?;
            }
        }
        if let (Some(secs), Some(rate)) = (self.send_secs, self.sent_per_sec) {
            writeln!(f, "  sending: {} pushes answered in {secs:.2} s = {rate:.0}/s", self.sent)?;
        }
        if let Some(l) = &self.answer_latency {
            writeln!(f, "  answered us: p50 {} p99 {} max {}", l.p50_us, l.p99_us, l.max_us)?;
        }
        if let Some(d) = &self.durable {
            writeln!(
                f,
                "  durable: {} SYNCED, {} ACK frames ({} ids, {} answered), {} errors, {} out of id order",
                d.synced, d.ack_frames, d.acked_ids, d.ack_answers, d.errors, d.out_of_order
            )?;
        }
        if let Some(c) = &self.compare {
            let us = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
            let times = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}"));
            let pairs: Vec<String> = c.pair_ratios.iter().copied().map(times).collect();
            writeln!(
                f,
                "  alternating {} s phases: plain {} us/push ({}), durable {} us/push ({}): {}x (pairs: {})",
                c.phase_secs,
                us(c.plain_cpu_us_per_push),
                c.plain_pushes,
                us(c.durable_cpu_us_per_push),
                c.durable_pushes,
                times(c.ratio),
                pairs.join(" ")
            )?;
        }
        if let Some(r) = &self.replay {
            r.fmt_lines(f)?;
        }
        if let Some(c) = &self.churn {
            writeln!(f, "  churn: {} rounds of {} connects and disconnects", c.rounds, self.connections)?;
            let mb = |b: u64| format!("{:.2}", b as f64 / 1e6);
            if let Some(start) = c.rss_start_bytes {
                writeln!(f, "  gateway RSS before: {} MB", mb(start))?;
            }
            for (i, (peak, after)) in c.rss_peak_bytes.iter().zip(&c.rss_after_round_bytes).enumerate() {
                writeln!(
                    f,
                    "  round {:>3}: RSS {} MB connected, {} MB after disconnects",
                    i + 1,
                    mb(*peak),
                    mb(*after)
                )?;
            }
            if let Some(growth) = c.rss_growth_per_100k_cycles_bytes {
                writeln!(
                    f,
                    "  gateway RSS growth after round 1: {:.0} bytes ({:.2} MB) per 100,000 connect/disconnect cycles",
                    growth,
                    growth / 1e6
                )?;
            }
        }
        if let Some(g) = &self.gateway {
            writeln!(f, "  gateway RSS: {} -> {} bytes", g.rss_before_bytes, g.rss_after_bytes)?;
            if let Some(per) = g.rss_per_connection_bytes {
                writeln!(f, "  gateway RSS per connection: {:.0} bytes ({:.2} KiB)", per, per / 1024.0)?;
            }
            if !g.rss_per_connection_by_node_bytes.is_empty() {
                let nodes: Vec<String> = g.rss_per_connection_by_node_bytes.iter().map(|b| format!("{b:.0}")).collect();
                writeln!(f, "  ... per node: {} bytes", nodes.join(" / "))?;
            }
            if let Some(per) = g.rss_per_connection_after_large_bytes {
                writeln!(f, "  ... after one large frame each way: {:.0} bytes ({:.2} KiB)", per, per / 1024.0)?;
            }
            if let Some(us) = g.cpu_us_per_handshake {
                writeln!(f, "  gateway CPU per handshake: {us:.1} us ({:.2} s total)", g.cpu_connect_secs)?;
            }
            if let Some(ms) = g.cpu_idle_ms_per_sec {
                writeln!(f, "  gateway CPU while holding them idle: {ms:.1} ms per second")?;
            }
            if let Some(us) = g.cpu_us_per_op {
                writeln!(f, "  gateway CPU per {}: {us:.2} us ({:.2} s total)", self.op, g.cpu_run_secs)?;
            }
            if !g.cpu_run_secs_by_node.is_empty() {
                let nodes: Vec<String> = g.cpu_run_secs_by_node.iter().map(|s| format!("{s:.2}")).collect();
                writeln!(f, "  ... per node: {} s", nodes.join(" / "))?;
            }
        }
        if let Some(r) = &self.redis {
            r.fmt_lines(f, &self.op)?;
        }
        Ok(())
    }
}

impl Replay {
    fn fmt_lines(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[f64], digits: usize| v.iter().map(|x| format!("{x:.digits$}")).collect::<Vec<_>>().join(" / ");
        writeln!(f, "  replay: {} rounds of {} messages", self.rounds, self.messages)?;
        writeln!(f, "  storing them: {} s", list(&self.store_secs, 2))?;
        if let Some(us) = self.store_cpu_us_per_message {
            writeln!(f, "  gateway CPU per stored message: {us:.1} us")?;
        }
        writeln!(
            f,
            "  upgrade -> SYNCED: p50 {:.1} ms, max {:.1} ms ({} ms)",
            self.synced_p50_ms,
            self.synced_max_ms,
            list(&self.synced_ms, 1)
        )?;
        if let Some(us) = self.cpu_us_per_replayed_message {
            writeln!(
                f,
                "  gateway CPU per replayed message: {us:.2} us (upgrade -> SYNCED: {} ms CPU per round)",
                list(&self.cpu_replay_ms, 0)
            )?;
        }
        if let Some(us) = self.cpu_us_per_replayed_message_with_marks {
            writeln!(f, "  ... with what trails SYNCED (written marks): {us:.2} us")?;
        }
        Ok(())
    }
}

impl Redis {
    fn fmt_lines(&self, f: &mut fmt::Formatter<'_>, op: &str) -> fmt::Result {
        if let (Some(us), Some(secs)) = (self.cpu_us_per_handshake, self.cpu_connect_secs) {
            writeln!(f, "  redis CPU per handshake: {us:.1} us ({secs:.2} s total)")?;
        }
        if let Some(c) = self.commands_per_handshake {
            writeln!(f, "  redis commands per handshake: {c:.2}")?;
        }
        if let Some(ms) = self.cpu_idle_ms_per_sec {
            writeln!(f, "  redis CPU while holding them idle: {ms:.1} ms per second")?;
        }
        if let Some(c) = self.commands_idle_per_sec {
            writeln!(f, "  redis commands while holding them idle: {c:.0} per second")?;
        }
        if let (Some(us), Some(secs)) = (self.cpu_us_per_op, self.cpu_run_secs) {
            writeln!(f, "  redis CPU per {op}: {us:.2} us ({secs:.2} s total)")?;
        }
        if let Some(us) = self.gateway_and_redis_cpu_us_per_op {
            writeln!(f, "  gateway + redis CPU per {op}: {us:.2} us")?;
        }
        if let (Some(c), Some(total)) = (self.commands_per_op, self.commands_run) {
            writeln!(f, "  redis commands per {op}: {c:.2} ({total} total)")?;
        }
        Ok(())
    }
}
