//! {{name}}: a Nimbus handler for a tabular model (scikit-learn, XGBoost,
//! LightGBM... exported to ONNX).
//!
//! In: rows of numbers, as headerless `text/csv` (one row per line) or JSON
//! (`[[5.1, 3.5], [6.2, 2.9]]` or `{"instances": [[5.1, 3.5], ...]}`).
//! Out: one JSON object per row with whatever the graph produced, e.g.
//! `[{"label": 0, "probabilities": [0.97, 0.02, 0.01]}]`.
//!
//! The graph is `model/model.onnx`: the host loads it as the graph `model`.
//! See model/README.md for the inputs and outputs this file expects.

use nimbus_sdk::{CSV, Error, Handler, JSON, Model, Request, Response, Result, Tensor};
use serde::{Deserialize, Serialize};

/// The graph's input: f32 `[rows, features]`.
const INPUT: &str = "input";
/// The outputs read when the graph has them (skl2onnx's names): a
/// classifier's `label` (int64 `[rows]`) and `probabilities` (f32
/// `[rows, classes]`), a regressor's `variable` (f32 `[rows, targets]`).
const LABEL: &str = "label";
const PROBABILITIES: &str = "probabilities";
const VALUE: &str = "variable";

struct Tabular {
    model: Model,
}

impl Handler for Tabular {
    /// Runs once at deploy time; a missing `model.onnx` fails the deploy.
    fn init() -> Result<Self> {
        Ok(Tabular { model: Model::load("model")? })
    }

    fn handle(&self, request: Request) -> Result<Response> {
        request.negotiate(&[JSON])?;
        let rows = read_rows(&request)?;
        let features = check_width(&rows)?;
        let input = Tensor::new(&[rows.len() as u32, features as u32], &rows.concat())?;
        let outputs = self.model.run([(INPUT, input)])?;
        // `get` fails for an output the graph lacks: each one is optional.
        let labels = outputs.get::<i64>(LABEL).ok().map(|t| t.data);
        let probabilities = outputs.get::<f32>(PROBABILITIES).ok().map(|t| t.rows().map(<[f32]>::to_vec).collect());
        let values = outputs.get::<f32>(VALUE).ok().map(|t| t.rows().map(<[f32]>::to_vec).collect());
        if labels.is_none() && probabilities.is_none() && values.is_none() {
            return Err(Error::failed(format!(
                "the graph has none of the outputs `{LABEL}`, `{PROBABILITIES}`, `{VALUE}`: name yours in src/lib.rs"
            )));
        }
        Response::json(&predictions(rows.len(), labels, probabilities, values))
    }
}

/// The JSON bodies [`read_rows`] accepts.
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonRows {
    Rows(Vec<Vec<f32>>),
    Instances { instances: Vec<Vec<f32>> },
}

/// The request's rows, from CSV or JSON (no `Content-Type` means CSV).
fn read_rows(request: &Request) -> Result<Vec<Vec<f32>>> {
    match request.expect_content_type(&[CSV, JSON])? {
        CSV => request.csv_rows(),
        _ => match request.json()? {
            JsonRows::Rows(rows) | JsonRows::Instances { instances: rows } => Ok(rows),
        },
    }
}

/// Every row must have the same number of features; returns that number.
fn check_width(rows: &[Vec<f32>]) -> Result<usize> {
    let width = rows.first().map(Vec::len).filter(|&w| w > 0).ok_or_else(|| Error::bad_input("no rows to predict"))?;
    match rows.iter().position(|row| row.len() != width) {
        Some(i) => Err(Error::bad_input(format!("row {} has {} values; row 1 has {width}", i + 1, rows[i].len()))),
        None => Ok(width),
    }
}

/// One row's answer; absent outputs are left out of the JSON.
#[derive(Debug, PartialEq, Serialize)]
struct Prediction {
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Vec<f32>>,
}

/// Regroups the graph's per-output columns into one [`Prediction`] per row.
fn predictions(
    rows: usize,
    labels: Option<Vec<i64>>,
    probabilities: Option<Vec<Vec<f32>>>,
    values: Option<Vec<Vec<f32>>>,
) -> Vec<Prediction> {
    (0..rows)
        .map(|i| Prediction {
            label: labels.as_ref().and_then(|l| l.get(i).copied()),
            probabilities: probabilities.as_ref().and_then(|p| p.get(i).cloned()),
            value: values.as_ref().and_then(|v| v.get(i).cloned()),
        })
        .collect()
}

nimbus_sdk::export_handler!(Tabular);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_csv_and_both_json_shapes() {
        let expected = vec![vec![1.0, 2.5], vec![3.0, -4.0]];
        assert_eq!(read_rows(&Request::new("text/csv", "1,2.5\n3, -4\n")).unwrap(), expected);
        assert_eq!(read_rows(&Request::new("", "1,2.5\n3,-4")).unwrap(), expected);
        assert_eq!(read_rows(&Request::new("application/json", "[[1, 2.5], [3, -4]]")).unwrap(), expected);
        assert_eq!(
            read_rows(&Request::new("application/json", r#"{"instances": [[1, 2.5], [3, -4]]}"#)).unwrap(),
            expected
        );
        assert!(matches!(read_rows(&Request::new("image/png", "")), Err(Error::UnsupportedMediaType(_))));
        assert!(matches!(read_rows(&Request::new("application/json", r#"{"rows": []}"#)), Err(Error::BadInput(_))));
    }

    #[test]
    fn rows_must_be_there_and_the_same_width() {
        assert_eq!(check_width(&[vec![0.0; 64], vec![1.0; 64]]), Ok(64));
        assert_eq!(check_width(&[vec![1.0, 2.0], vec![3.0]]), Err(Error::bad_input("row 2 has 1 values; row 1 has 2")));
        assert!(check_width(&[]).is_err());
        assert!(check_width(&[vec![]]).is_err());
    }

    #[test]
    fn predictions_keep_only_the_outputs_present() {
        let got = predictions(2, Some(vec![3, 7]), Some(vec![vec![0.9, 0.1], vec![0.2, 0.8]]), None);
        assert_eq!(got[1], Prediction { label: Some(7), probabilities: Some(vec![0.2, 0.8]), value: None });
        let json = String::from_utf8(Response::json(&got).unwrap().body).unwrap();
        assert_eq!(json, r#"[{"label":3,"probabilities":[0.9,0.1]},{"label":7,"probabilities":[0.2,0.8]}]"#);
        let regression = predictions(1, None, None, Some(vec![vec![151.5]]));
        assert_eq!(String::from_utf8(Response::json(&regression).unwrap().body).unwrap(), r#"[{"value":[151.5]}]"#);
    }
}
