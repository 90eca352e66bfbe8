//! Request and response bodies in the formats SageMaker's containers speak:
//! JSON, JSON Lines and headerless numeric CSV in; JSON and JSON Lines out.
//! Every parse failure is an [`Error::BadInput`] that names the line and
//! what was wrong, because that message is what the caller sees.

use crate::bindings::nimbus::function::types::{Request as RawRequest, Response as RawResponse};
use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// `application/json`
pub const JSON: &str = "application/json";
/// `application/jsonlines`
pub const JSON_LINES: &str = "application/jsonlines";
/// `text/csv`
pub const CSV: &str = "text/csv";

/// One invocation's input.
#[derive(Debug, Clone)]
pub struct Request {
    /// The caller's `Content-Type` (media type only, without parameters),
    /// lowercase.
    pub content_type: String,
    /// The `Content-Type`'s parameters (`charset=utf-8` is
    /// `("charset", "utf-8")`): names lowercase, values unquoted, in order.
    pub content_type_params: Vec<(String, String)>,
    /// The caller's `Accept`, as sent (may list several types).
    pub accept: String,
    /// The raw body.
    pub body: Vec<u8>,
}

impl From<RawRequest> for Request {
    fn from(r: RawRequest) -> Self {
        let mut request = Request::new(&r.content_type, r.body);
        request.accept = r.accept;
        request
    }
}

/// `name=value` or `name="value"`; `None` for a part without `=`.
fn parameter(part: &str) -> Option<(String, String)> {
    let (name, value) = part.split_once('=')?;
    let value = value.trim();
    let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    Some((name.trim().to_ascii_lowercase(), value.to_owned()))
}

fn media_type(header: &str) -> &str {
    header.split(';').next().unwrap_or("").trim()
}

impl Request {
    /// A request as the host makes it, from a `Content-Type` header (with any
    /// parameters) and a body, accepting anything: for a handler's tests.
    pub fn new(content_type: &str, body: impl Into<Vec<u8>>) -> Request {
        Request {
            content_type: media_type(content_type).to_ascii_lowercase(),
            content_type_params: content_type.split(';').skip(1).filter_map(parameter).collect(),
            accept: "*/*".to_owned(),
            body: body.into(),
        }
    }

    /// The value of the `Content-Type` parameter `name` (case-insensitive).
    pub fn content_type_param(&self, name: &str) -> Option<&str> {
        self.content_type_params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str> {
        std::str::from_utf8(&self.body).map_err(|e| Error::bad_input(format!("body is not UTF-8: {e}")))
    }

    /// Fails with [`Error::UnsupportedMediaType`] unless the request's
    /// content type is one of `supported`; an empty content type counts as
    /// the first.
    pub fn expect_content_type(&self, supported: &[&'static str]) -> Result<&'static str> {
        if self.content_type.is_empty() {
            return Ok(supported[0]);
        }
        supported.iter().find(|s| s.eq_ignore_ascii_case(&self.content_type)).copied().ok_or_else(|| {
            Error::UnsupportedMediaType(format!(
                "`{}` is not supported; send one of: {}",
                self.content_type,
                supported.join(", ")
            ))
        })
    }

    /// Picks the first of `offered` that the request's `Accept` allows
    /// (`*/*`, `type/*` and an empty `Accept` allow anything), or fails with
    /// [`Error::NotAcceptable`].
    pub fn negotiate(&self, offered: &[&'static str]) -> Result<&'static str> {
        let accepted: Vec<&str> = self.accept.split(',').map(media_type).filter(|t| !t.is_empty()).collect();
        if accepted.is_empty() {
            return Ok(offered[0]);
        }
        for want in &accepted {
            for have in offered {
                let prefix_match = want.strip_suffix("/*").is_some_and(|p| have.split('/').next() == Some(p));
                if *want == "*/*" || prefix_match || want.eq_ignore_ascii_case(have) {
                    return Ok(have);
                }
            }
        }
        Err(Error::NotAcceptable(format!("cannot produce `{}`; accept one of: {}", self.accept, offered.join(", "))))
    }

    /// The body as one JSON value.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::bad_input(format!("invalid JSON body: {e}")))
    }

    /// The body as JSON Lines: one value per non-empty line.
    pub fn json_lines<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        self.text()?
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line).map_err(|e| Error::bad_input(format!("line {}: invalid JSON: {e}", i + 1)))
            })
            .collect()
    }

    /// The body as headerless numeric CSV: one row per non-empty line.
    pub fn csv_rows(&self) -> Result<Vec<Vec<f32>>> {
        self.text()?
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                line.split(',')
                    .enumerate()
                    .map(|(j, cell)| {
                        cell.trim().parse::<f32>().map_err(|_| {
                            Error::bad_input(format!(
                                "row {}, column {}: `{}` is not a number",
                                i + 1,
                                j + 1,
                                cell.trim()
                            ))
                        })
                    })
                    .collect()
            })
            .collect()
    }
}

/// One invocation's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The response's `Content-Type`.
    pub content_type: String,
    /// The raw body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response of any content type.
    pub fn bytes(content_type: &str, body: Vec<u8>) -> Self {
        Response { content_type: content_type.to_owned(), body }
    }

    /// One JSON document.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        let body = serde_json::to_vec(value).map_err(Error::failed)?;
        Ok(Response::bytes(JSON, body))
    }

    /// One JSON document per item, newline-terminated.
    pub fn json_lines<T: Serialize>(items: impl IntoIterator<Item = T>) -> Result<Self> {
        let mut body = Vec::new();
        for item in items {
            serde_json::to_writer(&mut body, &item).map_err(Error::failed)?;
            body.push(b'\n');
        }
        Ok(Response::bytes(JSON_LINES, body))
    }
}

impl From<Response> for RawResponse {
    fn from(r: Response) -> Self {
        RawResponse { content_type: r.content_type, body: r.body }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(content_type: &str, accept: &str, body: &str) -> Request {
        Request::from(RawRequest {
            content_type: content_type.into(),
            accept: accept.into(),
            body: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn content_type_parameters_and_case_are_ignored() {
        let r = request("Text/CSV; charset=utf-8", "", "");
        assert_eq!(r.expect_content_type(&[JSON, CSV]), Ok(CSV));
        assert_eq!(r.content_type_param("Charset"), Some("utf-8"));
        let r = request("a/b;x=1; Y = \"two\" ;junk", "", "");
        assert_eq!(r.content_type, "a/b");
        assert_eq!(r.content_type_params, [("x".into(), "1".into()), ("y".into(), "two".into())]);
        assert_eq!(r.content_type_param("z"), None);
        assert_eq!(request("", "", "").expect_content_type(&[JSON, CSV]), Ok(JSON));
        let err = request("image/png", "", "").expect_content_type(&[CSV]).unwrap_err();
        assert!(matches!(err, Error::UnsupportedMediaType(m) if m.contains("text/csv")));
    }

    #[test]
    fn accept_is_negotiated_in_order() {
        assert_eq!(request("", "", "").negotiate(&[JSON, JSON_LINES]), Ok(JSON));
        assert_eq!(request("", "*/*", "").negotiate(&[JSON, JSON_LINES]), Ok(JSON));
        assert_eq!(
            request("", "application/jsonlines, application/json", "").negotiate(&[JSON, JSON_LINES]),
            Ok(JSON_LINES)
        );
        assert_eq!(request("", "application/*;q=0.5", "").negotiate(&[JSON]), Ok(JSON));
        assert!(matches!(request("", "text/html", "").negotiate(&[JSON]), Err(Error::NotAcceptable(_))));
    }

    #[test]
    fn csv_and_json_lines_report_where_they_fail() {
        assert_eq!(request("", "", "1,2\n\n3, 4\n").csv_rows(), Ok(vec![vec![1.0, 2.0], vec![3.0, 4.0]]));
        let err = request("", "", "1,2\n3,x").csv_rows().unwrap_err();
        assert_eq!(err, Error::BadInput("row 2, column 2: `x` is not a number".into()));
        let lines: Vec<serde_json::Value> = request("", "", "{\"a\":1}\n\n{\"a\":2}\n").json_lines().unwrap();
        assert_eq!(lines.len(), 2);
        let err = request("", "", "{\"a\":1}\n{oops").json_lines::<serde_json::Value>().unwrap_err();
        assert!(matches!(err, Error::BadInput(m) if m.starts_with("line 2: invalid JSON")));
    }

    #[test]
    fn responses_carry_their_content_type() {
        let r = Response::json_lines([1, 2]).unwrap();
        assert_eq!((r.content_type.as_str(), r.body.as_slice()), (JSON_LINES, b"1\n2\n".as_slice()));
        assert_eq!(Response::json(&[1]).unwrap().content_type, JSON);
    }
}
