//! {{name}}: a Nimbus handler that classifies text.
//!
//! In: `text/plain` (the whole body is one text) or JSON, `{"text": "..."}`
//! or `{"text": ["...", "..."]}`. Out: JSON, `{"label": 1, "probability":
//! 0.99}` for one text, a list of those for a list.
//!
//! The tokenizer runs here, in the guest; the two graphs run on the host's
//! ONNX Runtime. Per request: tokenize (`model/tokenizer.json`), embed every
//! token (`model/encoder.onnx`), pool the tokens into one vector per text,
//! classify the vectors (`model/head.onnx`). model/README.md has the details.

use nimbus_sdk::{Error, Handler, JSON, Model, Request, Response, Result, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use tokenizers::{Encoding, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

const TEXT: &str = "text/plain";
/// Longest input in tokens when tokenizer.json does not set one (BERT-style
/// encoders take at most 512 positions).
const MAX_TOKENS: usize = 512;

struct TextClassifier {
    tokenizer: Tokenizer,
    encoder: Model,
    head: Model,
}

/// `{"text": ...}`: one text or a list.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(untagged)]
enum Texts {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Body {
    text: Texts,
}

#[derive(Debug, PartialEq, Serialize)]
struct Class {
    /// The head's `label` output (for the sentiment example: 1 positive, -1 negative).
    label: i64,
    /// The head's probability for that label.
    probability: f32,
}

impl Handler for TextClassifier {
    /// Runs once at deploy time; the state it builds is snapshotted, so the
    /// tokenizer is parsed once, not per request.
    fn init() -> Result<Self> {
        let mut tokenizer =
            Tokenizer::from_file("/model/tokenizer.json").map_err(|e| Error::failed(format!("tokenizer.json: {e}")))?;
        // Pad a batch to its longest text, not to a fixed length: short texts stay cheap.
        let padding = tokenizer.get_padding().cloned().unwrap_or_default();
        tokenizer.with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..padding }));
        if tokenizer.get_truncation().is_none() {
            let truncation = TruncationParams { max_length: MAX_TOKENS, ..Default::default() };
            tokenizer.with_truncation(Some(truncation)).map_err(Error::failed)?;
        }
        Ok(TextClassifier { tokenizer, encoder: Model::load("encoder")?, head: Model::load("head")? })
    }

    fn handle(&self, request: Request) -> Result<Response> {
        request.negotiate(&[JSON])?;
        match read_texts(&request)? {
            Texts::One(text) => Response::json(&self.classify(vec![text])?[0]),
            Texts::Many(texts) => Response::json(&self.classify(texts)?),
        }
    }
}

impl TextClassifier {
    fn classify(&self, texts: Vec<String>) -> Result<Vec<Class>> {
        let batch = texts.len() as u32;
        let encodings = self.tokenizer.encode_batch(texts, true).map_err(Error::bad_input)?;
        let shape = [batch, encodings[0].len() as u32];
        let ids = token_column(&encodings, Encoding::get_ids);
        let mask = token_column(&encodings, Encoding::get_attention_mask);
        let types = token_column(&encodings, Encoding::get_type_ids);
        let hidden = self
            .encoder
            .run([
                ("input_ids", Tensor::new(&shape, &ids)?),
                ("attention_mask", Tensor::new(&shape, &mask)?),
                // Remove this input for encoders without one (DistilBERT, RoBERTa).
                ("token_type_ids", Tensor::new(&shape, &types)?),
            ])?
            .get::<f32>("last_hidden_state")?;
        let (embeddings, width) = mean_pool(&hidden, &mask)?;
        let outputs = self.head.run([("input", Tensor::new(&[batch, width], &embeddings)?)])?;
        let labels = outputs.get::<i64>("label")?;
        let probabilities = outputs.get::<f32>("probabilities")?;
        Ok(labels
            .data
            .into_iter()
            .zip(probabilities.rows())
            .map(|(label, p)| Class { label, probability: top(p) })
            .collect())
    }
}

/// The request's texts; a JSON list must not be empty.
fn read_texts(request: &Request) -> Result<Texts> {
    let texts = match request.expect_content_type(&[TEXT, JSON])? {
        TEXT => Texts::One(request.text()?.to_owned()),
        _ => request.json::<Body>()?.text,
    };
    if texts == Texts::Many(vec![]) {
        return Err(Error::bad_input(r#"no texts: send {"text": "..."} or {"text": ["...", "..."]}"#));
    }
    Ok(texts)
}

/// One of the tokenizer's per-token columns for the whole batch, row after
/// row, as the int64 the encoder takes.
fn token_column(encodings: &[Encoding], column: fn(&Encoding) -> &[u32]) -> Vec<i64> {
    encodings.iter().flat_map(column).map(|&x| i64::from(x)).collect()
}

/// One vector per text from the encoder's `[texts, tokens, width]` states:
/// the mean of its real tokens (mask 1, not padding), scaled to length 1, as
/// sentence-transformers models are trained. Scaling makes the mean's
/// divisor irrelevant, so the sum is enough. Returns the vectors and `width`.
fn mean_pool(hidden: &TensorData<f32>, mask: &[i64]) -> Result<(Vec<f32>, u32)> {
    let &[_, tokens, width] = hidden.shape.as_slice() else {
        return Err(Error::failed(format!("encoder states have shape {:?}; expected 3 dimensions", hidden.shape)));
    };
    let width_usize = width as usize;
    let mut pooled = Vec::with_capacity(hidden.data.len() / tokens.max(1) as usize);
    for (states, mask) in hidden.data.chunks(tokens as usize * width_usize).zip(mask.chunks(tokens as usize)) {
        let mut sum = vec![0f32; width_usize];
        for (state, _) in states.chunks(width_usize).zip(mask).filter(|&(_, &m)| m == 1) {
            sum.iter_mut().zip(state).for_each(|(s, x)| *s += x);
        }
        let length = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
        pooled.extend(sum.iter().map(|x| if length > 0.0 { x / length } else { 0.0 }));
    }
    Ok((pooled, width))
}

/// The highest probability in a row: the predicted label's.
fn top(probabilities: &[f32]) -> f32 {
    probabilities.iter().copied().reduce(f32::max).unwrap_or(0.0)
}

nimbus_sdk::export_handler!(TextClassifier);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_text_and_json() {
        let one = |s: &str| Texts::One(s.into());
        assert_eq!(read_texts(&Request::new("text/plain", "I love it.\nReally.")).unwrap(), one("I love it.\nReally."));
        assert_eq!(read_texts(&Request::new("", "no content type")).unwrap(), one("no content type"));
        assert_eq!(read_texts(&Request::new("application/json", r#"{"text": "hi"}"#)).unwrap(), one("hi"));
        let many = read_texts(&Request::new("application/json", r#"{"text": ["a", "b"]}"#)).unwrap();
        assert_eq!(many, Texts::Many(vec!["a".into(), "b".into()]));
        assert!(matches!(read_texts(&Request::new("application/json", r#"{"text": []}"#)), Err(Error::BadInput(_))));
        assert!(matches!(read_texts(&Request::new("application/json", r#"{"texts": "a"}"#)), Err(Error::BadInput(_))));
        assert!(matches!(read_texts(&Request::new("image/png", "")), Err(Error::UnsupportedMediaType(_))));
    }

    #[test]
    fn pooling_skips_padding_and_normalizes() {
        // Two texts, three token slots, width 2; the second text has one padding slot.
        let hidden = TensorData {
            shape: vec![2, 3, 2],
            data: vec![3.0, 0.0, 1.0, 4.0, -1.0, 0.0, 0.0, 2.0, 0.0, 1.0, 100.0, 100.0],
        };
        let (pooled, width) = mean_pool(&hidden, &[1, 1, 1, 1, 1, 0]).unwrap();
        assert_eq!(width, 2);
        // Text 1: sum (3, 4), length 5. Text 2: sum (0, 3), length 3; the padding's 100s are ignored.
        assert_eq!(pooled, vec![0.6, 0.8, 0.0, 1.0]);
        assert!(mean_pool(&TensorData { shape: vec![1, 2], data: vec![0.0; 2] }, &[1]).is_err());
    }

    #[test]
    fn answers_are_label_and_top_probability() {
        assert_eq!(top(&[0.1, 0.7, 0.2]), 0.7);
        let class = Class { label: 1, probability: top(&[0.25, 0.75]) };
        assert_eq!(Response::json(&class).unwrap().body, br#"{"label":1,"probability":0.75}"#);
    }
}
