//! Dynamic batching against a real server: the digits handler deployed
//! twice, with and without batching, and concurrent callers whose answers
//! must be exactly what the unbatched function says for the same rows;
//! graphs that cannot batch refused at deploy; a caller whose model call is
//! refused failing alone among batched ones.

use nimbus_tests::{Server, hostile_model, model_dir, wasm};
use std::sync::Arc;

fn start() -> (tempfile::TempDir, Arc<Server>) {
    wasm("digits"); // builds the guests once
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    (dir, Arc::new(server))
}

/// `rows` CSV rows of 64 pixels, different for each `seed`.
fn csv(rows: usize, seed: usize) -> String {
    let row = |r: usize| {
        let pixels: Vec<String> = (0..64).map(|i| ((i * 7 + r * 3 + seed * 13) % 17).to_string()).collect();
        pixels.join(",")
    };
    (0..rows).map(row).collect::<Vec<_>>().join("\n")
}

/// Sends every request from `clients` threads at once; the answers in
/// request order.
fn concurrently(s: &Arc<Server>, name: &str, requests: &[String], clients: usize) -> Vec<(u16, String)> {
    let requests = Arc::new(requests.to_vec());
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (s, requests, name) = (s.clone(), requests.clone(), name.to_owned());
            std::thread::spawn(move || {
                let mine = (c..requests.len()).step_by(clients);
                mine.map(|i| {
                    let a = s.invoke(&name, "text/csv", &requests[i]);
                    (i, (a.status, a.body))
                })
                .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut answers: Vec<(usize, (u16, String))> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, a)| a).collect()
}

/// The same labels, and probabilities equal up to float rounding: ONNX
/// Runtime's tree ensembles sum in another order for another number of rows.
fn same_predictions(got: &(u16, String), want: &(u16, String)) -> bool {
    let parse = |body: &str| -> Vec<(i64, f64)> {
        let rows: Vec<serde_json::Value> = serde_json::from_str(body).unwrap_or_default();
        rows.iter().map(|r| (r["predicted_label"].as_i64().unwrap(), r["probability"].as_f64().unwrap())).collect()
    };
    let (a, b) = (parse(&got.1), parse(&want.1));
    got.0 == want.0
        && a.len() == b.len()
        && !a.is_empty()
        && a.iter().zip(&b).all(|(x, y)| x.0 == y.0 && (x.1 - y.1).abs() < 1e-5)
}

#[test]
fn batched_callers_get_exactly_their_own_rows() {
    let (_dir, s) = start();
    s.deploy("plain", "digits", "digits", &[]);
    s.deploy("batched", "digits", "digits", &["--max-batch-size", "256", "--max-batch-delay-us", "2000"]);
    let describe = s.cli(&["describe", "batched"]);
    let text = String::from_utf8_lossy(&describe.stdout);
    assert!(text.contains("batching:         up to 256 rows per model run"), "{text}");
    let plain = String::from_utf8_lossy(&s.cli(&["describe", "plain"]).stdout).into_owned();
    assert!(plain.contains("batching:         off"), "{plain}");

    // Requests of 1 to 120 rows: enough work per run that runs overlap.
    let requests: Vec<String> = (0..96).map(|i| csv([1, 2, 7, 40, 120, 3][i % 6], i)).collect();
    let expected: Vec<(u16, String)> = requests
        .iter()
        .map(|r| {
            let a = s.invoke("plain", "text/csv", r);
            (a.status, a.body)
        })
        .collect();
    assert!(expected.iter().all(|(status, _)| *status == 200), "{expected:?}");
    for round in 0..2 {
        let answers = concurrently(&s, "batched", &requests, 16);
        for (i, (got, want)) in answers.iter().zip(&expected).enumerate() {
            let rows = requests[i].lines().count();
            assert!(same_predictions(got, want), "round {round}, request {i} ({rows} rows):\n{got:?}\n{want:?}");
        }
    }
    // Runs were merged, and the metrics say so.
    let batches = s.metric("nimbus_batch_size_count", "batched");
    let callers = s.metric("nimbus_batch_size_sum", "batched");
    assert!(batches > 0.0 && callers == 192.0, "{batches} batches of {callers} callers");
    assert!(batches < callers, "no two model calls were merged ({batches} batches)");
    assert!(s.metric("nimbus_batch_wait_seconds_count", "batched") == 192.0);
    let metrics = s.http("GET", "/metrics", Some(&s.token), &[], b"").body;
    assert!(!metrics.contains("nimbus_batch_size_count{function=\"plain\""), "no batch series without batching");
}

#[test]
fn a_model_call_that_is_refused_fails_alone() {
    let (_dir, s) = start();
    s.deploy("h", "hostile", "digits", &["--max-batch-size", "64", "--max-concurrency", "32"]);
    let alone = s.invoke("h", "text/plain", "digits:5");
    assert_eq!(alone.status, 200, "{}", alone.body);
    let requests: Vec<String> =
        (0..64).map(|i| if i % 4 == 0 { "shape".to_owned() } else { format!("digits:{}", 1 + i % 5) }).collect();
    let threads: Vec<_> = requests
        .chunks(4)
        .map(|chunk| {
            let (s, chunk) = (s.clone(), chunk.to_vec());
            std::thread::spawn(move || {
                chunk.iter().map(|r| (r.clone(), s.invoke("h", "text/plain", r))).collect::<Vec<_>>()
            })
        })
        .collect();
    for (request, answer) in threads.into_iter().flat_map(|t| t.join().unwrap()) {
        if request == "shape" {
            assert!(
                answer.status >= 400 && answer.body.contains("does not accept"),
                "{}: {}",
                answer.status,
                answer.body
            );
        } else {
            assert_eq!(answer.status, 200, "{request}: {}", answer.body);
            let rows: usize = request["digits:".len()..].parse().unwrap();
            assert_eq!(answer.body.matches(',').count() + 1, rows, "{request}: {}", answer.body);
        }
    }
}

#[test]
fn graphs_that_cannot_batch_are_refused_at_deploy() {
    let (_dir, s) = start();
    // `cos`: a graph whose input is a fixed [1] shape, with no batch dimension.
    let out = s.try_deploy("cos", "hostile", &hostile_model("constant-of-shape"), &["--max-batch-size", "8"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("batching: graph `model` cannot batch") && err.contains("fixed first dimension"), "{err}");
    // The same graph deploys without batching; bad settings say what is allowed.
    assert!(s.try_deploy("cos", "hostile", &hostile_model("constant-of-shape"), &[]).status.success());
    let out = s.try_deploy("d", "digits", &model_dir("digits"), &["--max-batch-size", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("max_batch_size must be between 2 and 1024"), "{err}");
}
