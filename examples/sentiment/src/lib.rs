//! Sentiment, the SageMaker Serverless launch demo on Nimbus. Each JSON line
//! `{"features": ["I love this product!"]}` yields one line per sentence,
//! `{"predicted_label": 1, "probability": 0.99}` (1 positive, -1 negative).
//! Tokenization runs here in the guest; the MiniLM encoder and the logistic
//! head run on the host's ONNX Runtime through wasi-nn.

use nimbus_sdk::{Error, Handler, JSON, JSON_LINES, Model, Request, Response, Result, Tensor, batch};
use serde::{Deserialize, Serialize};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

const DIM: usize = 384;

struct Sentiment {
    tokenizer: Tokenizer,
    encoder: Model,
    head: Model,
}

#[derive(Deserialize)]
struct Input {
    features: Vec<String>,
}

#[derive(Serialize)]
struct Prediction {
    predicted_label: i64,
    probability: f32,
}

impl Handler for Sentiment {
    fn init() -> Result<Self> {
        let mut tokenizer = Tokenizer::from_file("/model/tokenizer.json").map_err(Error::failed)?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: 256, ..Default::default() }))
            .map_err(Error::failed)?;
        Ok(Sentiment { tokenizer, encoder: Model::load("encoder")?, head: Model::load("head")? })
    }

    fn handle(&self, request: Request) -> Result<Response> {
        let inputs: Vec<Input> = match request.expect_content_type(&[JSON_LINES, JSON])? {
            JSON => vec![request.json()?],
            _ => request.json_lines()?,
        };
        let accept = request.negotiate(&[JSON_LINES, JSON])?;
        let sentences: Vec<String> = inputs.into_iter().flat_map(|i| i.features).collect();
        if sentences.is_empty() {
            return Err(Error::bad_input(r#"no sentences: send {"features": ["some text"]}"#));
        }
        let predictions = self.classify(sentences)?;
        match accept {
            JSON => Response::json(&predictions),
            _ => Response::json_lines(predictions),
        }
    }
}

impl Sentiment {
    fn classify(&self, sentences: Vec<String>) -> Result<Vec<Prediction>> {
        let encodings = self.tokenizer.encode_batch(sentences, true).map_err(Error::bad_input)?;
        let (rows, longest) = (encodings.len(), encodings[0].len());
        let ids: Vec<i64> = encodings.iter().flat_map(|e| e.get_ids()).map(|&x| x.into()).collect();
        let mask: Vec<i64> = encodings.iter().flat_map(|e| e.get_attention_mask()).map(|&x| x.into()).collect();
        // With batching on, pad to one of a few lengths so that requests of
        // similar lengths share the encoder's runs; masked positions do not
        // change the pooled embedding.
        let seq = if batch::max_batch_size().is_some() { batch::length(longest, &batch::LENGTHS) } else { longest };
        let (ids, mask) = (batch::pad_rows(&ids, longest, seq, 0), batch::pad_rows(&mask, longest, seq, 0));
        let shape = [rows as u32, seq as u32];
        let hidden = self
            .encoder
            .run([
                ("input_ids", Tensor::new(&shape, &ids)?),
                ("attention_mask", Tensor::new(&shape, &mask)?),
                ("token_type_ids", Tensor::new(&shape, &vec![0i64; ids.len()])?),
            ])?
            .get::<f32>("last_hidden_state")?;
        let embeddings = mean_pool(&hidden.data, &mask, seq);
        let outputs = self.head.run([("input", Tensor::new(&[rows as u32, DIM as u32], &embeddings)?)])?;
        let labels = outputs.get::<i64>("label")?;
        let probabilities = outputs.get::<f32>("probabilities")?;
        Ok(labels
            .data
            .iter()
            .zip(probabilities.rows())
            .map(|(&predicted_label, p)| Prediction {
                predicted_label,
                probability: p.iter().copied().fold(0.0, f32::max),
            })
            .collect())
    }
}

/// Sentence embeddings: token states averaged over the attention mask, then
/// L2-normalized, as sentence-transformers does for all-MiniLM-L6-v2.
fn mean_pool(hidden: &[f32], mask: &[i64], seq: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(hidden.len() / seq);
    for (states, mask) in hidden.chunks(seq * DIM).zip(mask.chunks(seq)) {
        let mut sum = [0f32; DIM];
        let mut count = 0f32;
        for (token, _) in states.chunks(DIM).zip(mask).filter(|(_, m)| **m != 0) {
            sum.iter_mut().zip(token).for_each(|(s, t)| *s += t);
            count += 1.0;
        }
        sum.iter_mut().for_each(|s| *s /= count.max(1e-9));
        let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        out.extend(sum.iter().map(|x| x / norm));
    }
    out
}

nimbus_sdk::export_handler!(Sentiment);
