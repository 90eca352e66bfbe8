//! {{name}}: a Nimbus handler that classifies images.
//!
//! In: a JPEG or PNG body. Out: the five likeliest classes as JSON,
//! `[{"class": 207, "label": "golden retriever", "probability": 0.83}, ...]`
//! (`label` only when `model/labels.txt` names the classes).
//!
//! Decoding and pre-processing run here, in the guest; the graph
//! (`model/model.onnx`, loaded by the host as `model`) runs on the host's
//! ONNX Runtime. model/README.md says what the graph must look like.

use image::DynamicImage;
use image::imageops::FilterType;
use nimbus_sdk::{Error, Handler, JSON, Model, Request, Response, Result, Tensor};
use serde::Serialize;

const JPEG: &str = "image/jpeg";
const PNG: &str = "image/png";
/// The graph's input, f32 `[1, 3, SIZE, SIZE]`, and its output, f32 `[1, classes]`.
const INPUT: &str = "input";
const OUTPUT: &str = "probabilities";
const SIZE: u32 = 224;
/// How many classes an answer lists.
const TOP: usize = 5;
/// The per-channel (R, G, B) mean and standard deviation the model was
/// trained with; these are ImageNet's, which most pretrained models use.
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

struct Classifier {
    model: Model,
    /// Class names, one per line of `model/labels.txt`; empty without one.
    labels: Vec<String>,
}

#[derive(Debug, PartialEq, Serialize)]
struct Class {
    class: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    probability: f32,
}

impl Handler for Classifier {
    /// Runs once at deploy time: checks the graph and reads the labels.
    fn init() -> Result<Self> {
        let labels = std::fs::read_to_string("/model/labels.txt").unwrap_or_default();
        Ok(Classifier { model: Model::load("model")?, labels: labels.lines().map(|l| l.trim().to_owned()).collect() })
    }

    fn handle(&self, request: Request) -> Result<Response> {
        request.expect_content_type(&[JPEG, PNG])?;
        request.negotiate(&[JSON])?;
        let input = Tensor::new(&[1, 3, SIZE, SIZE], &to_nchw(&decode(&request.body)?))?;
        let scores = self.model.run([(INPUT, input)])?.get::<f32>(OUTPUT)?;
        Response::json(&top_classes(&scores.data, &self.labels, TOP))
    }
}

/// Decodes the body; the format comes from its first bytes, not the header.
fn decode(body: &[u8]) -> Result<DynamicImage> {
    image::load_from_memory(body).map_err(|e| Error::bad_input(format!("cannot decode the body as JPEG or PNG: {e}")))
}

/// The model's input: scaled so the short side is SIZE, the centre cropped
/// to SIZE x SIZE, each channel scaled to [0, 1] and normalized, then laid
/// out channel after channel (NCHW).
fn to_nchw(image: &DynamicImage) -> Vec<f32> {
    let rgb = image.resize_to_fill(SIZE, SIZE, FilterType::Triangle).into_rgb8();
    (0..3).flat_map(|c| rgb.pixels().map(move |p| (f32::from(p[c]) / 255.0 - MEAN[c]) / STD[c])).collect()
}

/// The `k` highest-scoring classes, best first. Scores that are not already
/// probabilities (logits, from a graph without a final Softmax) go through
/// a softmax first.
fn top_classes(scores: &[f32], labels: &[String], k: usize) -> Vec<Class> {
    let sum: f32 = scores.iter().sum();
    let probabilities = if scores.iter().all(|s| (0.0..=1.0).contains(s)) && (sum - 1.0).abs() < 1e-3 {
        scores.to_vec()
    } else {
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f32 = exp.iter().sum();
        exp.iter().map(|e| e / total).collect()
    };
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
    order
        .into_iter()
        .take(k)
        .map(|class| Class { class, label: labels.get(class).cloned(), probability: probabilities[class] })
        .collect()
}

nimbus_sdk::export_handler!(Classifier);

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Rgb, RgbImage};

    #[test]
    fn decodes_png_and_refuses_other_bytes() {
        let mut png = std::io::Cursor::new(Vec::new());
        RgbImage::from_pixel(4, 3, Rgb([255, 0, 0])).write_to(&mut png, ImageFormat::Png).unwrap();
        let image = decode(png.get_ref()).unwrap();
        assert_eq!((image.width(), image.height()), (4, 3));
        assert!(matches!(decode(b"not an image"), Err(Error::BadInput(_))));
    }

    #[test]
    fn any_image_becomes_a_normalized_nchw_square() {
        let image = DynamicImage::ImageRgb8(RgbImage::from_pixel(40, 30, Rgb([255, 128, 0])));
        let nchw = to_nchw(&image);
        let plane = (SIZE * SIZE) as usize;
        assert_eq!(nchw.len(), 3 * plane);
        let expected = |c: usize, v: f32| (v / 255.0 - MEAN[c]) / STD[c];
        // A solid colour stays solid: each plane holds one value.
        assert!(nchw[..plane].iter().all(|&x| (x - expected(0, 255.0)).abs() < 1e-5));
        assert!(nchw[plane..2 * plane].iter().all(|&x| (x - expected(1, 128.0)).abs() < 1e-5));
        assert!(nchw[2 * plane..].iter().all(|&x| (x - expected(2, 0.0)).abs() < 1e-5));
    }

    #[test]
    fn top_classes_are_sorted_labelled_and_probabilities() {
        let labels = vec!["cat".to_owned(), "dog".to_owned()];
        let top = top_classes(&[0.2, 0.5, 0.3], &labels, 2);
        assert_eq!(top[0], Class { class: 1, label: Some("dog".into()), probability: 0.5 });
        assert_eq!(top[1], Class { class: 2, label: None, probability: 0.3 });
        let json = String::from_utf8(Response::json(&top).unwrap().body).unwrap();
        assert_eq!(json, r#"[{"class":1,"label":"dog","probability":0.5},{"class":2,"probability":0.3}]"#);
        // Logits: a softmax first; the order is the same.
        let top = top_classes(&[1.0, 3.0, -2.0], &[], 5);
        assert_eq!(top.iter().map(|c| c.class).collect::<Vec<_>>(), [1, 0, 2]);
        assert!((top.iter().map(|c| c.probability).sum::<f32>() - 1.0).abs() < 1e-5);
    }
}
