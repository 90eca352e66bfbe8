//! skl2onnx and onnxmltools end a classifier with a ZipMap by default: its
//! output is a sequence (one per row) of maps from class to probability,
//! which wasi-nn cannot carry. It is turned back into the `[rows, classes]`
//! float tensor the ZipMap was given, columns in key order (ONNX Runtime's
//! maps iterate sorted, and the deploy reports the classes in that order), so
//! a model exported with default options serves as it is.

use super::tensor::{OutputError, bytes_of};
use super::{ElementType, Tensor};
use ort::tensor::TensorElementType;
use ort::value::{DynValue, DynValueTypeMarker, ValueType};

/// The `[rows, classes]` FP32 tensor of a ZipMap's output, within `limit` bytes.
pub(super) fn to_tensor(value: &DynValue, limit: &mut u64) -> Result<Tensor, OutputError> {
    let unsupported = |e: ort::Error| OutputError::Unsupported(e.to_string());
    let key = match value.dtype() {
        ValueType::Sequence(element) => match element.as_ref() {
            ValueType::Map { key, value: TensorElementType::Float32 } => *key,
            other => return Err(OutputError::Unsupported(format!("output is a sequence of {other}, not a tensor"))),
        },
        other => return Err(OutputError::Unsupported(format!("output is a {other}, not a tensor"))),
    };
    let maps =
        value.try_extract_sequence::<DynValueTypeMarker>(&ort::memory::Allocator::default()).map_err(unsupported)?;
    let rows = u32::try_from(maps.len()).map_err(|_| OutputError::TooLarge)?;
    let mut data = Vec::new();
    let mut columns = None;
    for map in &maps {
        let row = match key {
            TensorElementType::Int64 => sorted_values(map.try_extract_key_values::<i64, f32>().map_err(unsupported)?),
            TensorElementType::String => {
                sorted_values(map.try_extract_key_values::<String, f32>().map_err(unsupported)?)
            }
            other => return Err(OutputError::Unsupported(format!("a map keyed by {other} is not a ZipMap"))),
        };
        let width = *columns.get_or_insert(row.len());
        if row.len() != width {
            return Err(OutputError::Unsupported(format!("ZipMap rows differ in width ({width} and {})", row.len())));
        }
        if data.is_empty() {
            let dims = [rows, u32::try_from(width).map_err(|_| OutputError::TooLarge)?];
            let bytes = bytes_of(&dims, ElementType::F32).ok_or(OutputError::TooLarge)?;
            *limit = limit.checked_sub(bytes).ok_or(OutputError::TooLarge)?;
            data.reserve_exact(bytes as usize);
        }
        data.extend(row.iter().flat_map(|p| p.to_le_bytes()));
    }
    let width = u32::try_from(columns.unwrap_or(0)).map_err(|_| OutputError::TooLarge)?;
    Ok(Tensor { dims: vec![rows, width], ty: ElementType::F32, data })
}

/// A row's probabilities in key order.
fn sorted_values<K: Ord>(mut pairs: Vec<(K, f32)>) -> Vec<f32> {
    pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    pairs.into_iter().map(|(_, v)| v).collect()
}
