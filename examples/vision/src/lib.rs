//! Vision: an ImageNet-shaped image classifier, MobileNetV2 at 224x224 with
//! 1000 classes. Like SageMaker's image containers: a JPEG or PNG body in,
//! the top five classes as JSON out. The model's weights are random
//! (scripts/make_models.py): it is the image-sized compute load for the
//! benchmarks, so its labels mean nothing; the pre-processing is the real
//! thing (decode, resize, ImageNet normalization, NCHW).

use image::ImageFormat;
use image::imageops::FilterType;
use nimbus_sdk::{Error, Handler, JSON, Model, Request, Response, Result, Tensor};
use serde::Serialize;

const JPEG: &str = "image/jpeg";
const PNG: &str = "image/png";
/// The model's input is SIDE x SIDE RGB.
const SIDE: u32 = 224;
/// How many classes a response lists.
const TOP: usize = 5;
/// ImageNet's per-channel statistics, which the model's inputs are normalized by.
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

struct Vision {
    mobilenet: Model,
}

#[derive(Serialize)]
struct Class {
    label: i64,
    probability: f32,
}

impl Handler for Vision {
    fn init() -> Result<Self> {
        Ok(Vision { mobilenet: Model::load("mobilenet_v2")? })
    }

    fn handle(&self, request: Request) -> Result<Response> {
        let content_type = request.expect_content_type(&[JPEG, PNG])?;
        request.negotiate(&[JSON])?;
        let format = if content_type == PNG { ImageFormat::Png } else { ImageFormat::Jpeg };
        let input = Tensor::new(&[1, 3, SIDE, SIDE], &pixels(&request.body, format, content_type)?)?;
        let probabilities = self.mobilenet.run([("input", input)])?.get::<f32>("probabilities")?;
        let mut classes: Vec<Class> =
            (0..).zip(probabilities.data).map(|(label, probability)| Class { label, probability }).collect();
        classes.sort_unstable_by(|a, b| b.probability.total_cmp(&a.probability));
        classes.truncate(TOP);
        Response::json(&classes)
    }
}

/// Decodes an image and turns it into the model's input: RGB, SIDE x SIDE
/// (resized only when it is not already), scaled to [0, 1], normalized per
/// channel, channels first.
fn pixels(body: &[u8], format: ImageFormat, content_type: &str) -> Result<Vec<f32>> {
    let image = image::load_from_memory_with_format(body, format)
        .map_err(|e| Error::bad_input(format!("cannot decode the body as {content_type}: {e}")))?
        .into_rgb8();
    let image = if image.dimensions() == (SIDE, SIDE) {
        image
    } else {
        image::imageops::resize(&image, SIDE, SIDE, FilterType::Triangle)
    };
    let plane = (SIDE * SIDE) as usize;
    let mut nchw = vec![0.0; 3 * plane];
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            nchw[c * plane + i] = (f32::from(pixel[c]) / 255.0 - MEAN[c]) / STD[c];
        }
    }
    Ok(nchw)
}

nimbus_sdk::export_handler!(Vision);
