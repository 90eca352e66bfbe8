//! Digits: scikit-learn's 8x8 handwritten digits, classified by a random
//! forest. Like SageMaker's scikit-learn container: `text/csv` rows of 64
//! pixel intensities (0-16) in, one JSON prediction per row out.

use nimbus_sdk::{CSV, Error, Handler, JSON, JSON_LINES, Model, Request, Response, Result, Tensor};
use serde::Serialize;

const PIXELS: usize = 64;

struct Digits {
    forest: Model,
}

#[derive(Serialize)]
struct Prediction {
    predicted_label: i64,
    probability: f32,
}

impl Handler for Digits {
    fn init() -> Result<Self> {
        Ok(Digits { forest: Model::load("digits")? })
    }

    fn handle(&self, request: Request) -> Result<Response> {
        request.expect_content_type(&[CSV])?;
        let accept = request.negotiate(&[JSON, JSON_LINES])?;
        let rows = request.csv_rows()?;
        if let Some((i, row)) = rows.iter().enumerate().find(|(_, r)| r.len() != PIXELS) {
            return Err(Error::bad_input(format!("row {} has {} values; expected {PIXELS}", i + 1, row.len())));
        }
        if rows.is_empty() {
            return Err(Error::bad_input("no rows: send CSV with 64 numbers per line"));
        }
        let input = Tensor::new(&[rows.len() as u32, PIXELS as u32], &rows.concat())?;
        let outputs = self.forest.run([("input", input)])?;
        let labels = outputs.get::<i64>("label")?;
        let probabilities = outputs.get::<f32>("probabilities")?;
        let predictions = labels.data.iter().zip(probabilities.rows()).map(|(&label, p)| Prediction {
            predicted_label: label,
            probability: p.iter().copied().fold(0.0, f32::max),
        });
        match accept {
            JSON => Response::json(&predictions.collect::<Vec<_>>()),
            _ => Response::json_lines(predictions),
        }
    }
}

nimbus_sdk::export_handler!(Digits);
