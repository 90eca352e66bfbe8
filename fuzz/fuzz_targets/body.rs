//! The SDK's request body helpers and its Open Inference Protocol decoder
//! on arbitrary bodies and headers: a value or a `bad_input` error, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nimbus_sdk::Request;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let content_type = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let accept = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = parts.next().unwrap_or_default().to_vec();
    let mut request = Request::new(&content_type, body);
    request.accept = accept;
    let _ = nimbus_sdk::oip::decode(&request);
    let _ = request.text();
    let _ = request.csv_rows();
    let _ = request.json_lines::<serde_json::Value>();
    let _ = request.json::<serde_json::Value>();
    let _ = request.expect_content_type(&["text/csv", "application/json"]);
    let _ = request.negotiate(&["application/json", "text/csv"]);
});
