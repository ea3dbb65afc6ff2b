//! The bench tool runs end to end on a tiny load (CI proves it works; it
//! never asserts timings).

mod common;

use common::*;
use serde_json::Value;

async fn bench(server: &TestServer, config: &std::path::Path, scenario: &[&str]) -> Value {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .arg("bench")
        .args(scenario)
        .args(["--connections", "50", "--source-addrs", "3", "--json"])
        .args(["--url", &server.ws_url(), "--api", &server.api("")])
        .arg("--config")
        .arg(config)
        // The gateway runs inside this test process.
        .args(["--pid", &std::process::id().to_string()])
        .env_remove("PUSHGATE_JWT_SECRET")
        .env_remove("PUSHGATE_API_KEY")
        .output()
        .await
        .expect("run pushgate bench");
    assert!(output.status.success(), "bench failed: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON report on stdout");
    if !["http-floor", "replay"].contains(&scenario[0]) {
        assert_eq!(report["connections"], 50, "{report}");
        assert!(report["handshakes_per_sec"].as_f64().unwrap() > 0.0);
    }
    assert!(report["gateway"]["rss_after_bytes"].as_u64().unwrap() > 0, "gateway figures from /proc");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_on_a_tiny_load() {
    let server = TestServer::start_with(|c| c.server.max_connections = 500).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bench.toml");
    std::fs::write(&config, format!("[auth]\nsecret = \"{SECRET}\"\n\n[api]\nkey = \"{API_KEY}\"\n")).unwrap();

    let hold = bench(&server, &config, &["hold", "--hold-secs", "0.5"]).await;
    assert!(hold["gateway"]["rss_per_connection_bytes"].is_number());
    assert!(hold["gateway"]["cpu_idle_ms_per_sec"].as_f64().is_some_and(|ms| ms >= 0.0), "{hold}");
    let large = bench(&server, &config, &["hold", "--hold-secs", "0.2", "--large-frame", "20000"]).await;
    assert!(large["gateway"]["rss_per_connection_after_large_bytes"].is_number(), "{large}");

    let rpc = bench(&server, &config, &["rpc", "--in-flight", "4", "--duration", "1"]).await;
    assert!(rpc["ops"].as_u64().unwrap() > 0, "{rpc}");
    assert_eq!(rpc["latency"]["count"], rpc["ops"]);

    let fanout = bench(&server, &config, &["fanout", "--broadcasts", "3"]).await;
    assert_eq!(fanout["ops"], 150, "3 broadcasts x 50 connections: {fanout}");
    assert_eq!(fanout["missing"], 0);

    let floor = bench(&server, &config, &["http-floor", "--rate", "100", "--duration", "0.5"]).await;
    assert!(floor["ops"].as_u64().unwrap() > 0, "{floor}");
    assert_eq!(floor["missing"], 0, "{floor}");

    let ws_floor = bench(&server, &config, &["ws-floor", "--rate", "100", "--duration", "0.5"]).await;
    assert!(ws_floor["ops"].as_u64().unwrap() > 0, "{ws_floor}");
    assert_eq!(
        (&ws_floor["missing"], &ws_floor["ops"]),
        (&0.into(), &ws_floor["sent"]),
        "every PING answered: {ws_floor}"
    );

    let churn = bench(&server, &config, &["churn", "--rounds", "3", "--settle-secs", "0"]).await;
    assert_eq!(churn["ops"], 150, "3 rounds x 50 connect/disconnect cycles: {churn}");
    let after = churn["churn"]["rss_after_round_bytes"].as_array().expect("RSS per round");
    assert_eq!(after.len(), 3, "{churn}");
    assert!(churn["churn"]["rss_growth_per_100k_cycles_bytes"].is_number(), "{churn}");

    for batch in ["1", "5"] {
        let unicast = bench(&server, &config, &["unicast", "--rate", "200", "--duration", "1", "--batch", batch]).await;
        assert!(unicast["sent"].as_u64().unwrap() > 0, "{unicast}");
        assert_eq!(unicast["missing"], 0, "{unicast}");
        assert_eq!(unicast["latency"]["count"], unicast["sent"], "every push arrived once: {unicast}");
    }

    for (batch, confirm) in [("1", false), ("5", true)] {
        let mut args = vec!["unicast", "--persist", "--rate", "200", "--duration", "1", "--batch", batch];
        if confirm {
            args.push("--confirm-acks");
        }
        let durable = bench(&server, &config, &args).await;
        assert!(durable["sent"].as_u64().unwrap() > 0, "{durable}");
        assert_eq!(durable["missing"], 0, "{durable}");
        assert_eq!(durable["latency"]["count"], durable["sent"], "every durable push arrived once: {durable}");
        let d = &durable["durable"];
        assert_eq!(d["synced"], 50, "every resuming connection got SYNCED: {durable}");
        assert_eq!(d["acked_ids"], durable["sent"], "every message acked: {durable}");
        match confirm {
            true => assert_eq!(d["ack_answers"], d["ack_frames"], "every ACK answered: {durable}"),
            false => assert_eq!(d["ack_answers"], 0, "no ACK asked for an answer: {durable}"),
        }
        let answered = &durable["answer_latency"];
        assert_eq!(
            answered["count"].as_u64().unwrap() * batch.parse::<u64>().unwrap(),
            durable["sent"].as_u64().unwrap(),
            "{durable}"
        );
        assert_eq!((&d["errors"], &d["out_of_order"]), (&0.into(), &0.into()), "{durable}");
    }

    // Plain and durable pushes in alternating phases of one run (after a
    // warm-up pair). A phase's CPU is read in /proc's 10 ms ticks, so only
    // the durable side, 400 pushes here, is sure to measure above zero.
    let args = ["unicast", "--persist", "--rate", "200", "--duration", "4", "--alternate", "1"];
    let both = bench(&server, &config, &args).await;
    let c = &both["compare"];
    assert_eq!(c["pair_ratios"].as_array().map(Vec::len), Some(2), "2 measured pairs of 1 s phases in 4 s: {both}");
    for kind in ["plain", "durable"] {
        let pushes = c[format!("{kind}_pushes")].as_u64().unwrap();
        assert!((300..=500).contains(&pushes), "~400 {kind} pushes in 2 phases of 1 s at 200/s: {both}");
    }
    assert!(c["durable_cpu_us_per_push"].as_f64().unwrap() > 0.0, "{both}");
    assert!(c["plain_answer_latency"]["count"].as_u64().unwrap() > 0, "{both}");
    assert_eq!(both["sent"], c["durable_pushes"], "the report's pushes are the durable ones: {both}");
    assert_eq!(both["missing"], 0, "every push of either kind arrived: {both}");
    // Warm-up included: every durable message that arrived was acked.
    assert_eq!(both["durable"]["acked_ids"], both["latency"]["count"], "every durable message acked: {both}");
    assert_eq!(both["durable"]["out_of_order"], 0, "{both}");

    let args = ["replay", "--rounds", "2", "--messages", "120", "--batch", "50"];
    let replay = bench(&server, &config, &args).await;
    assert_eq!(replay["ops"], 240, "2 rounds x 120 replayed messages: {replay}");
    let r = &replay["replay"];
    assert_eq!(r["synced_ms"].as_array().map(Vec::len), Some(2), "{replay}");
    assert!(r["synced_max_ms"].as_f64().unwrap() > 0.0, "{replay}");
    assert!(r["cpu_us_per_replayed_message"].is_number(), "{replay}");
}

/// Durations, rates and sizes are checked when the command line is parsed:
/// exit 2 with a usage error, never a panic in the middle of a run.
#[tokio::test]
async fn out_of_range_arguments_are_usage_errors() {
    let cases: &[&[&str]] = &[
        &["hold", "--hold-secs=-1"],
        &["hold", "--hold-secs", "nan"],
        &["rpc", "--duration", "nan"],
        &["rpc", "--duration", "1e300"],
        &["rpc", "--in-flight", "18446744073709551615"],
        &["rpc", "--in-flight", "0"],
        &["unicast", "--duration", "inf"],
        &["unicast", "--rate", "0"],
        &["unicast", "--rate", "1e-300"],
        &["unicast", "--rate", "inf"],
        &["unicast", "--batch", "0"],
        &["unicast", "--payload-bytes", "18446744073709551615"],
        &["fanout", "--payload-bytes", "18446744073709551615"],
        &["http-floor", "--rate", "inf"],
        &["http-floor", "--rate=-5"],
        &["ws-floor", "--rate", "1e300"],
        &["ws-floor", "--duration", "86401"],
        &["hold", "--connections", "18446744073709551615"],
        &["churn", "--rounds", "0"],
        &["churn", "--rounds", "100001"],
        &["churn", "--settle-secs", "nan"],
        &["unicast", "--persist", "--rate", "1e7"],
        &["unicast", "--persist", "--alternate", "0.5"],
        &["unicast", "--persist", "--alternate", "3601"],
        &["replay", "--rounds", "0"],
        &["replay", "--messages", "0"],
        &["replay", "--messages", "100001"],
        &["replay", "--batch", "0"],
        &["replay", "--payload-bytes", "65521"],
    ];
    for args in cases {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .arg("bench")
            .args(*args)
            // Nothing listens here: a run that got past parsing fails differently.
            .args(["--url", "ws://127.0.0.1:9/ws", "--api", "http://127.0.0.1:9"])
            .output()
            .await
            .expect("run pushgate bench");
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("invalid value") && !err.contains("panicked"), "{args:?}: {err}");
    }
}
