//! Tensors as wasi-nn carries them: dimensions, an element type and
//! little-endian bytes. Conversion to and from ONNX Runtime values is a
//! single copy each way and works for every element type without
//! per-type code paths.

use ort::tensor::TensorElementType;

/// The element types wasi-nn can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    /// IEEE half precision.
    F16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// bfloat16.
    BF16,
    /// Unsigned byte.
    U8,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
}

impl ElementType {
    /// Every element type wasi-nn can carry.
    pub const ALL: [ElementType; 7] = [
        ElementType::F16,
        ElementType::F32,
        ElementType::F64,
        ElementType::BF16,
        ElementType::U8,
        ElementType::I32,
        ElementType::I64,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ElementType::U8 => 1,
            ElementType::F16 | ElementType::BF16 => 2,
            ElementType::F32 | ElementType::I32 => 4,
            ElementType::F64 | ElementType::I64 => 8,
        }
    }

    pub(crate) fn to_ort(self) -> TensorElementType {
        match self {
            ElementType::F16 => TensorElementType::Float16,
            ElementType::F32 => TensorElementType::Float32,
            ElementType::F64 => TensorElementType::Float64,
            ElementType::BF16 => TensorElementType::Bfloat16,
            ElementType::U8 => TensorElementType::Uint8,
            ElementType::I32 => TensorElementType::Int32,
            ElementType::I64 => TensorElementType::Int64,
        }
    }

    /// The type that carries ONNX Runtime's `t` over wasi-nn: its own, or
    /// `u8` for `bool` (one byte each, 0 or 1).
    pub(crate) fn carrying(t: TensorElementType) -> Option<Self> {
        match t {
            TensorElementType::Bool => Some(ElementType::U8),
            t => Self::from_ort(t),
        }
    }

    pub(crate) fn from_ort(t: TensorElementType) -> Option<Self> {
        Some(match t {
            TensorElementType::Float16 => ElementType::F16,
            TensorElementType::Float32 => ElementType::F32,
            TensorElementType::Float64 => ElementType::F64,
            TensorElementType::Bfloat16 => ElementType::BF16,
            TensorElementType::Uint8 => ElementType::U8,
            TensorElementType::Int32 => ElementType::I32,
            TensorElementType::Int64 => ElementType::I64,
            _ => return None,
        })
    }
}

/// A dense tensor in wasi-nn's layout.
#[derive(Clone, PartialEq, Eq)]
pub struct Tensor {
    /// Dimensions, outermost first; empty for a scalar.
    pub dims: Vec<u32>,
    /// Element type.
    pub ty: ElementType,
    /// Row-major little-endian element bytes.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?} {:?}, {} bytes)", self.ty, self.dims, self.data.len())
    }
}

impl Tensor {
    /// Elements implied by the dimensions, or `None` if that overflows.
    pub fn len(&self) -> Option<u64> {
        elements(&self.dims)
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// The byte length the dimensions and type call for, or `None` if it
    /// does not fit in 64 bits (a hostile shape, never a real tensor).
    pub fn expected_bytes(&self) -> Option<u64> {
        bytes_of(&self.dims, self.ty)
    }

    /// An ONNX Runtime tensor of these bytes; `as_bool` makes a `u8`
    /// tensor a `bool` one (any non-zero byte is true).
    pub(crate) fn to_ort(&self, as_bool: bool) -> ort::Result<ort::value::DynTensor> {
        let shape: Vec<i64> = self.dims.iter().map(|&d| i64::from(d)).collect();
        let allocator = ort::memory::Allocator::default();
        let ty = if as_bool && self.ty == ElementType::U8 { TensorElementType::Bool } else { self.ty.to_ort() };
        let mut value = ort::value::DynTensor::new(&allocator, ty, shape)?;
        if !self.data.is_empty() {
            let target = value.data_ptr_mut().cast::<u8>();
            // SAFETY: ONNX Runtime allocated exactly `expected_bytes` for this
            // shape and type (a bool is one byte, as a u8), and the caller
            // checked `data` has that length.
            unsafe {
                std::ptr::copy_nonoverlapping(self.data.as_ptr(), target, self.data.len());
                if ty == TensorElementType::Bool {
                    // A bool byte other than 0 or 1 is undefined in ONNX Runtime's kernels.
                    std::slice::from_raw_parts_mut(target, self.data.len())
                        .iter_mut()
                        .for_each(|b| *b = u8::from(*b != 0));
                }
            }
        }
        Ok(value)
    }

    /// Copies an ONNX Runtime output out, if it is at most `limit` bytes;
    /// the size is checked before anything is copied. A ZipMap's sequence
    /// of maps comes out as the `[rows, classes]` tensor it was made from.
    pub(crate) fn from_ort(value: &ort::value::DynValue, limit: &mut u64) -> Result<Self, OutputError> {
        if let ort::value::ValueType::Sequence(_) = value.dtype() {
            return super::zipmap::to_tensor(value, limit);
        }
        let tensor = Self::shape_of(value).map_err(OutputError::Unsupported)?;
        let bytes = tensor.expected_bytes().ok_or_else(|| OutputError::Unsupported("output size overflows".into()))?;
        if bytes > *limit {
            return Err(OutputError::TooLarge);
        }
        *limit -= bytes;
        tensor.fill_from(value).map_err(OutputError::Unsupported)
    }

    /// An empty tensor with `value`'s type and shape.
    fn shape_of(value: &ort::value::DynValue) -> Result<Self, String> {
        let ort::value::ValueType::Tensor { ty, shape, .. } = value.dtype() else {
            return Err(format!("output is a {}, not a tensor", value.dtype()));
        };
        let ty = ElementType::carrying(*ty).ok_or_else(|| format!("element type {ty} has no wasi-nn equivalent"))?;
        let dims = shape
            .iter()
            .map(|&d| u32::try_from(d).map_err(|_| format!("dimension {d} does not fit wasi-nn")))
            .collect::<Result<Vec<u32>, String>>()?;
        Ok(Tensor { dims, ty, data: Vec::new() })
    }

    /// Copies `value`'s elements into this tensor of its shape.
    fn fill_from(mut self, value: &ort::value::DynValue) -> Result<Self, String> {
        let bytes = self.expected_bytes().ok_or("output size overflows")? as usize;
        if bytes > 0 {
            let tensor_ref = value.downcast_ref::<ort::value::DynTensorValueType>().map_err(|e| e.to_string())?;
            // SAFETY: a CPU tensor of this shape and type holds exactly
            // `bytes` contiguous bytes at its data pointer.
            self.data = unsafe { std::slice::from_raw_parts(tensor_ref.data_ptr().cast::<u8>(), bytes) }.to_vec();
        }
        Ok(self)
    }
}

/// Why an output could not be copied out.
#[derive(Debug)]
pub(crate) enum OutputError {
    /// Not a tensor wasi-nn can carry.
    Unsupported(String),
    /// More bytes than the caller may hold.
    TooLarge,
}

/// Elements of a shape, checked.
fn elements(dims: &[u32]) -> Option<u64> {
    dims.iter().try_fold(1u64, |n, &d| n.checked_mul(u64::from(d)))
}

/// Bytes of a shape of `ty`, checked.
pub(crate) fn bytes_of(dims: &[u32], ty: ElementType) -> Option<u64> {
    elements(dims)?.checked_mul(ty.size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(dims: &[u32], ty: ElementType) -> Tensor {
        Tensor { dims: dims.to_vec(), ty, data: Vec::new() }
    }

    #[test]
    fn sizes_are_checked_not_wrapped() {
        assert_eq!(tensor(&[2, 3], ElementType::F32).expected_bytes(), Some(24));
        assert_eq!(tensor(&[], ElementType::I64).expected_bytes(), Some(8), "a scalar is one element");
        assert_eq!(tensor(&[4, 0], ElementType::F64).expected_bytes(), Some(0));
        assert!(tensor(&[0, 4], ElementType::U8).is_empty());
        let huge = tensor(&[u32::MAX, u32::MAX, u32::MAX], ElementType::F32);
        assert_eq!(huge.len(), None);
        assert_eq!(huge.expected_bytes(), None);
        assert_eq!(
            tensor(&[u32::MAX, u32::MAX], ElementType::I64).expected_bytes(),
            None,
            "elements fit, bytes do not"
        );
    }

    #[test]
    fn every_type_round_trips_through_onnx_runtime() {
        if crate::nn::init().is_err() {
            panic!("ONNX Runtime library missing: run `make build`");
        }
        for ty in ElementType::ALL {
            let dims = vec![2, 3];
            let data: Vec<u8> = (0..6 * ty.size()).map(|i| i as u8).collect();
            let t = Tensor { dims, ty, data };
            let value = t.to_ort(false).unwrap().into_dyn();
            let mut limit = 1 << 20;
            let back = Tensor::from_ort(&value, &mut limit).unwrap();
            assert_eq!(back, t, "{ty:?}");
            assert_eq!(limit, (1 << 20) - t.data.len() as u64);
            let mut small = 4;
            assert!(matches!(Tensor::from_ort(&value, &mut small), Err(OutputError::TooLarge)));
        }
    }
}
